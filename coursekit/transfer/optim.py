"""What every transfer loop shares: which backbone parameters train (freeze, unfreeze the last
blocks), the two learning-rate groups of fine-tuning (head and backbone), and the placement of a
model for training. Used by segmentation (lesson 10) and detection (lesson 09); both train with
``engine.supervised.train_supervised``."""
from __future__ import annotations

import torch
from torch import nn

from coursekit.engine.device import module_device, use_channels_last
from coursekit.engine.optim import create_optimizer


def freeze_frozen_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen into eval mode (in place)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _encoder(model: nn.Module) -> nn.Module:
    """The SSL encoder of a transfer model: ``model.backbone``, or ``model.backbone.body`` when the
    backbone is a feature-pyramid wrapper (torchvision's convention, used by the detector)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError("the model must have a `backbone` module")
    body = getattr(backbone, "body", None)
    return body if isinstance(body, nn.Module) else backbone


def backbone_blocks(backbone: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The backbone's blocks in forward order, and the modules that follow the last block.

    ViTs (coursekit's and DINOv2): ``backbone.blocks``, then the final ``norm``. ResNets: the residual
    blocks of ``layer1`` .. ``layer4`` (8 for ResNet-18), nothing after them.
    """
    if isinstance(getattr(backbone, "blocks", None), nn.ModuleList):
        tail = [backbone.norm] if isinstance(getattr(backbone, "norm", None), nn.Module) else []
        return list(backbone.blocks), tail
    stages = [getattr(backbone, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(stage, nn.Sequential) for stage in stages):
        return [block for stage in stages for block in stage], []
    raise TypeError(f"cannot find the blocks of a {type(backbone).__name__} (expected .blocks or .layer1-4)")


def set_backbone_trainable(model: nn.Module, mode: str = "frozen", last_n: int = 1) -> dict[str, int]:
    """Choose which backbone parameters train; the head always trains.

    Args:
        model: a model with a ``backbone`` (see :class:`SegmentationModel`; the detector's
            ``backbone.body``).
        mode: ``"frozen"`` (nothing in the backbone trains), ``"last_blocks"`` (the last ``last_n``
            blocks and what follows them, e.g. a ViT's final norm) or ``"all"``.

    After changing this, build a new optimizer with :func:`make_optimizer` (see there why) and call
    ``model.train()`` so frozen BatchNorm layers switch to eval mode.

    Returns:
        ``{"trainable": backbone parameters that train, "total": backbone parameters}`` (element counts).
    """
    backbone = _encoder(model)
    if mode not in {"frozen", "last_blocks", "all"}:
        raise ValueError(f"mode must be 'frozen', 'last_blocks' or 'all', got {mode!r}")
    backbone.requires_grad_(mode == "all")
    if mode == "last_blocks":
        blocks, tail = backbone_blocks(backbone)
        if not 1 <= last_n <= len(blocks):
            raise ValueError(f"last_n must be in [1, {len(blocks)}], got {last_n}")
        for module in blocks[-last_n:] + tail:
            module.requires_grad_(True)
    backbone_ids = {id(p) for p in backbone.parameters()}
    for param in model.parameters():  # the head trains whatever the mode
        if id(param) not in backbone_ids:
            param.requires_grad_(True)
    params = list(backbone.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


def make_optimizer(
    model: nn.Module,
    lr: float,
    backbone_lr_scale: float = 0.1,
    weight_decay: float = 1e-4,
) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

    Only parameters with ``requires_grad`` enter the optimizer, so call this again after every
    :func:`set_backbone_trainable`: an optimizer keeps the parameter list it was built with, so
    parameters unfrozen later would never be updated by the old one, and frozen ones would still sit
    in it (with weight decay and momentum state). A group with no parameters is left out.
    The groups carry ``"name"``: ``"head"`` and ``"backbone"``.
    """
    groups = param_groups(model, lr, backbone_lr_scale)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return create_optimizer(groups, "adamw", lr, weight_decay, device=module_device(model))


def param_groups(model: nn.Module, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
    """The optimizer parameter groups of :func:`make_optimizer` (the reference of the
    ``detection.param_groups`` exercise).

    Only parameters with ``requires_grad`` are listed, each once, in ``model.parameters()`` order:
    ``{"name": "head", "params": [...], "lr": lr}`` for everything outside the SSL encoder, then
    ``{"name": "backbone", "params": [...], "lr": lr * backbone_lr_scale}``; a group with no
    parameters is left out (a frozen backbone gives only the head group).
    """
    backbone_ids = {id(p) for p in _encoder(model).parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = [p for p in trainable if id(p) not in backbone_ids]
    backbone = [p for p in trainable if id(p) in backbone_ids]
    groups = [
        {"name": "head", "params": head, "lr": lr},
        {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def to_training_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Move a transfer model to ``device`` (default: where it is), channels-last for a
    convolutional backbone on CUDA. Returns the device."""
    device = torch.device(device) if device is not None else module_device(model)
    model.to(device)
    if use_channels_last(_encoder(model), device):
        model.to(memory_format=torch.channels_last)
    return device
