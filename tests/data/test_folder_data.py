"""Folder datasets: scan, decoding to RGB squares, damaged files, fingerprint, DataLoader workers."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from coursekit.data import make_shapes
from coursekit.data.folder import ImageFolder, find_images, load_rgb_square, write_image_folder


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(24, image_size=32, seed=0)


@pytest.fixture()
def folder(tmp_path, shapes):
    write_image_folder(shapes.images, tmp_path / "imgs", damaged=4, per_folder=8)
    return tmp_path / "imgs"


def test_scan_finds_nested_files_of_every_format_and_skips_broken_ones(folder):
    (folder / "notes.txt").write_text("not an image")
    dataset = ImageFolder(folder, 32)
    # 24 images + 2 truncated JPEGs (they pass the header check); 2 files that are no images are skipped
    assert len(dataset) == 26
    assert {p.suffix for p in dataset.paths} == {".jpg", ".png", ".webp", ".JPG"}
    assert {p.parent.parent.name for p in dataset.paths} >= {"part_0", "part_1", "part_2"}
    assert [p.name for p in dataset.skipped] == ["broken_000.png", "broken_002.png"]
    assert dataset.summary().endswith("skipped 2 damaged file(s): damaged/broken_000.png, damaged/broken_002.png")
    relative = [p.relative_to(folder).as_posix() for p in dataset.paths]
    assert relative == sorted(relative) and relative[0] == "damaged/truncated_001.jpg"
    assert find_images(folder) == sorted(dataset.paths + dataset.skipped, key=lambda p: p.relative_to(folder).as_posix())


def test_damaged_files_are_skipped_after_ultralytics_patched_pil(folder):
    """ultralytics replaces PIL's Image.open with one that installs a HEIF plugin for unknown files."""
    pytest.importorskip("ultralytics")
    assert len(ImageFolder(folder, 32).skipped) == 2


def test_summary_names_only_the_first_five(tmp_path, shapes):
    write_image_folder(shapes.images[:2], tmp_path, damaged=14)
    summary = ImageFolder(tmp_path, 16).summary()
    assert "skipped 7 damaged file(s): damaged/broken_000.png" in summary and summary.endswith("and 2 more")


def test_items_are_uint8_rgb_squares_close_to_the_source(folder, shapes):
    dataset = ImageFolder(folder, 32)
    by_name = {p.stem: i for i, p in enumerate(dataset.paths)}
    items = {i: dataset[by_name[f"{i:06d}"]] for i in range(24)}
    by_path = {i: dataset.paths[by_name[f"{i:06d}"]] for i in range(24)}
    assert all(item.dtype == torch.uint8 and item.shape == (3, 32, 32) for item in items.values())
    # file i: format by i % 4 (jpg, png, webp, JPG), mode by i // 4 % 4 (RGB, L, RGBA, P), i % 3 == 2 stretched
    assert torch.equal(items[1], shapes.images[1])  # RGB PNG: lossless
    assert torch.equal(items[9], shapes.images[9])  # RGBA PNG of an opaque image: alpha dropped
    gray = items[21]  # grayscale PNG
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    expected_gray = (shapes.images[21].float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
    assert (gray[0].float() - expected_gray).abs().max() <= 1.0  # only the rounding of the gray conversion
    for i in (0, 3, 10, 12, 13):  # lossy JPEG, RGBA WebP, palette PNG: what PIL decodes from the file, RGB
        assert torch.equal(items[i], _decoded(by_path[i]))
    stretched = items[5]  # 48 x 32 on disk: the shorter side is already 32, the center 32 columns are kept
    assert torch.equal(stretched, _decoded(by_path[5])[:, :, 8:40])


def _decoded(path):
    """uint8 [3, H, W] of the whole file as PIL decodes it, in RGB."""
    with Image.open(path) as image:
        rgb = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


def test_shorter_side_is_resized_and_the_center_kept(tmp_path):
    stripes = torch.zeros(20, 60, 3, dtype=torch.uint8)  # H=20, W=60: red | green | blue thirds
    stripes[:, :20, 0], stripes[:, 20:40, 1], stripes[:, 40:, 2] = 255, 255, 255
    Image.fromarray(stripes.numpy()).save(tmp_path / "wide.png")
    square = load_rgb_square(tmp_path / "wide.png", 10)
    assert square.shape == (3, 10, 10)
    # the green center third, scaled to 10 x 10 (bilinear blends the outer columns with red and blue)
    assert square[1, :, 1:-1].min() == 255 and square[[0, 2], :, 1:-1].max() == 0
    assert square[0, :, 0].min() > 0 and square[2, :, -1].min() > 0 and square[0, :, 1:].max() == 0


def test_palette_with_transparency_becomes_rgb(tmp_path):
    image = Image.new("P", (8, 8), 3)
    image.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 756)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    square = load_rgb_square(tmp_path / "p.png", 4)
    assert square[:, 0, 0].tolist() == [70, 80, 90]


