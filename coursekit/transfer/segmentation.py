"""Semantic segmentation on top of a self-supervised backbone (lesson 10).

The data flow: a backbone's ``forward_features`` gives patch tokens ``[N, L, D]`` and their grid
``(h, w)``; :func:`tokens_to_feature_map` turns them into a feature map ``[N, D, h, w]``; a head
(:class:`LinearSegHead` or :class:`UpsamplingDecoder`) turns the map into class logits, which are
upsampled to the input resolution. :func:`mean_iou` scores the predicted masks.

Fine-tuning follows the usual two phases: train the head on a frozen backbone, then unfreeze the
last blocks with a smaller learning rate (:func:`set_backbone_trainable`, :func:`make_optimizer`).
These two helpers are shared with :mod:`coursekit.transfer.detection`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "freeze_frozen_batchnorm",
    "mean_iou",
    "tokens_to_feature_map",
    "LinearSegHead",
    "UpsamplingDecoder",
    "SegmentationModel",
    "backbone_blocks",
    "set_backbone_trainable",
    "make_optimizer",
    "param_groups",
    "train_segmentation",
    "predict_masks",
]


# ----------------------------------------------------------------------------------------------
# Metric and token reshaping (also the graders' references)
# ----------------------------------------------------------------------------------------------


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> float:
    """Mean intersection-over-union of predicted masks, as DESIGN.md defines it.

    For every class ``c`` the intersection and the union are summed over *all* pixels of the set
    (not averaged per image): ``IoU_c = |pred == c & target == c| / |pred == c | target == c|``.
    Pixels whose target is ``ignore_index`` count for nothing, whatever the prediction there.
    The mean runs over the classes that appear (in the counted pixels) in the target or in the
    prediction; a class absent from both is left out rather than counted as 0 or 1.

    Args:
        pred: ``[N, H, W]`` integer class indices in ``[0, num_classes)``.
        target: ``[N, H, W]`` integer class indices in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes (background included, if it is a class).
        ignore_index: target value of pixels to leave out.

    Returns:
        The mean IoU as a Python float; ``nan`` when every pixel is ignored.
    """
    _check_masks(pred, target, num_classes, ignore_index)
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()  # [P], [P]
    # Confusion matrix [num_classes, num_classes]: rows = target, columns = prediction.
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes).double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    if not present.any():
        return float("nan")
    return (intersection[present] / union[present]).mean().item()


def _check_masks(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise a clear error for masks :func:`mean_iou` cannot score."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise TypeError("pred and target must be torch tensors")
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred and target must both be [N, H, W]; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError("pred and target must hold integer class indices (take logits.argmax(1))")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    keep = target != ignore_index
    bad_target = keep & ((target < 0) | (target >= num_classes))
    if bad_target.any():
        raise ValueError(
            f"target holds values outside [0, {num_classes}) that are not ignore_index={ignore_index}"
        )
    bad_pred = keep & ((pred < 0) | (pred >= num_classes))
    if bad_pred.any():
        raise ValueError(f"pred holds values outside [0, {num_classes}) at counted pixels")


def tokens_to_feature_map(patch_tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Reshape patch tokens into a feature map, the inverse of flattening a map row-major.

    Token ``i`` belongs to row ``i // w`` and column ``i % w`` of the grid, as ViT patch embedding
    (``conv -> flatten(2) -> transpose(1, 2)``) and ResNet maps flattened row-major produce them.

    Args:
        patch_tokens: ``[N, L, D]`` tokens without a CLS token, ``L == h * w``.
        grid: ``(h, w)``, the patch grid.

    Returns:
        ``[N, D, h, w]`` (contiguous).
    """
    if patch_tokens.dim() != 3:
        raise ValueError(f"patch_tokens must be [N, L, D], got shape {tuple(patch_tokens.shape)}")
    h, w = (int(v) for v in grid)
    n, length, dim = patch_tokens.shape
    if length != h * w:
        hint = " (drop the CLS token first: tokens[:, 1:])" if length == h * w + 1 else ""
        raise ValueError(f"{length} tokens do not fill a {h}x{w} grid{hint}")
    # [N, L, D] -> [N, D, L] -> [N, D, h, w]
    return patch_tokens.transpose(1, 2).reshape(n, dim, h, w).contiguous()


# ----------------------------------------------------------------------------------------------
# Heads and the segmentation model
# ----------------------------------------------------------------------------------------------


