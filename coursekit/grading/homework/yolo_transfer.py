"""Graded exercises of homework 09_yolo_transfer: ``detection.box_iou``, ``detection.xyxy_to_yolo``
and ``detection.param_groups`` (the ids keep their published ``detection.`` prefix).

References: ``torchvision.ops.box_iou`` (re-exported as ``coursekit.data.boxes.box_iou``),
``coursekit.data.boxes.xyxy_to_yolo`` and ``coursekit.transfer.segmentation.param_groups``.
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import SEEDS, call, expect_close, expect_tensor, generator, shape_text, type_name
from ..core import CheckFailed, exercise

# ---------------------------------------------------------------------------------------------
# detection.box_iou
# ---------------------------------------------------------------------------------------------

iou_exercise = exercise("detection.box_iou", "box_iou", reference="coursekit.data.boxes:box_iou")
IOU_HINT = ("the overlap of two boxes is itself a box (it may be empty); IoU divides its area by the area "
            "both boxes cover together, for every pair of boxes")


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _overlap(a, b, clamp=True):
    top_left = torch.max(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    size = bottom_right - top_left
    if clamp:
        size = size.clamp(min=0)
    return size[..., 0] * size[..., 1]  # [N, M]


def _iou_mistakes(a, b):
    reference = iou_exercise.reference()

    def xywh(boxes):
        return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)

    def plus_one(boxes):
        return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])

    inter = _overlap(a, b)
    return {
        "the union must subtract the intersection (area_a + area_b - intersection)":
            lambda: inter / (_area(a)[:, None] + _area(b)[None, :]),
        "the intersection width and height are not clamped at 0, so boxes that do not overlap get a "
        "non-zero IoU": lambda: _overlap(a, b, clamp=False) / (
            _area(a)[:, None] + _area(b)[None, :] - _overlap(a, b, clamp=False)),
        "boxes were read as (x, y, w, h); they are corners (x1, y1, x2, y2)": lambda: reference(xywh(a), xywh(b)),
        "the +1 pixel convention was used (width = x2 - x1 + 1); here width = x2 - x1":
            lambda: reference(plus_one(a), plus_one(b)),
        "the intersection was divided by the area of the first box only, not by the union":
            lambda: inter / _area(a)[:, None],
        "the intersection was divided by the smaller of the two areas, not by the union":
            lambda: inter / torch.min(_area(a)[:, None], _area(b)[None, :]),
    }


def _random_boxes(seed: int, n: int, size: float = 20.0):
    draw = generator(seed)
    corner = torch.rand(n, 2, generator=draw) * size
    extent = torch.rand(n, 2, generator=draw) * size / 2 + 1.0
    return torch.cat([corner, corner + extent], dim=1)


def _expect_iou(box_iou, a, b, what):
    expected = iou_exercise.reference()(a, b)
    value = call(box_iou, a.clone(), b.clone())
    expect_tensor(value, what, floating=True)
    if tuple(value.shape) != tuple(expected.shape):
        if value.dim() == 1 and len(value) == min(len(a), len(b)):
            raise CheckFailed(f"{what} has shape {shape_text(value.shape)}: that is one IoU per row (a[i] with b[i]); "
                              f"return every pair, shape {shape_text(expected.shape)}")
        raise CheckFailed(f"{what} has shape {shape_text(value.shape)}, expected {shape_text(expected.shape)} ([N, M])")
    expect_close(value, expected, _iou_mistakes(a, b), what=what, atol=1e-5)


FIXED_A = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0], [20.0, 0.0, 24.0, 4.0]])
FIXED_B = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [2.0, 2.0, 4.0, 4.0],
                        [12.0, 12.0, 30.0, 14.0]])


@iou_exercise.checks("returns a float tensor [N, M] of every pair", points=1, hint="compare every box of the first set with every box of the second")
def _iou_shape(box_iou):
    a, b = _random_boxes(0, 3), _random_boxes(1, 5)
    value = call(box_iou, a, b)
    expect_tensor(value, "the IoU matrix", floating=True)
    if tuple(value.shape) != (3, 5):
        raise CheckFailed(f"for 3 and 5 boxes the result has shape {shape_text(value.shape)}, expected [3, 5]")


@iou_exercise.checks("matches IoU on fixed boxes (same, overlapping, nested, disjoint)", points=2, hint=IOU_HINT)
def _iou_fixed(box_iou):
    _expect_iou(box_iou, FIXED_A, FIXED_B, "the IoU of the fixed boxes")


@iou_exercise.checks("matches IoU on random boxes (3 seeds)", points=2, hint=IOU_HINT)
def _iou_random(box_iou):
    for seed in SEEDS:
        _expect_iou(box_iou, _random_boxes(seed, 6), _random_boxes(seed + 10, 4), f"the IoU (seed {seed})")


@iou_exercise.checks("is 0 for boxes that do not overlap, even diagonally", points=1,
                     hint="clamp the intersection width and height at 0 before multiplying them")
def _iou_disjoint(box_iou):
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[6.0, 6.0, 9.0, 9.0], [4.0, 0.0, 8.0, 4.0]])  # diagonal gap, touching edge
    value = call(box_iou, a, b)
    expect_tensor(value, "the IoU of disjoint boxes", shape=(1, 2), floating=True)
    if not torch.allclose(value.double(), torch.zeros(1, 2, dtype=torch.float64)):
        raise CheckFailed(f"boxes without overlap got IoU {value.flatten().tolist()}, expected [0.0, 0.0] "
                          "(the two negative overlaps multiplied to a positive number?)")


# ---------------------------------------------------------------------------------------------
# detection.xyxy_to_yolo
# ---------------------------------------------------------------------------------------------

yolo_exercise = exercise("detection.xyxy_to_yolo", "xyxy_to_yolo", reference="coursekit.data.boxes:xyxy_to_yolo")
YOLO_HINT = ("YOLO describes a box by its center and its size, each measured as a fraction of the image's "
             "width (x values) or height (y values)")


def _yolo_mistakes(boxes, width, height):
    x1, y1, x2, y2 = boxes.float().unbind(1)
    w, h = x2 - x1, y2 - y1
    return {
        "the values are not normalized: divide x values by the image width and y values by its height":
            lambda: torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, w, h], 1),
        "width and height are swapped: x values are divided by the width, y values by the height":
            lambda: torch.stack([(x1 + x2) / 2 / height, (y1 + y2) / 2 / width, w / height, h / width], 1),
        "that is the top-left corner: YOLO stores the box center":
            lambda: torch.stack([x1 / width, y1 / height, w / width, h / height], 1),
        "those are the normalized corners (x1, y1, x2, y2): YOLO stores center, width and height":
            lambda: torch.stack([x1 / width, y1 / height, x2 / width, y2 / height], 1),
        "half the width and height were stored: YOLO stores the full width and height":
            lambda: torch.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, w / 2 / width, h / 2 / height], 1),
        "everything was divided by the width (y values go by the height)":
            lambda: torch.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / width, w / width, h / width], 1),
    }


def _expect_yolo(xyxy_to_yolo, boxes, width, height, what):
    expected = yolo_exercise.reference()(boxes, width, height)
    value = call(xyxy_to_yolo, boxes.clone(), width, height)
    expect_tensor(value, what, shape=expected.shape, floating=True)
    expect_close(value, expected, _yolo_mistakes(boxes, width, height), what=what, atol=1e-6)


@yolo_exercise.checks("returns a float tensor [K, 4]", points=1, hint="one row of four numbers per box, as floats")
def _yolo_shape(xyxy_to_yolo):
    boxes = torch.tensor([[1, 2, 5, 8], [0, 0, 10, 4]])  # integer pixel boxes
    value = call(xyxy_to_yolo, boxes, 10, 8)
    expect_tensor(value, "the converted boxes", shape=(2, 4), floating=True)


@yolo_exercise.checks("converts a fixed box on a non-square image", points=2, hint=YOLO_HINT)
def _yolo_fixed(xyxy_to_yolo):
    _expect_yolo(xyxy_to_yolo, torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 64.0, 48.0]]), 64, 48,
                 "the boxes in a 64 x 48 image")


@yolo_exercise.checks("converts random boxes (3 seeds)", points=1, hint=YOLO_HINT)
def _yolo_random(xyxy_to_yolo):
    for seed in SEEDS:
        _expect_yolo(xyxy_to_yolo, _random_boxes(seed, 5), 40, 30, f"the boxes (seed {seed})")


@yolo_exercise.checks("keeps an image without boxes empty: [0, 4]", points=1,
                      hint="avoid loops that assume at least one box; vectorized code handles [0, 4] by itself")
def _yolo_empty(xyxy_to_yolo):
    value = call(xyxy_to_yolo, torch.zeros(0, 4), 32, 32)
    expect_tensor(value, "the result for no boxes", shape=(0, 4))


# ---------------------------------------------------------------------------------------------
# detection.param_groups
# ---------------------------------------------------------------------------------------------

groups_exercise = exercise("detection.param_groups", "param_groups",
                           reference="coursekit.transfer.optim:param_groups")
GROUPS_HINT = ("only trainable parameters go to the optimizer; the pretrained backbone learns at a scaled-down "
               "rate, the new head at the full rate")


class _TinyDetector(nn.Module):
    """A backbone of three blocks and a two-layer head, small enough to check by hand."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 6), nn.Linear(6, 8))
        self.head = nn.Sequential(nn.Linear(8, 5), nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.backbone(x))