def test_damaged_file_found_at_load_time_gives_the_next_image_and_is_counted(folder):
    dataset = ImageFolder(folder, 32)
    truncated = [i for i, p in enumerate(dataset.paths) if p.name.startswith("truncated")]
    assert len(truncated) == 2 and truncated[1] == truncated[0] + 1  # damaged/ holds them side by side
    with pytest.warns(UserWarning, match="skipping damaged image .*truncated_001.jpg"):
        first = dataset[truncated[0]]
    assert torch.equal(first, dataset[truncated[1] + 1])  # both damaged: the one after them
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file
        assert torch.equal(dataset[truncated[0]], first)  # deterministic
    assert [p.name for p in dataset.load_failures] == ["truncated_001.jpg", "truncated_003.jpg"]


def test_fingerprint_is_stable_and_follows_the_files(folder, shapes):
    first = ImageFolder(folder, 32).fingerprint()
    assert first == ImageFolder(folder, 32).fingerprint()
    assert first["num_images"] == 26 and first["shape"] == [3, 32, 32]
    assert ImageFolder(folder, 16).fingerprint()["shape"] == [3, 16, 16]
    changed = folder / "part_0" / "sub_0" / "000000.jpg"
    os.utime(changed, ns=(0, 0))
    assert ImageFolder(folder, 32).fingerprint()["files_sha256"] != first["files_sha256"]


def test_dataloader_workers_read_every_item(folder):
    dataset = ImageFolder(folder, 32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(len(b) for b in batches) == len(dataset)
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (3, 32, 32) for b in batches)


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolder(tmp_path / "missing", 32)
    with pytest.raises(ValueError, match="no .jpg/.jpeg/.png/.webp files"):
        ImageFolder(tmp_path, 32)
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 1 image files"):
        ImageFolder(tmp_path, 32)


# ----------------------------------------------------------------------------------------------
# Training on a folder: the engine, the command line, torchrun, memory


def _simclr(seed: int = 0):
    from coursekit.methods import build_method
    from coursekit.models import build_backbone

    torch.manual_seed(seed)
    return build_method("simclr", build_backbone("resnet18", width=4), image_size=32)


class _Stop(Exception):
    pass


def test_a_folder_trains_as_its_images_in_memory_and_resumes_mid_epoch(folder, tmp_path):
    from coursekit.engine import TrainConfig, fit

    dataset = ImageFolder(folder, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the two truncated JPEGs
        in_memory = torch.stack([dataset[i] for i in range(len(dataset))])
    config = TrainConfig(epochs=2, batch_size=8, precision="fp32", checkpoint_every=1, num_workers=1)
    reference = _simclr()
    fit(reference, in_memory, config, progress=False)

    def stop_after_step_4(step):  # 3 steps per epoch: step 4 is in the middle of the second epoch
        if step == 4:
            raise _Stop

    interrupted = _simclr()
    with pytest.raises(_Stop), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(interrupted, dataset, config, tmp_path, progress=False, on_step=stop_after_step_4)
    resumed = _simclr(seed=1)  # other initial weights: everything must come from the checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = fit(resumed, dataset, config, tmp_path, progress=False)
    assert history.step[-1] == 6
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(expected, actual), name


CLI_TINY = ["--epochs", "1", "--batch-size", "8", "--width", "4", "--image-size", "32", "--profile", "smoke",
            "--device", "cpu"]


def test_pretrain_command_on_a_folder(folder, tmp_path, capsys):
    from coursekit.cli import main
    from coursekit.engine.checkpoint import load_checkpoint

    args = ["pretrain", "--method", "simclr", "--data", str(folder), *CLI_TINY, "--workers", "1",
            "--checkpoint-dir", str(tmp_path / "run")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    out = capsys.readouterr().out
    assert f"on 26 images under {folder}; skipped 2 damaged file(s): damaged/broken_000.png, damaged/broken_002.png" in out
    assert "no labels: no evaluation" in out
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["finished"] and state["step"] == 3  # 26 images // batch 8
    assert state["settings"]["data"]["fingerprint"] == ImageFolder(folder, 32).fingerprint()
    assert state["settings"]["extra"]["dataset"] == "folder"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--resume", "--eval-dataset", "shapes", "--num-test", "16"]) == 0
    assert "kNN accuracy (k=200, temperature=0.1) on shapes test (16 images):" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "shapes"], "leave out --dataset and --num-images"),
    (["--batch-size", "64"], "lower --batch-size or add images to --data"),
    (["--workers", "-1"], "--workers goes with --data and must be 0 or more"),
])
def test_pretrain_command_refuses_bad_folder_options(folder, extra, message, capsys):
    from coursekit.cli import main

    assert main(["pretrain", "--method", "simclr", "--data", str(folder), *CLI_TINY, *extra]) == 2
    assert message in capsys.readouterr().err


