"""Faster R-CNN on an SSL backbone: build, train step, inference, freezing, mAP50."""

import pytest
import torch

from coursekit.models import build_backbone
from coursekit.transfer.detection import (
    average_precision,
    build_faster_rcnn,
    evaluate_map,
    freeze_backbone,
    predict_boxes,
    train_detector,
    unfreeze_backbone,
)
from coursekit.transfer.optim import make_optimizer

SIZE = 64


def two_images():
    """Two 64px images, each with one bright square (class 0 and class 1)."""
    images = torch.full((2, 3, SIZE, SIZE), 30, dtype=torch.uint8)
    images[0, :, 10:30, 12:34] = 220
    images[1, 1, 30:60, 20:50] = 220
    boxes = [torch.tensor([[12.0, 10.0, 34.0, 30.0]]), torch.tensor([[20.0, 30.0, 50.0, 60.0]])]
    labels = [torch.tensor([0]), torch.tensor([1])]
    return images, boxes, labels


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_build_train_step_and_inference(name):
    torch.manual_seed(0)
    kwargs = {"width": 8} if name == "resnet18" else {"img_size": SIZE, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
    model = build_faster_rcnn(build_backbone(name, **kwargs), num_classes=2, min_size=SIZE, max_size=SIZE)
    images, boxes, labels = two_images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_detector(model, images, boxes, labels, epochs=1, batch_size=2, progress=False)
    assert len(history["loss"]) == 1 and torch.isfinite(torch.tensor(history["loss"][0]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    predictions = predict_boxes(model, images)
    assert len(predictions) == 2
    for p in predictions:
        assert p["boxes"].shape[1:] == (4,) and len(p["scores"]) == len(p["labels"]) == len(p["boxes"])
        assert ((p["labels"] >= 0) & (p["labels"] < 2)).all()  # 0-based, background removed


def test_frozen_encoder_does_not_change_and_unfreezing_gives_a_smaller_lr():
    torch.manual_seed(0)
    model = build_faster_rcnn(build_backbone("resnet18", width=8), num_classes=2)
    encoder = model.backbone.body
    counts = freeze_backbone(model)
    assert counts["trainable"] == 0
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train_detector(model, *two_images(), epochs=1, batch_size=2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # BN stats too

    unfreeze_backbone(model)
    groups = {g["name"]: g for g in make_optimizer(model, lr=1e-3).param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(groups["head"]["lr"] / 10)
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in encoder.parameters()}


def test_average_precision_hand_computed():
    gt_boxes = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])]
    gt_labels = [torch.tensor([0, 0])]
    # score order: hit, miss, hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 + 1/2 * 2/3
    pred = [{
        "boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([0, 0, 0]),
    }]
    assert average_precision(pred, gt_boxes, gt_labels, cls=0) == pytest.approx(0.5 + 0.5 * 2 / 3)
    result = evaluate_map(pred, gt_boxes, gt_labels, num_classes=2)
    assert result["per_class"][1] != result["per_class"][1]  # no ground truth: nan, left out
    assert result["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_detections_count_once():
    gt_boxes, gt_labels = [torch.tensor([[0.0, 0, 10, 10]])], [torch.tensor([0])]
    pred = [{"boxes": torch.tensor([[0.0, 0, 10, 10]] * 2), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}]
    assert average_precision(pred, gt_boxes, gt_labels, cls=0) == pytest.approx(1.0)
    pred[0]["labels"] = torch.tensor([1, 1])  # right box, wrong class
    assert evaluate_map(pred, gt_boxes, gt_labels, num_classes=2)["mAP"] == pytest.approx(0.0)
