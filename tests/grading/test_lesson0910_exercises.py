"""Graders of lessons 09 and 10: the references and other correct versions get full marks, typical
mistakes get fewer points with feedback that names the mistake."""
import numpy as np
import pytest
import torch

from coursekit.data import boxes
from coursekit.grading import grade
from .grader_asserts import _caught, _full_marks
from coursekit.grading.homework import exercises_of
from coursekit.evaluate import patches
from coursekit.transfer import optim


def test_homework_lists_the_new_exercises():
    assert exercises_of("09_yolo_transfer") == ["detection.box_iou", "detection.xyxy_to_yolo", "detection.param_groups"]
    assert "segmentation.tokens_to_feature_map" in exercises_of("10_segmentation")


# ------------------------------------------------------------------------------------------------
# coursekit.data.boxes


def test_box_formats_round_trip():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 64.0, 48.0]])
    yolo = boxes.xyxy_to_yolo(xyxy, 64, 48)
    torch.testing.assert_close(yolo[0], torch.tensor([30 / 64, 30 / 48, 40 / 64, 20 / 48]))
    torch.testing.assert_close(boxes.yolo_to_xyxy(yolo, 64, 48), xyxy)
    torch.testing.assert_close(boxes.xywh_to_xyxy(boxes.xyxy_to_xywh(xyxy)), xyxy)
    with pytest.raises(ValueError):
        boxes.xywh_to_xyxy(torch.zeros(3))


def test_boxes_from_masks_are_tight_with_exclusive_edges():
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, 2:5, 3:7] = 1
    masks[0, 5, 3] = 255  # an ignored border pixel still belongs to the object
    result = boxes.boxes_from_masks(masks)
    assert result[0].tolist() == [[3.0, 2.0, 7.0, 6.0]]
    assert result[1].shape == (0, 4)


def test_yolo_conversion_matches_the_yolo_export():
    from coursekit.data.yolo_export import _detection_lines

    xyxy = torch.tensor([[3.0, 5.0, 20.0, 11.0]])
    line = _detection_lines(xyxy, torch.tensor([2]), 32, 16)[0].split()
    assert np.allclose([float(v) for v in line[1:]], boxes.xyxy_to_yolo(xyxy, 32, 16)[0].tolist(), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# detection.box_iou


def loop_iou(a, b):
    out = torch.zeros(len(a), len(b))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(b.tolist()):
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = iw * ih
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            out[i, j] = inter / union
    return out


def _iou_parts(a, b, clamp=True):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0) if clamp else rb - lt
    inter = wh[..., 0] * wh[..., 1]
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    return inter, area_a, area_b


BOX_IOU_CORRECT = [boxes.box_iou, loop_iou]


@pytest.mark.parametrize("fn", BOX_IOU_CORRECT)
def test_box_iou_correct_versions_get_full_marks(fn):
    _full_marks("detection.box_iou", fn)


def _no_union_subtraction(a, b):
    inter, area_a, area_b = _iou_parts(a, b)
    return inter / (area_a + area_b)


def _no_clamp(a, b):
    inter, area_a, area_b = _iou_parts(a, b, clamp=False)
    return inter / (area_a + area_b - inter)


def _over_first(a, b):
    inter, area_a, _ = _iou_parts(a, b)
    return inter / area_a


def _xywh(a, b):
    def conv(x):
        return torch.cat([x[:, :2], x[:, :2] + x[:, 2:]], 1)

    return boxes.box_iou(conv(a), conv(b))


def _plus_one(a, b):
    one = torch.tensor([0.0, 0.0, 1.0, 1.0])
    return boxes.box_iou(a + one, b + one)


def _rowwise(a, b):
    n = min(len(a), len(b))
    return boxes.box_iou(a[:n], b[:n]).diagonal()