def test_eval_dataset_needs_a_folder_and_a_folder_needs_images(tmp_path, capsys):
    from coursekit.cli import main

    assert main(["pretrain", "--method", "simclr", "--eval-dataset", "shapes", *CLI_TINY]) == 2
    assert "--eval-dataset goes with --data" in capsys.readouterr().err
    assert main(["pretrain", "--method", "simclr", "--data", str(tmp_path), *CLI_TINY]) == 2
    assert f"coursekit: error: --data: no .jpg/.jpeg/.png/.webp files under {tmp_path}" in capsys.readouterr().err


def test_pretrain_command_on_a_folder_under_torchrun(folder, tmp_path):
    from coursekit.engine.checkpoint import load_checkpoint

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "coursekit", "pretrain", "--method", "simclr", "--data", str(folder), *CLI_TINY,
               "--batch-size", "4", "--workers", "1", "--checkpoint-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout and result.stdout.count("no labels: no evaluation") == 1
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["finished"] and state["step"] == 3  # 26 images: 13 per process, batches of 4
    assert state["settings"]["world_size"] == 2


PEAK_RSS_SCRIPT = """
import re, sys, warnings
from pathlib import Path
import torch
from torch import nn
from coursekit.data.folder import ImageFolder
from coursekit.engine import TrainConfig, fit
from coursekit.methods.base import Method

class MeanColor(Method):
    # The cheapest method there is (a linear map of the mean color): the run costs the reading of the images.
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 1)
        self.views = None  # it makes no views

    def training_step(self, images, generator):
        return self.backbone(images.float().mean(dim=(2, 3))).square().mean()

    def on_after_step(self, progress):
        pass

warnings.simplefilter("ignore")  # the truncated JPEGs
folder = ImageFolder(sys.argv[1], 96)
history = fit(MeanColor(), folder, TrainConfig(epochs=1, batch_size=50, precision="fp32"), progress=False)
# VmHWM: this process's peak RSS (getrusage's ru_maxrss would include the parent's before exec)
print(len(history.loss), int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024)
"""


@pytest.mark.slow
def test_peak_memory_of_a_folder_run_is_flat_in_the_number_of_images(tmp_path):
    """engine.fit streaming 1,000 vs 4,000 files (mixed formats and sizes, nested, 8 damaged) at
    96 px, decoded in the main process (num_workers=0, the worst case): 3,000 more images in memory
    would take 83 MB more; streamed, the peak stays within a quarter of that."""
    peaks = {}
    for count in (1000, 4000):
        write_image_folder(make_shapes(count, image_size=32, seed=count).images, tmp_path / str(count), damaged=8)
        result = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(tmp_path / str(count))], capture_output=True,
                                text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        steps, peaks[count] = result.stdout.split()
        assert int(steps) == (count + 4) // 50  # every valid file read: 4 truncated JPEGs pass the scan
    in_memory_growth = 3000 * 3 * 96 * 96 / 2**20
    assert float(peaks[4000]) - float(peaks[1000]) < in_memory_growth / 4, peaks
