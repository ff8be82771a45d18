"""``coursekit pretrain --data DIR`` keeps nothing per file but a few bytes (issue 27).

The command builds its folder dataset in ``plan_run`` (``open_folder``: the scan, the header
check of every file) and ``fit`` then fingerprints it and hands it to a DataLoader. Here that very
code path runs on folders of 500 and 2,000 tiny files under ``tracemalloc`` (Python objects and
numpy arrays): the Python heap the dataset holds afterwards, and the peak while it is built and
fingerprinted, may grow by at most a few dozen bytes per file (the compact list of relative paths:
about the length of a path plus 8 bytes). A list of ``Path`` objects, as the scan used to keep
(with ``rglob``'s set of every path and a sort key per path on top while scanning), costs several
hundred bytes per file and fails both bounds. ``benchmarks/folder_memory.py`` measures the same
through the command line, with training, as peak RSS of the process tree.
"""
import argparse
import gc
import tracemalloc

import pytest
from PIL import Image

from coursekit.cli.pretrain import add_arguments, plan_run
from coursekit.profile import get_profile

SMALL, LARGE = 500, 2000
WARM_UP = 20
# Bytes per file allowed: a relative path like "part_012/sub_1/003456.png" is 25 bytes, + 8 of offset.
MAX_HELD_PER_FILE = 80
MAX_PEAK_PER_FILE = 120


def write_tiny_folder(root, count: int) -> None:
    """``count`` 4 x 4 images, alternately PNG and JPEG, 100 per folder in nested folders; the bytes
    of each format are written as they are (encoding them once), so writing takes a second or two."""
    import io

    encoded = {}
    for suffix, kind in ((".png", "PNG"), (".jpg", "JPEG")):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), (120, 30, 200)).save(buffer, format=kind)
        encoded[suffix] = buffer.getvalue()
    for i in range(count):
        folder = root / f"part_{i // 100:03d}" / f"sub_{i % 2}"
        if i % 100 < 2:
            folder.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if i % 2 else ".jpg"
        (folder / f"{i:06d}{suffix}").write_bytes(encoded[suffix])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_memory")
    for count in (WARM_UP, SMALL, LARGE):
        write_tiny_folder(root / str(count), count)
    return root


def command_args(folder) -> argparse.Namespace:
    """The arguments of ``coursekit pretrain --data FOLDER ...``, parsed by the command's own parser."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--method", "simclr", "--data", str(folder), "--image-size", "16", "--batch-size", "8",
                              "--epochs", "1", "--width", "4", "--workers", "0", "--device", "cpu",
                              "--profile", "smoke"])


def traced_bytes(folder) -> tuple[int, int, object]:
    """(bytes the plan holds afterwards, peak bytes while building and fingerprinting it, plan),
    as tracemalloc counts them, for ``plan_run`` of the command on ``folder``."""
    args, profile = command_args(folder), get_profile("smoke")
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        plan = plan_run(args, profile, world=1)
        plan.folder.fingerprint()  # what fit records in its checkpoints
        plan.folder.summary()
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before, plan


def test_the_commands_folder_dataset_holds_a_few_bytes_per_file(folders):
    traced_bytes(folders / str(WARM_UP))  # imports, caches, interned strings
    held = {}
    peak = {}
    for count in (SMALL, LARGE):
        held[count], peak[count], plan = traced_bytes(folders / str(count))
        assert len(plan.folder) == count and plan.num_images == count
        del plan
    held_per_file = (held[LARGE] - held[SMALL]) / (LARGE - SMALL)
    peak_per_file = (peak[LARGE] - peak[SMALL]) / (LARGE - SMALL)
    assert held_per_file <= MAX_HELD_PER_FILE, f"the dataset holds {held_per_file:.0f} bytes per file ({held})"
    assert peak_per_file <= MAX_PEAK_PER_FILE, f"building it peaks at {peak_per_file:.0f} bytes per file ({peak})"


def test_the_compact_paths_read_back_as_the_files(folders):
    plan = plan_run(command_args(folders / str(SMALL)), get_profile("smoke"), world=1)
    paths = plan.folder.paths
    assert paths[0] == folders / str(SMALL) / "part_000" / "sub_0" / "000000.jpg"
    assert paths[-1] == folders / str(SMALL) / "part_004" / "sub_1" / "000499.png"
    assert all(path.is_file() for path in paths[::97])
    assert len(list(paths)) == SMALL and len(plan.folder.skipped) == 0
    assert paths.nbytes < 40 * SMALL
    assert plan.folder[SMALL - 1].shape == (3, 16, 16)
