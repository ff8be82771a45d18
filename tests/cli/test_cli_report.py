"""``coursekit pretrain --report FILE``: the run and its accuracies as JSON, the random-init
accuracy measured on the very backbone the seed builds before training."""
import json

import torch

from coursekit.cli import main
from coursekit.data import load_images
from coursekit.engine.checkpoint import load_checkpoint
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.models import build_backbone
from coursekit.recipes import get_recipe

TINY = ["--dataset", "shapes", "--epochs", "1", "--num-images", "32", "--num-test", "24", "--batch-size", "8",
        "--width", "4", "--profile", "smoke", "--device", "cpu", "--seed", "5"]


def knn_of(backbone) -> float:
    """kNN on the images every --seed draws: the first 32 / 24 of the profile's (seed 0) shapes."""
    train, test = load_images("shapes", "train", n=32, seed=0), load_images("shapes", "test", n=24, seed=0)
    return knn_accuracy(extract_features(backbone, train.images), train.labels, extract_features(backbone, test.images),
                        test.labels, num_classes=train.num_classes, k=200, temperature=0.1)


def test_report_holds_the_run_and_both_accuracies(tmp_path, capsys):
    path = tmp_path / "reports" / "simclr.json"  # the folder is created
    assert main(["pretrain", "--method", "simclr", *TINY, "--report", str(path), "--checkpoint-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert {key: report[key] for key in ("method", "profile", "dataset", "seed", "steps", "protocol")} == {
        "method": "simclr", "profile": "smoke", "dataset": "shapes", "seed": 5, "steps": 4, "protocol": "knn"}
    assert report["seconds"] > 0
    assert f"on shapes test (24 images): {report['knn']['pretrained']:.2%}" in out  # the accuracy printed

    torch.manual_seed(5)  # the backbone --seed 5 builds before training
    assert report["knn"]["random_init"] == knn_of(build_backbone("resnet18", width=4))
    assert report["init_seed"] == 5 and report["data_seed"] == 0
    trained = build_backbone("resnet18", width=4)
    weights = load_checkpoint(tmp_path / "checkpoint.pt")["method"]
    trained.load_state_dict({name[len("backbone."):]: value for name, value in weights.items()
                             if name.startswith("backbone.")})
    assert report["knn"]["pretrained"] == knn_of(trained)


def test_mae_is_reported_by_its_recipe_protocol(tmp_path, capsys):
    path = tmp_path / "mae.json"
    tiny_vit = [a for a in TINY if a not in ("--width", "4")]
    assert main(["pretrain", "--method", "mae", *tiny_vit, "--report", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["protocol"] == get_recipe("mae", "smoke").protocol == "linear"
    assert set(report["knn"]) == set(report["linear"]) == {"random_init", "pretrained"}
    assert f"linear-probe accuracy on shapes test (24 images): {report['linear']['pretrained']:.2%}" in capsys.readouterr().out
    assert report["recipe"]["method_kwargs"] == get_recipe("mae", "smoke").method_kwargs