class LinearSegHead(nn.Module):
    """BatchNorm + 1x1 convolution: a linear classifier per patch, as in DINOv2's linear evaluation.

    ``[N, D, h, w]`` -> logits ``[N, num_classes, h, w]`` (the model upsamples them).
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_dim)
        self.classifier = nn.Conv2d(in_dim, num_classes, kernel_size=1)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.classifier(self.norm(fmap))


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UpsamplingDecoder(nn.Module):
    """A small convolutional decoder: project, then ``num_upsamples`` times (x2 bilinear, 3x3 conv).

    ``[N, D, h, w]`` -> logits ``[N, num_classes, h * 2**num_upsamples, w * 2**num_upsamples]``.
    Unlike the linear head it can learn to sharpen boundaries between patches.
    """

    def __init__(self, in_dim: int, num_classes: int, channels: int = 64, num_upsamples: int = 2):
        super().__init__()
        self.project = _conv_bn_relu(in_dim, channels)
        self.stages = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in range(num_upsamples))
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, fmap: Tensor) -> Tensor:
        x = self.project(fmap)  # [N, C, h, w]
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.classifier(x)  # [N, K, h * 2**s, w * 2**s]


class SegmentationModel(nn.Module):
    """Backbone patch features -> feature map -> head -> logits at the input resolution.

    Args:
        backbone: a coursekit backbone (``forward_features`` with ``"patch"`` and ``"grid"``).
        num_classes: classes of the masks (background included).
        head: ``"linear"`` (:class:`LinearSegHead`) or ``"decoder"`` (:class:`UpsamplingDecoder`).

    BatchNorm layers whose parameters are all frozen stay in eval mode under ``model.train()``,
    so a frozen backbone is truly frozen (its running statistics do not drift either).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "linear", **head_kwargs):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        heads = {"linear": LinearSegHead, "decoder": UpsamplingDecoder}
        if head not in heads:
            raise ValueError(f"head must be one of {sorted(heads)}, got {head!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = heads[head](backbone.feature_dim, num_classes, **head_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, 3, H, W]`` normalized float -> logits ``[N, num_classes, H, W]``."""
        features = self.backbone.forward_features(x)
        fmap = tokens_to_feature_map(features["patch"], features["grid"])  # [N, D, h, w]
        logits = self.head(fmap)  # [N, K, h', w']
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        freeze_frozen_batchnorm(self)
        return self


def freeze_frozen_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen into eval mode (in place)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


# ----------------------------------------------------------------------------------------------
# Freezing, unfreezing and parameter groups (shared with detection)
# ----------------------------------------------------------------------------------------------


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
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


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


# ----------------------------------------------------------------------------------------------
# Training and prediction
# ----------------------------------------------------------------------------------------------


def _prepare(images: Tensor, mean, std) -> Tensor:
    """uint8 or [0, 1] float ``[N, 3, H, W]`` -> normalized float32."""
    from coursekit.augment import normalize, to_float

    return normalize(to_float(images), mean, std)


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def train_segmentation(
    model: SegmentationModel,
    images: Tensor,
    masks: Tensor,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    backbone_lr_scale: float = 0.1,
    ignore_index: int = 255,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    mean=None,
    std=None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train a segmentation model with per-pixel cross-entropy (``ignore_index`` pixels count for nothing).

    The backbone trains or not as :func:`set_backbone_trainable` left it; the optimizer is built by
    :func:`make_optimizer` unless one is given. Images and masks are moved to the device once; each
    batch is flipped horizontally at random (image and mask together), drawn from a generator
    seeded by ``(seed, epoch)``.

    Args:
        images: ``[N, 3, H, W]`` uint8 (or float in [0, 1]); normalized with ``mean``/``std``
            (ImageNet's by default, as coursekit's SSL views).
        masks: ``[N, H, W]`` integer class per pixel, or ``ignore_index``.

    Returns:
        ``{"loss": [mean loss of every epoch]}``.
    """
    from tqdm.auto import tqdm

    _check_pairs(images, masks)
    mean, std = _stats(mean, std)
    device = _device_of(model, device)
    model.to(device)
    images, masks = images.to(device), masks.to(device).long()
    optimizer = optimizer or make_optimizer(model, lr, backbone_lr_scale)
    history: dict[str, list[float]] = {"loss": []}
    for epoch in tqdm(range(epochs), desc="segmentation", disable=not progress):
        model.train()
        generator = epoch_generator(seed, epoch)
        order = torch.randperm(len(images), generator=generator).to(device)
        losses = []
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            x, y = _random_flip(_prepare(images[idx], mean, std), masks[idx], generator)
            losses.append(optimizer_step(optimizer, F.cross_entropy(model(x), y, ignore_index=ignore_index)))
        history["loss"].append(sum(losses) / len(losses))
    return history


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's shuffle (and random flips): fixed by ``seed`` and ``epoch``."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> float:
    """One gradient step on ``loss``; returns its value."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _check_pairs(images: Tensor, masks: Tensor) -> None:
    if images.dim() != 4 or masks.dim() != 3:
        raise ValueError(f"images must be [N, 3, H, W] and masks [N, H, W]; got {tuple(images.shape)}, {tuple(masks.shape)}")
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match")
    if masks.is_floating_point():
        raise TypeError("masks must hold integer class indices")


def _stats(mean, std):
    from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD

    return (IMAGENET_MEAN if mean is None else mean), (IMAGENET_STD if std is None else std)


def _random_flip(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Flip each (image, mask) pair horizontally with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)  # [B]
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    return x, y


@torch.no_grad()
def predict_masks(
    model: SegmentationModel,
    images: Tensor,
    batch_size: int = 64,
    mean=None,
    std=None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Predicted class per pixel: ``[N, 3, H, W]`` uint8 -> ``[N, H, W]`` long (on the CPU)."""
    mean, std = _stats(mean, std)
    device = _device_of(model, device)
    was_training = model.training
    model.to(device).eval()
    preds = [
        model(_prepare(images[i:i + batch_size].to(device), mean, std)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(preds)
