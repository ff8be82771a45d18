"""Transfer on in-domain images: an SSL-pretrained backbone against the same architecture from scratch.

    python benchmarks/transfer.py --report benchmarks/results/transfer.json

Lessons 09 (detection) and 10 (segmentation) in one comparison, on ``scenes`` (objects in clutter,
64 px): the backbones were pretrained self-supervised on the first 10,000 training scenes (shipped
with the course: ``coursekit.pretrained``); here they are fine-tuned with the labels of the first
``--small`` training scenes (a subset of those unlabeled images, as in semi-supervised practice) and
with the labels of the first ``--all`` of them, and scored on ``--test`` test scenes (other images,
drawn from another seed). Each pair (SSL init, scratch) gets the same data, budget, recipe and seed;
seeds 0-2 by default (the seed moves the new layers' initialization, the scratch backbone's, and the
order and augmentation of the images).

- **detection**: ultralytics YOLO11n, the backbone from the ``--detection-backbone`` entry (the
  other layers, neck and head, start random in both), fine-tuned with ``YOLO(pt).train`` and scored
  by mAP50 on the test scenes (``coursekit.transfer.yolo``);
- **segmentation**: the ``--segmentation-backbone`` entry (by default the same in-domain YOLO11n
  backbone as detection) with a feature-pyramid decoder on its maps of strides 4 to 32
  (``coursekit.transfer.segmentation``, ``head="pyramid"``), everything fine-tuned from the start in
  both inits (random crops of 30-100% of the area and flips, a cosine-decayed learning rate), scored
  by mIoU over background and the six classes; ``majority_class`` is the mIoU of predicting the most
  common class of the labeled masks everywhere.

Every finished fine-tuning is kept as one JSON file in ``--work`` (default
``runs/transfer``) and reused by the next call, so the comparison can be run in parts
(``--inits scratch`` now, ``--inits ssl`` when the backbone is shipped) and resumed. The report holds
what is finished: ``{"detection": {"small": {"labels": N, "ssl": [mAP50 per seed], "scratch":
[...]}, "all": {...}}, "segmentation": {...}, "settings": {...}, "environment": {...}}``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

import common  # noqa: E402
from coursekit import pretrained  # noqa: E402
from coursekit.data import export_yolo, load_images  # noqa: E402
from coursekit.models import build_backbone  # noqa: E402

TASKS = ("detection", "segmentation")
INITS = ("ssl", "scratch")
IMAGE_SIZE = 64
# Fine-tuning budgets (the same for both inits), in epochs per regime: a few hundred steps each,
# what a 2-core CPU affords for 3 seeds x 2 inits x 2 regimes (about 4 CPU-minutes a YOLO run).
# No mosaic: at 64 px, four images tiled into one shrink the objects to a few pixels.
DETECTION = {"epochs": {"small": 40, "all": 15}, "batch": 16, "optimizer": "AdamW", "lr0": 2e-3, "mosaic": 0.0}
# Segmentation: about 1,200 steps in both regimes (about 2 CPU-minutes a run). Without random crops
# 100 masks are learned by heart (train loss under 0.1 at 300 epochs while the test mIoU stalls);
# the backbone learns at the head's rate in both inits.
SEGMENTATION = {"epochs": {"small": 300, "all": 90}, "batch": 32, "lr": 1e-3, "backbone_lr_scale": 1.0,
                "crop_scale": [0.3, 1.0], "head": "pyramid"}
# The architecture compared (a shipped backbone must be it): YOLO11n's backbone, for both tasks.
ARCHITECTURES = {"detection": ("yolo11n", {}), "segmentation": ("yolo11n", {})}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--work", type=Path, default=Path("runs/transfer"), help="one JSON file per finished run")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--small", type=int, default=100, help="labeled scenes of the few-label regime")
    parser.add_argument("--all", type=int, default=400, help="labeled scenes of the many-label regime")
    parser.add_argument("--test", type=int, default=500, help="test scenes")
    parser.add_argument("--detection-backbone", default="scenes-yolo11n-simclr", help="a coursekit.pretrained entry")
    parser.add_argument("--segmentation-backbone", default="scenes-yolo11n-simclr", help="a coursekit.pretrained entry")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every fine-tuning budget (e.g. 0.05 for a quick check of the pipeline)")
    args = parser.parse_args(argv)
    if not 2 <= args.small <= args.all:
        parser.error(f"need 2 <= --small <= --all, got --small {args.small} --all {args.all}")
    if args.test < 2:
        parser.error("--test must be at least 2")
    if "ssl" in args.inits:
        for task in args.tasks:
            name = getattr(args, f"{task}_backbone")
            try:
                found = pretrained.entry(name)
            except pretrained.PretrainedError as err:
                parser.error(str(err))
            if (found["backbone"], found["backbone_kwargs"]) != ARCHITECTURES[task]:
                parser.error(f"{name} is a {found['backbone']} {found['backbone_kwargs']}; {task} compares "
                             f"{ARCHITECTURES[task][0]} {ARCHITECTURES[task][1]}")
    return args


def epochs(table: dict, regime: str, scale: float) -> int:
    return max(1, round(table["epochs"][regime] * scale))


# ----------------------------------------------------------------------------------------------
# Detection: YOLO11n through ultralytics
# ----------------------------------------------------------------------------------------------


def detection_run(args, regime: str, init: str, seed: int, data_yaml: Path, pts: dict) -> dict:
    from coursekit.transfer.yolo import finetune

    started = time.process_time()
    metrics = finetune(pts[init], data_yaml, epochs=epochs(DETECTION, regime, args.epochs_scale), imgsz=IMAGE_SIZE,
                       batch=DETECTION["batch"], optimizer=DETECTION["optimizer"], lr0=DETECTION["lr0"],
                       mosaic=DETECTION["mosaic"], warmup_epochs=1, seed=seed, deterministic=True, device="cpu", val=False,
                       project=args.work / "yolo", name=f"{regime}-{init}-{seed}")
    return {"score": metrics["mAP50"], "mAP50-95": metrics["mAP50-95"], "cpu_seconds": time.process_time() - started}


def detection_inputs(args, pool, test) -> tuple[dict, dict]:
    """The YOLO datasets of both regimes and the two starting ``.pt`` files."""
    from coursekit.transfer.yolo import load_yolo, save_for_finetuning, transfer_backbone

    folder = args.work / "yolo"
    yamls = {regime: export_yolo(pool.subset(torch.arange(n)), folder / f"data-{regime}-{n}", val=test)
             for regime, n in (("small", args.small), ("all", args.all))}
    pts = {}
    # Both start from the same initialization of YOLO11n (seeded); the SSL one then gets the shipped backbone.
    if "scratch" in args.inits:
        torch.manual_seed(0)
        pts["scratch"] = save_for_finetuning(load_yolo("yolo11n.yaml"), folder / "yolo11n-scratch.pt")
    if "ssl" in args.inits:
        torch.manual_seed(0)
        yolo = load_yolo("yolo11n.yaml")
        moved = transfer_backbone(pretrained.load(args.detection_backbone), yolo)
        if moved["transferred"] != moved["backbone_tensors"]:
            sys.exit(f"{args.detection_backbone}: only {moved['transferred']} of {moved['backbone_tensors']} "
                     "backbone tensors transferred into yolo11n")
        pts["ssl"] = save_for_finetuning(yolo, folder / f"yolo11n-{args.detection_backbone}.pt")
    return yamls, pts


# ----------------------------------------------------------------------------------------------
# Segmentation: ViT + upsampling decoder
# ----------------------------------------------------------------------------------------------


def segmentation_encoder(args, init: str, seed: int):
    if init == "ssl":
        return pretrained.load(args.segmentation_backbone).train()
    name, kwargs = ARCHITECTURES["segmentation"]  # the same architecture, at random init
    torch.manual_seed(seed)
    return build_backbone(name, **kwargs)


def segmentation_run(args, regime: str, init: str, seed: int, train, test) -> dict:
    started = time.process_time()
    # both inits: everything learns from the start
    score = segmentation_score(segmentation_encoder(args, init, seed), "all", regime, seed, train, test, args.epochs_scale)
    return {"score": score, "cpu_seconds": time.process_time() - started}


def segmentation_score(backbone, trainable: str, regime: str, seed: int, train, test, epochs_scale: float) -> float:
    """Test mIoU of ``backbone`` + the pyramid decoder trained with the ``regime``'s budget, the
    backbone trainable as ``trainable`` says (``set_backbone_trainable``'s mode); also the frozen probe's."""
    from coursekit.transfer.optim import make_optimizer, set_backbone_trainable
    from coursekit.transfer.segmentation import SegmentationModel, mean_iou, predict_masks, train_segmentation

    num_classes = len(train.classes) + 1
    torch.manual_seed(seed)
    model = SegmentationModel(backbone, num_classes, head=SEGMENTATION["head"])
    set_backbone_trainable(model, trainable)
    optimizer = make_optimizer(model, SEGMENTATION["lr"], backbone_lr_scale=SEGMENTATION["backbone_lr_scale"])
    train_segmentation(model, train.images, train.masks, epochs=epochs(SEGMENTATION, regime, epochs_scale),
                       batch_size=SEGMENTATION["batch"], optimizer=optimizer, crop_scale=tuple(SEGMENTATION["crop_scale"]),
                       cosine=True, seed=seed, device="cpu", progress=False)
    return mean_iou(predict_masks(model, test.images), test.masks.long(), num_classes)


def majority_class_miou(train, test) -> float:
    from coursekit.transfer.segmentation import mean_iou

    labeled = train.masks[train.masks != 255].long()
    majority = int(torch.bincount(labeled).argmax())
    return mean_iou(torch.full(test.masks.shape, majority, dtype=torch.long), test.masks.long(), len(train.classes) + 1)


# ----------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------


def run_key(args, task: str, regime: str, init: str, seed: int) -> Path:
    """The file of one finished run: named by everything that decides it, the task's budget included."""
    backbone = getattr(args, f"{task}_backbone") if init == "ssl" else "scratch"
    labels = args.small if regime == "small" else args.all
    budget = hashlib.sha256(json.dumps(DETECTION if task == "detection" else SEGMENTATION,
                                       sort_keys=True).encode()).hexdigest()[:8]
    return (args.work / "results" /
            f"{task}-{labels}labels-{backbone}-seed{seed}-x{args.epochs_scale:g}-test{args.test}-{budget}.json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (args.work / "results").mkdir(parents=True, exist_ok=True)
    pool = load_images("scenes", "train", n=args.all, image_size=IMAGE_SIZE, seed=0)  # the pretraining's first images
    test = load_images("scenes", "test", n=args.test, image_size=IMAGE_SIZE, seed=0)
    regimes = {"small": pool.subset(torch.arange(args.small)), "all": pool}
    for task in args.tasks:
        if task == "detection":
            yamls, pts = detection_inputs(args, pool, test)
        for regime, train in regimes.items():
            for init in args.inits:
                for seed in args.seeds:
                    path = run_key(args, task, regime, init, seed)
                    if path.exists():
                        continue
                    print(f"{task}, {len(train)} labeled scenes, {init}, seed {seed} ...", flush=True)
                    result = (detection_run(args, regime, init, seed, yamls[regime], pts) if task == "detection"
                              else segmentation_run(args, regime, init, seed, train, test))
                    path.write_text(json.dumps(result) + "\n")
                    print(f"  {'mAP50' if task == 'detection' else 'mIoU'} {result['score']:.3f} "
                          f"({result['cpu_seconds']:.0f} CPU-s)", flush=True)
    report = {"settings": {"image_size": IMAGE_SIZE, "test": args.test, "seeds": args.seeds,
                           "epochs_scale": args.epochs_scale, "detection": {**DETECTION, "backbone": args.detection_backbone},
                           "segmentation": {**SEGMENTATION, "backbone": args.segmentation_backbone}},
              "environment": common.environment(torch.device("cpu"))}
    for task in TASKS:
        rows = {}
        for regime, train in regimes.items():
            row = {"labels": len(train)}
            for init in INITS:
                found = [run_key(args, task, regime, init, seed) for seed in args.seeds]
                row[init] = [round(json.loads(p.read_text())["score"], 4) for p in found if p.exists()]
            if task == "segmentation":
                row["majority_class"] = round(majority_class_miou(train, test), 4)
            rows[regime] = row
        report[task] = rows
        print(f"\n{task} ({'mAP50' if task == 'detection' else 'mIoU'} on {args.test} test scenes, per seed):")
        for regime, row in rows.items():
            extra = f", majority class {row['majority_class']:.3f}" if "majority_class" in row else ""
            print(f"  {row['labels']:>5} labels: ssl {row['ssl']}, scratch {row['scratch']}{extra}")
    if args.report:
        common.write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
