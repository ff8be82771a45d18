"""Bounding boxes: formats, IoU and boxes from masks (lesson 09 and the references of its exercises).

Three formats meet in detection code:

- ``xyxy``: corners ``(x1, y1, x2, y2)`` in pixels (torchvision, ``coursekit.data.ImageSet.boxes``);
- ``xywh``: top-left corner, width and height ``(x, y, w, h)`` in pixels (COCO annotations);
- YOLO: center, width and height divided by the image size, ``(cx, cy, w, h)`` in ``[0, 1]``
  (one line per box in ultralytics' label files).

Box IoU itself is ``torchvision.ops.box_iou`` (pairwise, xyxy): use it, it is the reference of the
``detection.box_iou`` exercise.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou, masks_to_boxes

__all__ = ["box_iou", "xywh_to_xyxy", "xyxy_to_xywh", "xyxy_to_yolo", "yolo_to_xyxy", "boxes_from_masks"]


def _check_boxes(boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a [K, 4] tensor, got {getattr(boxes, 'shape', type(boxes))}")


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[K, 4]`` ``(x, y, w, h)`` -> ``(x1, y1, x2, y2)`` with ``x2 = x + w``, ``y2 = y + h``."""
    _check_boxes(boxes)
    x, y, w, h = boxes.unbind(1)
    return torch.stack([x, y, x + w, y + h], dim=1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``[K, 4]`` ``(x1, y1, x2, y2)`` -> ``(x1, y1, x2 - x1, y2 - y1)``."""
    _check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=1)


def xyxy_to_yolo(boxes: Tensor, width: int, height: int) -> Tensor:
    """Pixel corners -> YOLO's normalized ``(cx, cy, w, h)``: x values divided by the image
    ``width``, y values by its ``height``; returns float ``[K, 4]``."""
    _check_boxes(boxes)
    x1, y1, x2, y2 = boxes.float().unbind(1)
    return torch.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], dim=1)


def yolo_to_xyxy(boxes: Tensor, width: int, height: int) -> Tensor:
    """YOLO's normalized ``(cx, cy, w, h)`` -> pixel corners ``(x1, y1, x2, y2)`` (the inverse of
    :func:`xyxy_to_yolo`)."""
    _check_boxes(boxes)
    cx, cy, w, h = boxes.float().unbind(1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], dim=1)


def boxes_from_masks(masks: Tensor, background: int = 0) -> list[Tensor]:
    """One tight xyxy box per image around its non-background pixels (e.g. the pet of an
    Oxford-IIIT Pet trimap, border included), with the exclusive right/bottom edges of
    ``ImageSet.boxes``. ``masks``: ``[N, H, W]``; an image without foreground gets no box.

    Returns:
        A list of N float tensors ``[K_i, 4]`` (``K_i`` is 1, or 0 without foreground).
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(masks.shape)}")
    boxes = []
    for mask in masks:
        foreground = mask != background
        if foreground.any():
            box = masks_to_boxes(foreground[None]).float()  # inclusive pixel corners
            boxes.append(box + torch.tensor([0.0, 0.0, 1.0, 1.0]))
        else:
            boxes.append(torch.zeros(0, 4))
    return boxes