def _model(phase: str) -> _TinyDetector:
    """phase "frozen": backbone frozen; "last_blocks": only its last layer trains; "all": everything trains."""
    torch.manual_seed(0)
    model = _TinyDetector()
    model.backbone.requires_grad_(phase == "all")
    if phase == "last_blocks":
        model.backbone[-1].requires_grad_(True)
    return model


def _student_groups(param_groups, model, lr, scale):
    groups = call(param_groups, model, lr, scale)
    if isinstance(groups, tuple):
        groups = list(groups)
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CheckFailed(f"return a list of dicts (one per group), got {type_name(groups)}")
    for group in groups:
        if "params" not in group or "lr" not in group:
            raise CheckFailed(f"every group needs the keys 'params' and 'lr'; got a group with keys {sorted(group)}")
    return groups


def _lrs_of(groups) -> dict[int, list[float]]:
    """id(parameter) -> the learning rates of the groups it appears in."""
    seen: dict[int, list[float]] = {}
    for group in groups:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            seen.setdefault(id(p), []).append(float(group["lr"]))
    return seen


def _expect_groups(param_groups, phase: str, lr: float, scale: float) -> None:
    model = _model(phase)
    groups = _student_groups(param_groups, model, lr, scale)
    seen = _lrs_of(groups)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for name, p in model.named_parameters():
        lrs = seen.get(id(p), [])
        in_backbone = id(p) in backbone_ids
        if len(lrs) > 1:
            raise CheckFailed(f"{name} appears in {len(lrs)} groups: every parameter must be in exactly one group")
        if not p.requires_grad:
            if lrs:
                raise CheckFailed(f"the frozen parameter {name} (requires_grad=False) is in a group: leave frozen "
                                  "parameters out, they must not be updated (nor decayed)")
            continue
        if not lrs:
            part = "backbone" if in_backbone else "head"
            raise CheckFailed(f"the trainable {part} parameter {name} is in no group: it would never be updated")
        expected = lr * scale if in_backbone else lr
        got = lrs[0]
        if abs(got - expected) <= 1e-12 + 1e-9 * expected:
            continue
        if in_backbone and abs(got - lr) <= 1e-12:
            raise CheckFailed(f"the backbone parameter {name} has the full lr {lr:g}: multiply it by "
                              f"backbone_lr_scale ({scale:g}) so the pretrained weights change slowly")
        if in_backbone and abs(got - lr / scale) <= 1e-9 * lr / scale:
            raise CheckFailed(f"the backbone lr is lr / backbone_lr_scale = {got:g}: multiply, do not divide "
                              f"(expected {expected:g})")
        if in_backbone and abs(got - lr * 0.1) <= 1e-12:
            raise CheckFailed(f"the backbone lr is lr * 0.1 = {got:g}: use the backbone_lr_scale argument "
                              f"({scale:g}), not a fixed 0.1")
        if not in_backbone and abs(got - lr * scale) <= 1e-12:
            raise CheckFailed(f"the head parameter {name} got the smaller lr {got:g}: the new head learns at the "
                              f"full lr {lr:g}, only the pretrained backbone is slowed down")
        raise CheckFailed(f"{name} has lr {got:g}, expected {expected:g}")


