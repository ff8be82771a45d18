"""What a frozen YOLO11n backbone already knows about scenes: a pyramid decoder trained on top of it.

    python benchmarks/frozen_probe.py scenes-yolo11n-simclr runs/explore/scenes-yolo11n-moco random

Lesson 10's "frozen SSL" row for any backbone: a shipped run (a ``coursekit.pretrained`` name), the
checkpoint folder of a ``coursekit pretrain --backbone yolo11n`` run, or ``random`` (the random-init
baseline: a decoder that finds nothing predicts background everywhere). The decoder
(``SegmentationModel(head="pyramid")``) trains on the first ``--masks`` training scenes with
``benchmarks/transfer.py``'s segmentation budget for that regime (epochs, batch, learning rate, crops,
cosine) while the backbone stays frozen, and is scored by mIoU on ``--test`` test scenes. A
pretraining worth fine-tuning should beat ``random`` here by a clear margin: screen candidates with it
before the full comparison of ``transfer.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

import common  # noqa: E402
from transfer import IMAGE_SIZE, SEGMENTATION, segmentation_score  # noqa: E402
from coursekit import pretrained  # noqa: E402
from coursekit.cli import UsageError  # noqa: E402
from coursekit.data import load_images  # noqa: E402
from coursekit.engine import CheckpointError  # noqa: E402
from coursekit.models import build_backbone  # noqa: E402

RANDOM = "random"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+",
                        help=f"shipped run names, checkpoint folders of YOLO11n pretrain runs, or {RANDOM!r}")
    parser.add_argument("--masks", type=int, default=100, help="labeled training scenes (default 100)")
    parser.add_argument("--test", type=int, default=500, help="test scenes (default 500)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the decoder's epochs")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.masks < 2 or args.test < 2:
        parser.error("--masks and --test must be at least 2")
    for name in args.backbones:  # every backbone checked before any training
        try:
            load_backbone(name, seed=0)
        except (ValueError, CheckpointError, UsageError) as error:  # PretrainedError is a ValueError
            parser.error(f"{name}: {error}")
    return args


def load_backbone(name: str, seed: int):
    """The YOLO11n backbone ``name`` stands for (random init seeded by ``seed``)."""
    if name == RANDOM:
        torch.manual_seed(seed)
        backbone = build_backbone("yolo11n")
    elif Path(name).is_dir():
        backbone, info = pretrained.pretrained_backbone(Path(name))
        if info["backbone"] != "yolo11n":
            raise ValueError(f"a {info['backbone']} run; this probe reads YOLO11n backbones")
    else:
        entry = pretrained.entry(name)
        if entry["backbone"] != "yolo11n":
            raise ValueError(f"a {entry['backbone']} run; this probe reads YOLO11n backbones")
        backbone = pretrained.load(name)
    return backbone.train()


def probe(name: str, seed: int, train, test, epochs_scale: float) -> dict:
    started = time.process_time()
    regime = "small" if len(train) <= 100 else "all"  # transfer.py's budget for about that many masks
    score = segmentation_score(load_backbone(name, seed), "frozen", regime, seed, train, test, epochs_scale)
    return {"miou": round(score, 4), "cpu_seconds": round(time.process_time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train = load_images("scenes", "train", n=args.masks, image_size=IMAGE_SIZE, seed=0)
    test = load_images("scenes", "test", n=args.test, image_size=IMAGE_SIZE, seed=0)
    rows = {}
    for name in args.backbones:
        rows[name] = [probe(name, seed, train, test, args.epochs_scale) for seed in args.seeds]
        scores = ", ".join(f"{run['miou']:.3f}" for run in rows[name])
        print(f"{name}: frozen backbone + pyramid decoder, mIoU per seed {scores}", flush=True)
    if args.report:
        report = {"settings": {"masks": args.masks, "test": args.test, "seeds": args.seeds,
                               "epochs_scale": args.epochs_scale, "segmentation": SEGMENTATION},
                  "probes": rows, "environment": common.environment(torch.device("cpu"))}
        common.write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
