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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit import dry_run
from coursekit.engine.device import module_device
from coursekit.engine.seeding import step_generator
from coursekit.engine.supervised import epoch_means, train_supervised
from coursekit.evaluate.patches import tokens_to_feature_map
from coursekit.transfer.optim import freeze_frozen_batchnorm, make_optimizer, to_training_device

__all__ = [
    "mean_iou",
    "LinearSegHead",
    "UpsamplingDecoder",
    "PyramidDecoder",
    "SegmentationModel",
    "train_segmentation",
    "random_resized_crop",
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


class PyramidDecoder(nn.Module):
    """A feature-pyramid decoder (FPN's top-down path) for a convolutional backbone's multi-scale maps.

    ``[[N, C_0, h_0, w_0], ..., [N, C_k, h_k, w_k]]`` (finest first, e.g. strides 4 to 32) ->
    logits ``[N, num_classes, h_0, w_0]``: each map is projected to ``channels`` by a 1x1 conv; from
    the coarsest, the running map is upsampled to the next finer one, added to it and smoothed by a
    3x3 conv. The coarse maps say *what* is there, the fine ones *where* its edges are.
    """

    def __init__(self, in_dims: list[int], num_classes: int, channels: int = 48):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(dim, channels, kernel_size=1) for dim in in_dims)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in in_dims[:-1])
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, fmaps: list[Tensor]) -> Tensor:
        x = self.lateral[-1](fmaps[-1])  # the coarsest map [N, C, h_k, w_k]
        for level in range(len(fmaps) - 2, -1, -1):
            x = F.interpolate(x, size=fmaps[level].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[level](x + self.lateral[level](fmaps[level]))
        return self.classifier(x)  # [N, K, h_0, w_0]


class SegmentationModel(nn.Module):
    """Backbone features -> head -> logits at the input resolution.

    Args:
        backbone: a coursekit backbone (``forward_features`` with ``"patch"`` and ``"grid"``; for the
            ``"pyramid"`` head, ``forward_pyramid`` and ``pyramid_dims``: a YOLO backbone).
        num_classes: classes of the masks (background included).
        head: ``"linear"`` (:class:`LinearSegHead`) or ``"decoder"`` (:class:`UpsamplingDecoder`) on
            the last feature map, or ``"pyramid"`` (:class:`PyramidDecoder`) on the maps of every stride.

    BatchNorm layers whose parameters are all frozen stay in eval mode under ``model.train()``,
    so a frozen backbone is truly frozen (its running statistics do not drift either).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "linear", **head_kwargs):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        heads = {"linear": LinearSegHead, "decoder": UpsamplingDecoder, "pyramid": PyramidDecoder}
        if head not in heads:
            raise ValueError(f"head must be one of {sorted(heads)}, got {head!r}")
        if head == "pyramid" and not hasattr(backbone, "forward_pyramid"):
            raise ValueError(f"head='pyramid' needs a backbone with a feature pyramid (a YOLO backbone, e.g. "
                             f"build_backbone('yolo11n')); a {type(backbone).__name__} has one feature map: "
                             "use head='decoder'")
        self.backbone = backbone
        self.num_classes = num_classes
        in_dims = backbone.pyramid_dims if head == "pyramid" else backbone.feature_dim
        self.head = heads[head](in_dims, num_classes, **head_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, 3, H, W]`` normalized float -> logits ``[N, num_classes, H, W]``."""
        if isinstance(self.head, PyramidDecoder):
            logits = self.head(self.backbone.forward_pyramid(x))  # [N, K, H/4, W/4]
        else:
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
    crop_scale: tuple[float, float] | None = None,
    cosine: bool = False,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train a segmentation model with per-pixel cross-entropy (``ignore_index`` pixels count for nothing).

    The backbone trains or not as ``set_backbone_trainable`` left it; the optimizer is built by
    ``make_optimizer`` unless one is given. Images and masks are moved to the device once; batches
    come in an order seeded by ``(seed, epoch)``, each flipped horizontally at random (image and
    mask together) by a generator seeded by ``(seed, step)``, and with ``crop_scale`` also cropped
    and resized back (:func:`random_resized_crop`); steps through ``engine.OptimizerStep`` (mixed
    precision on CUDA with ``precision="auto"``).

    Args:
        images: ``[N, 3, H, W]`` uint8 (or float in [0, 1]); normalized with ``mean``/``std``
            (ImageNet's by default, as coursekit's SSL views).
        masks: ``[N, H, W]`` integer class per pixel, or ``ignore_index``.
        crop_scale: (min, max) area fraction of a random crop per pair, e.g. ``(0.3, 1.0)``: with a
            few hundred masks the model sees new object sizes and positions every epoch instead of
            learning the masks by heart. None: no crops.
        cosine: decay every learning rate to 0 with a half cosine over the run (else constant).

    Returns:
        ``{"loss": [mean loss of every epoch]}``.
    """
    _check_pairs(images, masks)
    if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}")
    mean, std = _stats(mean, std)
    device = to_training_device(model, device)
    images, masks = images.to(device), masks.to(device).long()
    optimizer = optimizer or make_optimizer(model, lr, backbone_lr_scale)

    def batch_loss(step: int, indices: Tensor) -> Tensor:
        generator = step_generator(seed, step, device)
        x, y = _random_flip(_prepare(images[indices], mean, std), masks[indices], generator)
        if crop_scale is not None:
            x, y = random_resized_crop(x, y, crop_scale, generator)
        return F.cross_entropy(model(x).float(), y, ignore_index=ignore_index)

    losses = train_supervised(model, len(images), batch_loss, optimizer, epochs, batch_size, seed, device,
                              precision, cosine=cosine, desc="segmentation", progress=progress)
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


def random_resized_crop(x: Tensor, y: Tensor, scale: tuple[float, float], generator: torch.Generator,
                        ratio: float = 4 / 3) -> tuple[Tensor, Tensor]:
    """Crop each (image, mask) pair to the same random box and resize it back to the full size.

    The box covers an area fraction drawn uniformly from ``scale`` with a width/height ratio
    log-uniform in ``[1/ratio, ratio]`` (each side at most the image's), anywhere inside the image.
    Images ``[N, C, H, W]`` float are resampled bilinearly, masks ``[N, H, W]`` long by nearest
    neighbour (so every pixel keeps a class of the mask, ``ignore_index`` included).
    """
    n, device = len(x), x.device
    draws = torch.rand(4, n, generator=generator, device=generator.device).to(device)  # [4, N]
    area = scale[0] + (scale[1] - scale[0]) * draws[0]
    aspect = torch.exp((2 * draws[1] - 1) * math.log(ratio))
    width, height = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)  # fractions
    # affine_grid maps output coordinates in [-1, 1] to input ones: scale by the box, shift to its center
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = width, height
    theta[:, 0, 2], theta[:, 1, 2] = (2 * draws[2] - 1) * (1 - width), (2 * draws[3] - 1) * (1 - height)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return x, y[:, 0].long()


@torch.no_grad()
def predict_masks(
    model: SegmentationModel,
    images: Tensor,
    batch_size: int = 64,
    mean=None,
    std=None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Predicted class per pixel: ``[N, 3, H, W]`` uint8 -> ``[N, H, W]`` long (on the CPU). In a dry run
    (``coursekit.dry_run``) the model sees the first ``dry_run.MAX_EVAL_IMAGES`` images and the other
    images get their masks, in order."""
    mean, std = _stats(mean, std)
    device = (torch.device(device) if device is not None else module_device(model))
    was_training = model.training
    model.to(device).eval()
    count = dry_run.cap_eval(len(images))  # all of them, except in a dry run
    preds = [
        model(_prepare(images[i:min(i + batch_size, count)].to(device), mean, std)).argmax(1).cpu()
        for i in range(0, count, batch_size)
    ]
    model.train(was_training)
    return dry_run.repeat_rows(torch.cat(preds), len(images))  # a dry run computed fewer