BOX_IOU_MISTAKES = [
    (_no_union_subtraction, "subtract the intersection"),
    (_no_clamp, "not clamped at 0"),
    (_over_first, "area of the first box"),
    (_xywh, "(x, y, w, h)"),
    (_plus_one, "+1 pixel"),
    (_rowwise, "one IoU per row"),
    (lambda a, b: boxes.box_iou(a, b).tolist(), "torch.Tensor"),
]


@pytest.mark.parametrize("fn, words", BOX_IOU_MISTAKES)
def test_box_iou_mistakes_are_named(fn, words):
    _caught("detection.box_iou", fn, words)


def test_box_iou_stub():
    def stub(a, b):
        raise NotImplementedError

    assert "not implemented" in grade("detection.box_iou", stub).feedback[0]


# ------------------------------------------------------------------------------------------------
# detection.xyxy_to_yolo


def loop_to_yolo(boxes_xyxy, width, height):
    rows = [[(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
            for x1, y1, x2, y2 in boxes_xyxy.float().tolist()]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _scaled(values, width, height):
    return values / torch.tensor([width, height, width, height], dtype=torch.float32)


XYXY_TO_YOLO_CORRECT = [boxes.xyxy_to_yolo, loop_to_yolo]


@pytest.mark.parametrize("fn", XYXY_TO_YOLO_CORRECT)
def test_xyxy_to_yolo_correct_versions_get_full_marks(fn):
    _full_marks("detection.xyxy_to_yolo", fn)


XYXY_TO_YOLO_MISTAKES = [
    (lambda b, w, h: boxes.xyxy_to_yolo(b, 1, 1), "not normalized"),
    (lambda b, w, h: boxes.xyxy_to_yolo(b, h, w), "swapped"),
    (lambda b, w, h: _scaled(boxes.xyxy_to_xywh(b.float()), w, h), "top-left corner"),
    (lambda b, w, h: _scaled(b.float(), w, h), "normalized corners"),
    (lambda b, w, h: boxes.xyxy_to_yolo(b, w, w), "divided by the width"),
    (lambda b, w, h: boxes.xyxy_to_yolo(b, w, h) * torch.tensor([1.0, 1.0, 0.5, 0.5]), "half the width"),
    (lambda b, w, h: boxes.xyxy_to_yolo(b, w, h).long(), "floating point"),
]


@pytest.mark.parametrize("fn, words", XYXY_TO_YOLO_MISTAKES)
def test_xyxy_to_yolo_mistakes_are_named(fn, words):
    _caught("detection.xyxy_to_yolo", fn, words)


# ------------------------------------------------------------------------------------------------
# detection.param_groups


def explicit_groups(model, lr, backbone_lr_scale):
    """Another correct version: walks named parameters, checks the 'backbone.' prefix."""
    head = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("backbone.")]
    body = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith("backbone.")]
    return [{"params": body, "lr": lr * backbone_lr_scale}, {"params": head, "lr": lr}]  # other order, empty allowed


PARAM_GROUPS_CORRECT = [optim.param_groups, explicit_groups]


@pytest.mark.parametrize("fn", PARAM_GROUPS_CORRECT)
def test_param_groups_correct_versions_get_full_marks(fn):
    _full_marks("detection.param_groups", fn)


def _frozen_included(model, lr, scale):
    return [{"params": list(model.head.parameters()), "lr": lr},
            {"params": list(model.backbone.parameters()), "lr": lr * scale}]


def _same_lr(model, lr, scale):
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def _divided(model, lr, scale):
    groups = optim.param_groups(model, lr, scale)
    return [{**g, "lr": lr / scale} if g["name"] == "backbone" else g for g in groups]


def _fixed_tenth(model, lr, scale):
    return optim.param_groups(model, lr, 0.1)


def _head_scaled(model, lr, scale):
    return [{**g, "lr": lr * scale} for g in optim.param_groups(model, lr, scale)]


def _twice(model, lr, scale):
    trainable = [p for p in model.parameters() if p.requires_grad]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    return [{"params": trainable, "lr": lr}, {"params": body, "lr": lr * scale}]


