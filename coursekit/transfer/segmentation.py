"""Semantic segmentation on top of a self-supervised backbone (lesson 10).

The data flow: a backbone's ``forward_features`` gives patch tokens ``[N, L, D]`` and their grid
``(h, w)``; :func:`tokens_to_feature_map` turns them into a feature map ``[N, D, h, w]``; a head
(:class:`LinearSegHead` or :class:`UpsamplingDecoder`) turns the map into class logits, which are
upsampled to the input resolution. :func:`mean_iou` scores the predicted masks.

Fine-tuning follows the usual two phases: train the head on a frozen backbone, then unfreeze the
last blocks with a smaller learning rate (``coursekit.transfer.optim``: ``set_backbone_trainable``,
``make_optimizer``, shared with :mod:`coursekit.transfer.detection`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.engine.device import module_device
from coursekit.engine.seeding import step_generator
from coursekit.engine.supervised import epoch_means, train_supervised
from coursekit.evaluate.patches import tokens_to_feature_map
from coursekit.transfer.optim import freeze_frozen_batchnorm, make_optimizer, to_training_device

__all__ = [
    "mean_iou",
    "LinearSegHead",
    "UpsamplingDecoder",
    "SegmentationModel",
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


# ----------------------------------------------------------------------------------------------
# Training and prediction
# ----------------------------------------------------------------------------------------------


def _prepare(images: Tensor, mean, std) -> Tensor:
    """uint8 or [0, 1] float ``[N, 3, H, W]`` -> normalized float32."""
    from coursekit.augment import normalize, to_float

    return normalize(to_float(images), mean, std)


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
    precision: str = "auto",
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train a segmentation model with per-pixel cross-entropy (``ignore_index`` pixels count for nothing).

    The backbone trains or not as ``set_backbone_trainable`` left it; the optimizer is built by
    ``make_optimizer`` unless one is given. Images and masks are moved to the device once; batches
    come in an order seeded by ``(seed, epoch)``, each flipped horizontally at random (image and
    mask together) by a generator seeded by ``(seed, step)``; steps through
    ``engine.OptimizerStep`` (mixed precision on CUDA with ``precision="auto"``).

    Args:
        images: ``[N, 3, H, W]`` uint8 (or float in [0, 1]); normalized with ``mean``/``std``
            (ImageNet's by default, as coursekit's SSL views).
        masks: ``[N, H, W]`` integer class per pixel, or ``ignore_index``.

    Returns:
        ``{"loss": [mean loss of every epoch]}``.
    """
    _check_pairs(images, masks)
    mean, std = _stats(mean, std)
    device = to_training_device(model, device)
    images, masks = images.to(device), masks.to(device).long()
    optimizer = optimizer or make_optimizer(model, lr, backbone_lr_scale)

    def batch_loss(step: int, indices: Tensor) -> Tensor:
        x, y = _random_flip(_prepare(images[indices], mean, std), masks[indices], step_generator(seed, step, device))
        return F.cross_entropy(model(x).float(), y, ignore_index=ignore_index)

    losses = train_supervised(model, len(images), batch_loss, optimizer, epochs, batch_size, seed, device,
                              precision, desc="segmentation", progress=progress)
    return {"loss": epoch_means(losses, epochs)}


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
    flip = (torch.rand(len(x), generator=generator, device=generator.device) < 0.5).to(x.device)  # [B]
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
    device = (torch.device(device) if device is not None else module_device(model))
    was_training = model.training
    model.to(device).eval()
    preds = [
        model(_prepare(images[i:i + batch_size].to(device), mean, std)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(preds)
