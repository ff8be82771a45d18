"""Ship a finished ``coursekit pretrain`` run with the course: weights, manifest entry, metrics.

    python scripts/ship_pretrained.py --name fmnist-simclr --checkpoint-dir runs/long/fmnist-simclr \\
        --report runs/long/fmnist-simclr.json --time-log runs/long/fmnist-simclr.log \\
        --command "$(sed -n 1p runs/long/commands.txt)" --commit "$(cat runs/long/COMMIT)"

What it does, in order:

1. the run's pretrained backbone (DINO: the teacher) -> ``coursekit/pretrained/<name>.safetensors``
   (fp16, data only) and its SHA-256;
2. its manifest entry (``coursekit/pretrained/manifest.json``): the run's method, backbone, data,
   epochs, seed, the exact command, the commit that trained it, device, CPU seconds (from the
   ``/usr/bin/time -v`` log the command ran under), date;
3. the metrics, measured on the shipped file as ``coursekit.pretrained.load`` returns it, and on the
   same backbone at its seeded random initialization (``--seed`` of the run builds it):
   - ``knn_check``: weighted kNN (k=200, t=0.1) with the first 10,000 training images of the
     dataset (shuffled with seed 0) as the memory bank, on the first 2,000 test images (shuffled
     with seed 0): small enough that ``tests/test_pretrained.py`` recomputes it from the shipped
     file in CI;
   - ``knn_all_labels``: the same kNN with all 60,000 labeled training images, on all 10,000 test images;
   - ``linear_<n>_per_class`` and ``knn_<n>_per_class`` (n = 10, 100): the protocol trained on n
     labeled images per class (5 draws), on all test images (``coursekit.evaluate.few_labels``);
   and once for the dataset, the same few-label and kNN scores of the raw pixels (``baselines``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

import torch

from coursekit import pretrained
from coursekit.data import load_images
from coursekit.engine import derived_seed
from coursekit.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from coursekit.engine.collapse import collapse_signs
from coursekit.methods import build_method
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.evaluate.features import pixel_features
from coursekit.evaluate.few_labels import few_label_accuracies, mean_and_std
from coursekit.models import build_backbone

PER_CLASS = (10, 100)
SUBSETS = 5
CHECK_BANK, CHECK_TEST = 10_000, 2_000


def evaluation_sets(dataset: str, image_size: int):
    """(all training images, all test images) of ``dataset`` at ``image_size``, shuffled with seed 0:
    the check bank and check test images are their first CHECK_BANK and CHECK_TEST."""
    return (load_images(dataset, "train", image_size=image_size, seed=0),
            load_images(dataset, "test", image_size=image_size, seed=0))


def scores(train_features, train_labels, test_features, test_labels) -> dict:
    """kNN with all labels, and kNN and the linear probe with 10 and 100 labels per class (mean, std, per draw)."""
    result = {"knn_all_labels": round(knn_accuracy(train_features, train_labels, test_features, test_labels), 4)}
    for per_class in PER_CLASS:
        for protocol in ("knn", "linear"):
            draws = few_label_accuracies(train_features, train_labels, test_features, test_labels, per_class,
                                         protocol, subsets=SUBSETS)
            mean, std = mean_and_std(draws)
            result[f"{protocol}_{per_class}_per_class"] = {"mean": round(mean, 4), "std": round(std, 4),
                                                           "draws": [round(d, 4) for d in draws]}
    return result


def backbone_metrics(backbone, train, test) -> dict:
    train_features, test_features = extract_features(backbone, train.images), extract_features(backbone, test.images)
    result = scores(train_features, train.labels, test_features, test.labels)
    result["knn_check"] = knn_accuracy(train_features[:CHECK_BANK], train.labels[:CHECK_BANK],
                                       test_features[:CHECK_TEST], test.labels[:CHECK_TEST])
    return result


def final_collapse_signs(checkpoint_dir: Path, report: dict, image_size: int, batch: int = 256) -> list[str]:
    """The training loop's collapse check (``coursekit.engine.collapse``), measured by this code on the
    run's final weights: the statistics of one training step (no update) on the first ``batch``
    training images of its dataset. The loop's own verdict stays in the report; this one decides, so
    that a run trained before a statistic was corrected (MAE's, once read on its CLS token, which
    MAE's loss never trains) is judged by the corrected one."""
    state = load_checkpoint(checkpoint_dir / CHECKPOINT_NAME)
    extra = state["settings"]["extra"]
    backbone = build_backbone(extra["backbone"], **extra.get("backbone_kwargs", {}))
    method = build_method(report["method"], backbone, image_size=image_size, **report.get("method_options", {}))
    method.load_state_dict(state["method"])
    images = load_images(report["dataset"], "train", n=batch, image_size=image_size, seed=report["seed"]).images
    with torch.no_grad():
        method.training_step(images, torch.Generator().manual_seed(0))
    metrics = {name: float(value) for name, value in method.step_metrics.items()}
    print(f"final-weights collapse statistics: {metrics}")
    return collapse_signs(metrics, method.embedding_dim, method.teacher_outputs)


def init_seed(report: dict) -> int:
    """The torch seed the run's backbone was built under (``torch.manual_seed``): the report's
    ``init_seed``; a report without one comes from the command before it seeded as the lessons do,
    which built the backbone under ``derived_seed(seed, "init")``."""
    return report.get("init_seed", derived_seed(report["seed"], "init"))


def cpu_seconds(time_log: Path) -> float:
    """User + system seconds from a ``/usr/bin/time -v`` log."""
    text = time_log.read_text(errors="replace")
    found = [float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", text).group(1)) for kind in ("User", "System")]
    return round(sum(found), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="the run's --report JSON")
    parser.add_argument("--time-log", type=Path, required=True, help="the run's /usr/bin/time -v output")
    parser.add_argument("--command", required=True, help="the exact command that made the run")
    parser.add_argument("--commit", required=True, help="the git commit of the code that trained it")
    parser.add_argument("--device", default="2-core x86_64 CPU, one torch thread")
    args = parser.parse_args(argv)

    report = json.loads(args.report.read_text())
    backbone, info = pretrained.pretrained_backbone(args.checkpoint_dir)
    if info["step"] != info["total_steps"]:
        sys.exit(f"{args.name}: the run is unfinished (step {info['step']} of {info['total_steps']}): not shipped")
    image_size = report.get("image_size") or int(re.search(r"--image-size (\d+)", args.command).group(1))
    signs = final_collapse_signs(args.checkpoint_dir, report, image_size)
    if signs:
        sys.exit(f"{args.name}: the run's final weights are collapsed ({signs}): not shipped")
    if report.get("verdict", "ok") != "ok":
        print(f"{args.name}: the training loop reported a collapse ({report['collapse']}), which the current check "
              "on the final weights does not find (see final_collapse_signs)")
    file = f"{args.name}.safetensors"
    sha256 = pretrained.save_weights(backbone, pretrained.FOLDER / file)
    entry = {"name": args.name, "method": report["method"], "backbone": info["backbone"],
             "backbone_kwargs": info["kwargs"], "dataset": report["dataset"],
             "images": report["num_images"], "image_size": image_size,
             "epochs": report["config"]["epochs"], "seed": report["seed"], "steps": report["steps"],
             "command": " ".join(args.command.split()), "commit": args.commit, "device": args.device,
             "cpu_seconds": cpu_seconds(args.time_log), "wall_seconds": report["seconds"],
             "date": datetime.date.today().isoformat(), "file": file, "sha256": sha256,
             "init_seed": init_seed(report), "metrics": {}}
    entry["verdict"] = "ok"  # final_collapse_signs found no sign of collapse on the final weights
    manifest = pretrained.read_manifest()
    manifest["entries"] = [e for e in manifest["entries"] if e["name"] != args.name] + [entry]
    pretrained.MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")

    train, test = evaluation_sets(report["dataset"], image_size)
    torch.manual_seed(entry["init_seed"])  # the initialization the run started from
    random_init = build_backbone(info["backbone"], **info["kwargs"]).eval()
    entry["metrics"] = {"pretrained": backbone_metrics(pretrained.load(args.name), train, test),
                        "random_init": backbone_metrics(random_init, train, test)}
    key = f"{report['dataset']}-{image_size}px"
    baseline = None
    if key not in pretrained.read_manifest().get("baselines", {}):
        baseline = {"raw_pixels": scores(pixel_features(train.images), train.labels,
                                         pixel_features(test.images), test.labels)}
    manifest = pretrained.read_manifest()  # again: another run may have been shipped meanwhile
    manifest["entries"] = [e for e in manifest["entries"] if e["name"] != args.name] + [entry]
    if baseline is not None:
        manifest.setdefault("baselines", {})[key] = baseline
    pretrained.MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(entry["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
