"""An SSL backbone inside a torchvision Faster R-CNN (lesson 09, the route without ultralytics).

The backbone (a coursekit ResNet or ViT from lessons 02-06, or DINOv2) gives one feature map: a
ResNet's last stage or a ViT's patch tokens reshaped with
:func:`~coursekit.evaluate.patches.tokens_to_feature_map`. :class:`FeaturePyramidBackbone`
turns that single map into three scales (x2 by a transposed convolution, x1, /2 by max pooling,
as ViTDet's simple feature pyramid does), projects each with a 1x1 adapter and runs torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork` over them. Faster R-CNN's region proposal network
and box head read the pyramid.

Freezing and the smaller backbone learning rate reuse
:func:`~coursekit.transfer.optim.set_backbone_trainable` and
:func:`~coursekit.transfer.optim.make_optimizer` (the SSL encoder is ``model.backbone.body``).

Labels: like :class:`coursekit.data.ImageSet`, this module takes and returns 0-based object classes;
torchvision's class 0 (background) is handled inside.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from coursekit import dry_run
from coursekit.engine.device import module_device
from coursekit.evaluate.patches import tokens_to_feature_map
from coursekit.engine.supervised import epoch_means, train_supervised
from coursekit.transfer.optim import freeze_frozen_batchnorm, make_optimizer, set_backbone_trainable, to_training_device

__all__ = [
    "FeaturePyramidBackbone",
    "build_faster_rcnn",
    "freeze_backbone",
    "unfreeze_backbone",
    "train_detector",
    "predict_boxes",
    "evaluate_map",
]

_LEVELS = ("0", "1", "2")  # the pyramid levels the box head pools from (FPN adds "pool")
_SMALL_IMAGE_SETTINGS = {
    "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 128,
}


class FeaturePyramidBackbone(nn.Module):
    """SSL backbone -> single feature map -> three scales -> 1x1 adapters -> FPN.

    Follows torchvision's ``BackboneWithFPN`` convention: the encoder is ``self.body`` and
    ``self.out_channels`` is the width of every pyramid level.

    ``forward(x [N, 3, H, W])`` -> ``OrderedDict`` ``"0"``: ``[N, C, 2h, 2w]``, ``"1"``: ``[N, C, h, w]``,
    ``"2"``: ``[N, C, h/2, w/2]``, ``"pool"``: ``[N, C, h/4, w/4]`` where ``(h, w)`` is the backbone grid.
    """

    def __init__(self, body: nn.Module, out_channels: int = 64):
        super().__init__()
        dim = body.feature_dim
        self.body = body
        self.out_channels = out_channels
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.adapters = nn.ModuleList(nn.Conv2d(dim, out_channels, 1) for _ in _LEVELS)
        self.fpn = FeaturePyramidNetwork([out_channels] * len(_LEVELS), out_channels, LastLevelMaxPool())

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body.forward_features(x)
        fmap = tokens_to_feature_map(features["patch"], features["grid"])  # [N, D, h, w]
        scales = [self.up(fmap), fmap, F.max_pool2d(fmap, kernel_size=2, ceil_mode=True)]
        return self.fpn(OrderedDict(
            (name, adapter(level)) for name, adapter, level in zip(_LEVELS, self.adapters, scales)
        ))

    def train(self, mode: bool = True) -> "FeaturePyramidBackbone":
        super().train(mode)
        freeze_frozen_batchnorm(self.body)  # a frozen encoder keeps its BatchNorm statistics
        return self


def build_faster_rcnn(
    backbone: nn.Module,
    num_classes: int,
    min_size: int = 64,
    max_size: int = 64,
    out_channels: int = 64,
    anchor_sizes: tuple[int, ...] | None = None,
    representation_size: int = 256,
    image_mean=None,
    image_std=None,
    **detector_kw,
) -> FasterRCNN:
    """A torchvision Faster R-CNN (no pretrained weights anywhere) on a coursekit backbone.

    Args:
        backbone: a coursekit backbone (``feature_dim``, ``forward_features``).
        num_classes: object classes, background excluded.
        min_size, max_size: torchvision resizes every image so its short side is ``min_size``
            (long side at most ``max_size``); set both to the image side to keep small images as they are.
        anchor_sizes: one anchor side per pyramid level (4 levels); by default
            ``min_size / 8 * (1, 2, 4, 8)``.
        image_mean, image_std: the normalization the backbone was pretrained with (ImageNet's by
            default, as coursekit's SSL views); inputs are float images in [0, 1].
        detector_kw: more ``FasterRCNN`` arguments. The defaults here suit small images: 300
            proposals before and 100 after NMS, 128 sampled RoIs per image (torchvision's defaults,
            2000/2000/512, are for 800px images).
    """
    from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD

    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    pyramid = FeaturePyramidBackbone(backbone, out_channels)
    if anchor_sizes is None:
        base = max(4, min_size // 8)
        anchor_sizes = tuple(base * 2**i for i in range(len(_LEVELS) + 1))
    if len(anchor_sizes) != len(_LEVELS) + 1:
        raise ValueError(f"anchor_sizes needs {len(_LEVELS) + 1} sizes (one per level), got {anchor_sizes}")
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    roi_pool = MultiScaleRoIAlign(featmap_names=list(_LEVELS), output_size=7, sampling_ratio=2)
    return FasterRCNN(
        pyramid,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(out_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean or IMAGENET_MEAN),
        image_std=list(image_std or IMAGENET_STD),
        **{**_SMALL_IMAGE_SETTINGS, **detector_kw},
    )


def freeze_backbone(model: FasterRCNN) -> dict[str, int]:
    """Phase 1: freeze the SSL encoder; the adapters, FPN, RPN and box head train."""
    return set_backbone_trainable(model, "frozen")


def unfreeze_backbone(model: FasterRCNN, last_n: int | None = None) -> dict[str, int]:
    """Phase 2: unfreeze the encoder (all of it, or its last ``last_n`` blocks).

    Then build a new optimizer with ``make_optimizer(model, lr, backbone_lr_scale=0.1)``.
    """
    return set_backbone_trainable(model, "all" if last_n is None else "last_blocks", last_n or 1)


def _targets(boxes: list[Tensor], labels: list[Tensor], device) -> list[dict[str, Tensor]]:
    """ImageSet boxes/labels (0-based) -> torchvision targets (1-based; 0 is background)."""
    return [
        {"boxes": b.to(device, torch.float32).reshape(-1, 4), "labels": l.to(device, torch.long) + 1}
        for b, l in zip(boxes, labels)
    ]


def _check_detection_data(images: Tensor, boxes: list[Tensor], labels: list[Tensor]) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if len(boxes) != len(images) or len(labels) != len(images):
        raise ValueError("boxes and labels need one tensor per image")
    for b, l in zip(boxes, labels):
        if b.reshape(-1, 4).shape[0] != l.numel():
            raise ValueError("every image needs as many labels as boxes")


def train_detector(
    model: FasterRCNN,
    images: Tensor,
    boxes: list[Tensor],
    labels: list[Tensor],
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    backbone_lr_scale: float = 0.1,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    precision: str = "auto",
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train a Faster R-CNN on uint8 images with ImageSet-style boxes (xyxy pixels) and 0-based labels.

    The encoder trains or not as :func:`freeze_backbone` / :func:`unfreeze_backbone` left it; the
    optimizer is built by ``make_optimizer`` unless given. Batches are drawn in an order seeded by
    ``(seed, epoch)``; steps through ``engine.OptimizerStep`` (mixed precision on CUDA with
    ``precision="auto"``).

    Returns:
        ``{"loss": [mean summed loss per epoch]}`` (RPN + box classification + box regression).
    """
    from coursekit.augment import to_float

    _check_detection_data(images, boxes, labels)
    device = to_training_device(model, device)
    images = images.to(device)
    targets = _targets(boxes, labels, device)
    optimizer = optimizer or make_optimizer(model, lr, backbone_lr_scale)

    def batch_loss(step: int, indices: Tensor) -> Tensor:
        batch = list(to_float(images[indices]))  # B x [3, H, W] in [0, 1]
        batch_targets = [targets[i] for i in indices.tolist()]  # per-image box lists: torchvision's API
        return sum(loss.float() for loss in model(batch, batch_targets).values())

    losses = train_supervised(model, len(images), batch_loss, optimizer, epochs, batch_size, seed, device,
                              precision, desc="detector", progress=progress)
    return {"loss": epoch_means(losses, epochs)}


@torch.no_grad()
def predict_boxes(
    model: FasterRCNN, images: Tensor, batch_size: int = 32, score_threshold: float = 0.0
) -> list[dict[str, Tensor]]:
    """Detections per image: ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K] 0-based}`` on the CPU.
    In a dry run (``coursekit.dry_run``) the model sees the first ``dry_run.MAX_EVAL_IMAGES`` images and
    the other images get their detections, in order."""
    from coursekit.augment import to_float

    device = module_device(model)
    was_training = model.training
    model.eval()
    results = []
    count = dry_run.cap_eval(len(images))  # all of them, except in a dry run
    for start in range(0, count, batch_size):
        for out in model(list(to_float(images[start:min(start + batch_size, count)].to(device)))):
            keep = out["scores"] >= score_threshold
            results.append({
                "boxes": out["boxes"][keep].cpu(),
                "scores": out["scores"][keep].cpu(),
                "labels": out["labels"][keep].cpu() - 1,
            })
    model.train(was_training)
    return dry_run.repeat_rows(results, len(images))  # a dry run computed fewer


def evaluate_map(
    predictions: list[dict[str, Tensor]],
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
) -> dict:
    """COCO box mAP of detections, computed by torchmetrics' ``MeanAveragePrecision`` (pycocotools inside).

    The COCO protocol: detections of a class, by descending score, are matched greedily to unmatched
    ground-truth boxes at IoU >= t; AP is the 101-point interpolated area under the precision-recall
    curve; mAP is the mean over the classes that have ground truth; at most 100 detections per image.
    ``mAP50`` uses t = 0.5, ``mAP50-95`` averages t = 0.50, 0.55, ..., 0.95. Boxes are xyxy pixels
    (exclusive right/bottom edges, as ``ImageSet.boxes``: width = x2 - x1, as COCO counts it).

    Args:
        predictions: per image ``{"boxes": [K, 4], "scores": [K], "labels": [K]}`` (``predict_boxes``).
        gt_boxes, gt_labels: per image ``[M, 4]`` xyxy and ``[M]`` 0-based classes.

    Returns:
        ``{"mAP50": float, "mAP50-95": float, "per_class": {class: mAP50-95}}`` (classes with
        ground truth only); ``nan`` everywhere when no image has a ground-truth box.
    """
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(gt_boxes) or len(gt_boxes) != len(gt_labels):
        raise ValueError("predictions, gt_boxes and gt_labels need one entry per image")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools")
    metric.update(
        [{"boxes": p["boxes"].float().reshape(-1, 4), "scores": p["scores"].float(), "labels": p["labels"].long()}
         for p in predictions],
        [{"boxes": b.float().reshape(-1, 4), "labels": l.long()} for b, l in zip(gt_boxes, gt_labels)],
    )
    result = metric.compute()
    missing = float("nan")  # torchmetrics reports -1 where there is no ground truth
    per_class = {int(c): float(ap) for c, ap in zip(result["classes"].reshape(-1), result["map_per_class"].reshape(-1))
                 if ap >= 0}
    return {"mAP50": float(result["map_50"]) if result["map_50"] >= 0 else missing,
            "mAP50-95": float(result["map"]) if result["map"] >= 0 else missing,
            "per_class": per_class}
