"""``coursekit export``: the pretrained backbone of a ``coursekit pretrain`` run, for other tools.

    coursekit export --checkpoint-dir runs/yolo11n-dino --format ultralytics --out yolo11n_dino.pt
    yolo train model=yolo11n_dino.pt data=my_data.yaml epochs=50      # ultralytics keeps the weights
    coursekit export --checkpoint-dir runs/simclr --format state_dict --out simclr_backbone.pt
    coursekit export --pretrained fmnist-simclr --format state_dict --out simclr_long.pt  # a shipped long run

Formats:

- ``ultralytics`` (YOLO backbones): a fresh YOLO model of the run's size (``yolo11n.yaml``...) with
  the pretrained backbone's tensors (DINO: the teacher's) copied in by name, saved as ultralytics saves models; ``YOLO(F)``
  loads it and ``YOLO(F).train(...)`` / ``yolo train model=F`` fine-tune from it. The number of
  transferred tensors is printed; every backbone tensor must transfer, else nothing is written.
- ``state_dict`` (any backbone): ``{"format": "coursekit-backbone", "backbone": name, "kwargs":
  constructor kwargs, "state_dict": the backbone's tensors, "method", "step"}``. Load it with
  :func:`load_backbone`::

      from coursekit.pretrained import load_backbone   # also importable from coursekit.cli.export
      backbone = load_backbone("simclr_backbone.pt")   # an nn.Module: backbone(x) -> [N, feature_dim]

The format of both files this command reads (a run's checkpoint) and writes (the state_dict) is
``coursekit.engine.checkpoint``'s; ``coursekit.pretrained`` builds backbones from them
(``pretrained_backbone``, ``load_backbone``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from coursekit.cli import UsageError
from coursekit.engine.checkpoint import CHECKPOINT_NAME, save_backbone
from coursekit.models import YOLO_BACKBONES
from coursekit.pretrained import load_backbone, pretrained_backbone  # noqa: F401 (load_backbone: the documented import)

FORMATS = ("ultralytics", "state_dict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint-dir", type=Path, help="the folder of a coursekit pretrain run")
    source.add_argument("--pretrained", metavar="NAME",
                        help="a long run shipped with the course (coursekit.pretrained.entries(): fmnist-simclr, ...)")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="ultralytics: a YOLO .pt to fine-tune (YOLO backbones); state_dict: the backbone's tensors")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (.pt)")


def export_ultralytics(backbone: nn.Module, name: str, out: Path) -> dict:
    """A fresh ``name.yaml`` YOLO model with ``backbone``'s weights, saved to ``out`` -> transfer report."""
    from coursekit.transfer.yolo import load_yolo, save_for_finetuning, transfer_backbone

    yolo = load_yolo(f"{name}.yaml")
    report = transfer_backbone(backbone, yolo)
    if report["transferred"] != report["backbone_tensors"]:
        raise UsageError(f"only {report['transferred']} of {report['backbone_tensors']} backbone tensors fit {name}: "
                         f"mismatched {report['mismatched'][:3]}, missing {report['missing'][:3]}; nothing written")
    save_for_finetuning(yolo, out)
    return report


def shipped_backbone(name: str) -> tuple[nn.Module, dict]:
    """A long run shipped with the course (``coursekit.pretrained``) -> (backbone, run info as
    ``pretrained_backbone`` gives it)."""
    from coursekit import pretrained

    try:
        found = pretrained.entry(name)
        backbone = pretrained.load(name)
    except pretrained.PretrainedError as error:
        raise UsageError(f"--pretrained: {error}") from None
    info = {"backbone": found["backbone"], "kwargs": found["backbone_kwargs"], "method": found["method"],
            "step": found["steps"], "total_steps": found["steps"]}
    return backbone, info


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != ".pt":
        raise UsageError(f"--out must be a .pt file; got {args.out}")
    if args.pretrained is not None:
        backbone, info = shipped_backbone(args.pretrained)
    elif not (args.checkpoint_dir / CHECKPOINT_NAME).is_file():
        raise UsageError(f"--checkpoint-dir {args.checkpoint_dir} holds no {CHECKPOINT_NAME} "
                         f"(the folder given to coursekit pretrain --checkpoint-dir)")
    else:
        backbone, info = pretrained_backbone(args.checkpoint_dir)
    name = info["backbone"]
    if args.format == "ultralytics" and name not in YOLO_BACKBONES:
        raise UsageError(f"--format ultralytics needs a YOLO backbone (yolo11n ... yolo12x); this run trained {name}: "
                         f"use --format state_dict")
    progress = "finished" if info["step"] == info["total_steps"] else f"unfinished: step {info['step']} of {info['total_steps']}"
    print(f"{info['method']} run on {name} ({progress})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "ultralytics":
        report = export_ultralytics(backbone, name, args.out)
        print(f"transferred {report['transferred']}/{report['backbone_tensors']} backbone tensors into {name} "
              f"({report['model_tensors']} tensors in all; the head starts from scratch)")
        print(f"wrote {args.out}: fine-tune with  yolo train model={args.out} data=YOUR.yaml")
    else:
        save_backbone(args.out, backbone.state_dict(), info)
        print(f"wrote {args.out} ({len(backbone.state_dict())} tensors): "
              f"load with coursekit.cli.export.load_backbone({str(args.out)!r})")
    return 0