@groups_exercise.checks("returns a list of dicts with 'params' and 'lr' that torch.optim accepts", points=1,
                        hint="[{'params': [...], 'lr': ...}, ...]")
def _groups_optimizer(param_groups):
    model = _model("all")
    groups = _student_groups(param_groups, model, 1e-3, 0.1)
    try:
        torch.optim.AdamW(groups, lr=1e-3)
    except Exception as error:  # noqa: BLE001 - the student's groups are the input
        raise CheckFailed(f"torch.optim.AdamW rejected the groups: {str(error).splitlines()[0][:160]}") from None


@groups_exercise.checks("phase 1, frozen backbone: only the head, at lr", points=2, hint=GROUPS_HINT)
def _groups_frozen(param_groups):
    _expect_groups(param_groups, "frozen", 1e-3, 0.1)


@groups_exercise.checks("phase 2, last block unfrozen: head at lr, that block at lr * backbone_lr_scale", points=2,
                        hint=GROUPS_HINT)
def _groups_last_blocks(param_groups):
    _expect_groups(param_groups, "last_blocks", 1e-3, 0.1)


@groups_exercise.checks("all trainable, another scale: uses the backbone_lr_scale argument", points=1,
                        hint="lr * backbone_lr_scale, not a fixed number")
def _groups_scale(param_groups):
    _expect_groups(param_groups, "all", 2e-3, 0.25)