def _backbone_only(model, lr, scale):
    return [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": lr * scale}]


PARAM_GROUPS_MISTAKES = [
    (_frozen_included, "frozen parameter"),
    (_same_lr, "full lr"),
    (_divided, "do not divide"),
    (_fixed_tenth, "not a fixed 0.1"),
    (_head_scaled, "smaller lr"),
    (_twice, "exactly one group"),
    (_backbone_only, "is in no group"),
    (lambda model, lr, scale: {"head": list(model.parameters())}, "list of dicts"),
]


@pytest.mark.parametrize("fn, words", PARAM_GROUPS_MISTAKES)
def test_param_groups_mistakes_are_named(fn, words):
    _caught("detection.param_groups", fn, words)


def test_param_groups_reference_matches_make_optimizer():
    from coursekit.grading.homework.yolo_transfer import _model

    tiny = _model("last_blocks")
    groups = optim.param_groups(tiny, 1e-3, 0.1)
    optimizer = optim.make_optimizer(tiny, 1e-3, 0.1)
    assert [g["name"] for g in groups] == [g["name"] for g in optimizer.param_groups] == ["head", "backbone"]
    assert [len(g["params"]) for g in groups] == [len(g["params"]) for g in optimizer.param_groups] == [4, 2]


# ------------------------------------------------------------------------------------------------
# segmentation.tokens_to_feature_map


def loop_map(tokens, grid):
    h, w = grid
    n, length, dim = tokens.shape
    rows = [torch.stack([tokens[:, r * w + c, :] for c in range(w)], dim=-1) for r in range(h)]  # h x [N, D, w]
    return torch.stack(rows, dim=-2)


def einops_like(tokens, grid):
    h, w = grid
    return tokens.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


TOKENS_TO_FEATURE_MAP_CORRECT = [patches.tokens_to_feature_map, loop_map, einops_like]


@pytest.mark.parametrize("fn", TOKENS_TO_FEATURE_MAP_CORRECT)
def test_tokens_to_feature_map_correct_versions_get_full_marks(fn):
    _full_marks("segmentation.tokens_to_feature_map", fn)


TOKENS_TO_FEATURE_MAP_MISTAKES = [
    (lambda t, g: t.reshape(t.shape[0], t.shape[2], *g), "move the channel axis first"),
    (lambda t, g: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], g[1], g[0]).transpose(2, 3), "column by column"),
    (lambda t, g: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], g[1], g[0]), "swapped"),
    (lambda t, g: t.reshape(t.shape[0], g[0], g[1], t.shape[2]), "channels are last"),
    (lambda t, g: t.transpose(1, 2), "still flat"),
    (lambda t, g: torch.tensor(patches.tokens_to_feature_map(t, g).tolist()), "no gradient"),
]


@pytest.mark.parametrize("fn, words", TOKENS_TO_FEATURE_MAP_MISTAKES)
def test_tokens_to_feature_map_mistakes_are_named(fn, words):
    _caught("segmentation.tokens_to_feature_map", fn, words)


# What tests/grading/test_graders.py checks every registered exercise has: other correct versions, named mistakes.
ALTERNATIVES = {"detection.box_iou": BOX_IOU_CORRECT, "detection.xyxy_to_yolo": XYXY_TO_YOLO_CORRECT,
                "detection.param_groups": PARAM_GROUPS_CORRECT,
                "segmentation.tokens_to_feature_map": TOKENS_TO_FEATURE_MAP_CORRECT}
MISTAKES = [(exercise_id, fn, words) for exercise_id, cases in (
    ("detection.box_iou", BOX_IOU_MISTAKES), ("detection.xyxy_to_yolo", XYXY_TO_YOLO_MISTAKES),
    ("detection.param_groups", PARAM_GROUPS_MISTAKES),
    ("segmentation.tokens_to_feature_map", TOKENS_TO_FEATURE_MAP_MISTAKES)) for fn, words in cases]
