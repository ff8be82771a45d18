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

      from coursekit.cli.export import load_backbone
      backbone = load_backbone("simclr_backbone.pt")   # an nn.Module: backbone(x) -> [N, feature_dim]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from coursekit.cli import UsageError
from coursekit.engine.checkpoint import load_checkpoint
from coursekit.engine.loop import CHECKPOINT_NAME
from coursekit.methods import METHODS
from coursekit.models import YOLO_BACKBONES, build_backbone

FORMATS = ("ultralytics", "state_dict")
STATE_DICT_FORMAT = "coursekit-backbone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint-dir", type=Path, help="the folder of a coursekit pretrain run")
    source.add_argument("--pretrained", metavar="NAME",
                        help="a long run shipped with the course (coursekit.pretrained.entries(): fmnist-simclr, ...)")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="ultralytics: a YOLO .pt to fine-tune (YOLO backbones); state_dict: the backbone's tensors")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (.pt)")


def pretrained_backbone(checkpoint_dir: Path) -> tuple[nn.Module, dict]:
    """The pretrained backbone of a run's checkpoint (the method's ``pretrained_backbone``: DINO's
    teacher, the others' trained backbone) -> (backbone with its weights, run info
    ``{"backbone", "kwargs", "method", "step", "total_steps"}``)."""
    state = load_checkpoint(checkpoint_dir / CHECKPOINT_NAME)
    extra = state["settings"].get("extra", {})
    if "backbone" not in extra:
        raise UsageError(f"{checkpoint_dir}: the checkpoint does not name its backbone (made by coursekit pretrain?)")
    name, kwargs = extra["backbone"], dict(extra.get("backbone_kwargs", {}))
    backbone = build_backbone(name, **kwargs)
    # The method's state_dict holds it as "<pretrained_backbone_name>.*", e.g. "backbone.*".
    method_class = {cls.__name__: cls for cls in METHODS.values()}[state["settings"]["method"]]  # a class name
    prefix = method_class.pretrained_backbone_name + "."
    weights = {key.removeprefix(prefix): value for key, value in state["method"].items() if key.startswith(prefix)}
    backbone.load_state_dict(weights)
    info = {"backbone": name, "kwargs": kwargs, "method": state["settings"]["method"], "step": state["step"],
            "total_steps": state["total_steps"]}
    return backbone, info


def load_backbone(path: str | Path) -> nn.Module:
    """The backbone saved by ``coursekit export --format state_dict``, with its weights, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != STATE_DICT_FORMAT:
        raise ValueError(f"{path} is not a backbone written by coursekit export --format state_dict")
    backbone = build_backbone(saved["backbone"], **saved["kwargs"])
    backbone.load_state_dict(saved["state_dict"])
    return backbone.eval()


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
        torch.save({"format": STATE_DICT_FORMAT, "backbone": name, "kwargs": info["kwargs"],
                    "state_dict": backbone.state_dict(), "method": info["method"], "step": info["step"]}, args.out)
        print(f"wrote {args.out} ({len(backbone.state_dict())} tensors): "
              f"load with coursekit.cli.export.load_backbone({str(args.out)!r})")
    return 0
