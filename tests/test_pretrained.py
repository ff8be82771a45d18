"""The long runs shipped with the course: each loads from data-only files, matches its manifest,
reproduces its recorded kNN accuracy, and exports for other tools."""
import json

import pytest
import torch

from coursekit import pretrained
from coursekit.cli import main
from coursekit.cli.export import load_backbone
from coursekit.data import load_images
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.models import build_backbone

ENTRIES = pretrained.entries()
NAMES = [entry["name"] for entry in ENTRIES]
SIZE_LIMIT = 40 * 2**20  # all shipped files together, bytes


def test_the_manifest_describes_every_shipped_file_and_nothing_else():
    assert ENTRIES, "coursekit/pretrained/manifest.json ships no run"
    files = {path.name for path in pretrained.FOLDER.iterdir() if path.suffix == ".safetensors"}
    assert files == {entry["file"] for entry in ENTRIES}
    for entry in ENTRIES:
        assert set(pretrained.ENTRY_FIELDS) <= set(entry), f"{entry['name']} lacks {set(pretrained.ENTRY_FIELDS) - set(entry)}"
        assert entry["command"].split()[-1] != "" and "coursekit pretrain" in entry["command"]
        assert f"--method {entry['method']}" in entry["command"] and f"--seed {entry['seed']}" in entry["command"]
        assert len(entry["commit"]) == 40 and entry["cpu_seconds"] > 0
    total = sum(path.stat().st_size for path in pretrained.FOLDER.iterdir() if path.is_file())
    assert total <= SIZE_LIMIT, f"the shipped runs take {total / 2**20:.1f} MiB, over 40 MiB"


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_file_is_data_only(name):
    """safetensors: an 8-byte little-endian header length, a JSON header, raw tensor bytes: nothing to unpickle."""
    raw = (pretrained.FOLDER / pretrained.entry(name)["file"]).read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_length])
    assert {value["dtype"] for key, value in header.items() if key != "__metadata__"} <= {"F16", "I64"}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_shipped_run_reproduces_its_recorded_knn(name):
    entry = pretrained.entry(name)
    backbone = pretrained.load(name)
    assert not backbone.training
    size = entry["image_size"]
    # the check protocol of the manifest, written out here: the first 10,000 training and 2,000 test
    # images (shuffled with seed 0), weighted kNN with k=200 and temperature 0.1
    bank = load_images(entry["dataset"], "train", n=10_000, image_size=size, seed=0)
    test = load_images(entry["dataset"], "test", n=2_000, image_size=size, seed=0)

    def knn_check(model):
        return knn_accuracy(extract_features(model, bank.images), bank.labels,
                            extract_features(model, test.images), test.labels, k=200, temperature=0.1)

    assert knn_check(backbone) == pytest.approx(entry["metrics"]["pretrained"]["knn_check"], abs=2 / 2_000)
    # init_seed rebuilds the random initialization the run started from, which the entry scores too
    torch.manual_seed(entry["init_seed"])
    random_init = build_backbone(entry["backbone"], **entry["backbone_kwargs"]).eval()
    assert knn_check(random_init) == pytest.approx(entry["metrics"]["random_init"]["knn_check"], abs=2 / 2_000)


@pytest.fixture
def private_shelf(tmp_path, monkeypatch):
    """An empty folder of shipped runs, with one tiny ResNet shipped in it as "tiny"."""
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", width=4).eval()
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # not the seeded init: the file must carry them
    sha256 = pretrained.save_weights(backbone, tmp_path / "tiny.safetensors")
    entry = {"name": "tiny", "method": "simclr", "backbone": "resnet18", "backbone_kwargs": {"width": 4},
             "file": "tiny.safetensors", "sha256": sha256, "steps": 7}
    (tmp_path / "manifest.json").write_text(json.dumps({"entries": [entry], "baselines": {}}))
    return backbone


def test_load_gives_the_shipped_weights_in_fp16_precision(private_shelf):
    loaded = pretrained.load("tiny")
    for key, value in private_shelf.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key], value.half().to(value.dtype)), key
    images = torch.rand(4, 3, 32, 32)
    assert torch.allclose(loaded(images), private_shelf(images), atol=1e-2)


def test_a_damaged_or_unknown_file_is_refused(private_shelf, tmp_path):
    with pytest.raises(pretrained.PretrainedError, match="no shipped run called 'nope'; shipped: tiny"):
        pretrained.load("nope")
    path = tmp_path / "tiny.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(pretrained.PretrainedError, match="does not match the SHA-256"):
        pretrained.load("tiny")
    path.unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        pretrained.load("tiny")


def test_export_writes_a_shipped_run_for_other_tools(private_shelf, tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    assert main(["export", "--pretrained", "tiny", "--format", "state_dict", "--out", str(out)]) == 0
    exported = load_backbone(out)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(exported(images), pretrained.load("tiny")(images))
    assert main(["export", "--pretrained", "nope", "--format", "state_dict", "--out", str(out)]) == 2
    assert "no shipped run called 'nope'" in capsys.readouterr().err


def test_the_package_ships_its_runs(tmp_path):
    """A wheel carries the manifest and the weight files (so that pip and Colab installs bring them)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    import zipfile

    names = zipfile.ZipFile(next(tmp_path.glob("coursekit-*.whl"))).namelist()
    assert "coursekit/pretrained/manifest.json" in names
    assert {f"coursekit/pretrained/{entry['file']}" for entry in ENTRIES} <= set(names)
