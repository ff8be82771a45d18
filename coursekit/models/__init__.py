"""Backbones and heads.

Every backbone has `feature_dim`, `forward(x) -> [N, feature_dim]` and
`forward_features(x, return_attention=False) -> {"global", "patch", "grid"[, "attention"]}`
(see CONTRIBUTING.md). `build_backbone(name, **kwargs)` builds one by name; YOLO11/YOLO12
backbones (`yolo.py`) need ultralytics, imported only when one is built.
"""
from functools import partial

import torch.nn as nn

from coursekit.models.heads import DINOHead, PredictionHead, ProjectionHead
from coursekit.models.resnet import ResNet, resnet18
from coursekit.models.vit import VisionTransformer, vit_small, vit_tiny

__all__ = [
    "BACKBONES", "YOLO_BACKBONES", "build_backbone", "ResNet", "resnet18", "VisionTransformer", "vit_tiny",
    "vit_small", "ProjectionHead", "PredictionHead", "DINOHead",
]


def _yolo(name: str) -> nn.Module:
    from coursekit.models.yolo import build_yolo_backbone  # ultralytics is an optional extra

    return build_yolo_backbone(name)


YOLO_BACKBONES = tuple(f"yolo{version}{size}" for version in ("11", "12") for size in "nsmlx")
BACKBONES = {"resnet18": resnet18, "vit_tiny": vit_tiny, "vit_small": vit_small,
             **{name: partial(_yolo, name) for name in YOLO_BACKBONES}}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by name; kwargs go to its constructor.

    "resnet18": width (64; 8 for smoke), in_chans.
    "vit_tiny", "vit_small": img_size, patch_size, and overrides (depth, embed_dim, num_heads).
    "yolo11n" ... "yolo12x": no kwargs; the backbone cut from the ultralytics yaml, random init.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)
