"""Faster R-CNN on an SSL backbone: build, train step, inference, freezing; COCO mAP (torchmetrics)
checked by hand and against ultralytics' validator."""
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit.data import make_shapes  # noqa: E402
from coursekit.models import build_backbone  # noqa: E402
from coursekit.transfer.detection import (  # noqa: E402
    build_faster_rcnn,
    evaluate_map,
    freeze_backbone,
    predict_boxes,
    train_detector,
    unfreeze_backbone,
)
from coursekit.transfer.optim import make_optimizer  # noqa: E402

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


def test_map_hand_computed_coco_101_points():
    gt_boxes = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])]
    gt_labels = [torch.tensor([0, 0])]
    # score order: hit (IoU 1), miss, hit (IoU 100/110 = 0.91): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # COCO's AP samples the precision envelope at 101 recalls: 51 at recall <= 0.5 (precision 1), 50 above (2/3).
    pred = [{
        "boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([0, 0, 0]),
    }]
    ap50 = (51 + 50 * 2 / 3) / 101
    ap95 = 51 / 101  # at IoU 0.95 the second hit misses: only recall 1/2 is reached
    result = evaluate_map(pred, gt_boxes, gt_labels)
    assert result["mAP50"] == pytest.approx(ap50, abs=1e-6)
    assert result["mAP50-95"] == pytest.approx((9 * ap50 + ap95) / 10, abs=1e-6)  # 0.50 ... 0.90 hit, 0.95 not
    assert result["per_class"] == {0: pytest.approx((9 * ap50 + ap95) / 10, abs=1e-6)}


def test_duplicate_detections_count_once():
    gt_boxes, gt_labels = [torch.tensor([[0.0, 0, 10, 10]])], [torch.tensor([0])]
    pred = [{"boxes": torch.tensor([[0.0, 0, 10, 10]] * 2), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}]
    assert evaluate_map(pred, gt_boxes, gt_labels)["mAP50-95"] == pytest.approx(1.0)
    pred[0]["labels"] = torch.tensor([1, 1])  # right box, wrong class
    result = evaluate_map(pred, gt_boxes, gt_labels)
    assert result["mAP50"] == 0.0 and list(result["per_class"]) == [0]  # class 1 has no ground truth: left out
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_map(pred, gt_boxes * 2, gt_labels * 2)


def _ultralytics_map(predictions, gt_boxes, gt_labels, num_classes):
    """(mAP50, mAP50-95) of ultralytics' validator on the same predictions: its matching
    (DetectionValidator._process_batch) and its AP (DetMetrics, ap_per_class)."""
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics

    validator = DetectionValidator()
    metrics = DetMetrics(names={c: str(c) for c in range(num_classes)})
    for i, (pred, boxes, labels) in enumerate(zip(predictions, gt_boxes, gt_labels)):
        order = pred["scores"].argsort(descending=True)  # the validator expects descending confidence
        detections = {"bboxes": pred["boxes"][order].float(), "cls": pred["labels"][order].float()}
        tp = validator._process_batch(detections, {"bboxes": boxes.float().reshape(-1, 4), "cls": labels.float()})["tp"]
        metrics.update_stats({"tp": tp, "conf": pred["scores"][order].numpy(), "pred_cls": detections["cls"].numpy(),
                              "target_cls": labels.float().numpy(), "target_img": np.unique(labels.numpy()),
                              "im_name": str(i)})
    metrics.process()
    return float(metrics.box.map50), float(metrics.box.map)


def _noisy_predictions(data, seed: int, noise: float) -> list[dict]:
    """Ground-truth boxes moved by Gaussian noise (std ``noise`` px), 15% missed, 10% with the wrong
    class, 0-2 random false positives per image, random scores."""
    g = torch.Generator().manual_seed(seed)
    size = data.image_size[0]
    predictions = []
    for boxes, labels in zip(data.boxes, data.box_labels):
        keep = torch.rand(len(boxes), generator=g) > 0.15
        found = boxes[keep] + noise * torch.randn(int(keep.sum()), 4, generator=g)
        classes = labels[keep].clone()
        wrong = torch.rand(len(classes), generator=g) < 0.1
        classes[wrong] = (classes[wrong] + 1) % len(data.classes)
        n_false = int(torch.randint(0, 3, (1,), generator=g))
        corner = torch.rand(n_false, 2, generator=g) * size * 0.7
        false = torch.cat([corner, corner + 4 + torch.rand(n_false, 2, generator=g) * size * 0.3], 1)
        predictions.append({"boxes": torch.cat([found, false]), "scores": torch.rand(len(found) + n_false, generator=g),
                            "labels": torch.cat([classes, torch.randint(0, len(data.classes), (n_false,), generator=g)])})
    return predictions


@pytest.mark.parametrize("noise", [0.5, 2.0, 4.0])
def test_map_agrees_with_ultralytics_validator(noise):
    """Same predictions, two implementations: within 0.01 (they differ in how the 101-point curve is
    integrated and COCO keeps 100 detections per image), here at mAP from 0.08 to 0.57."""
    pytest.importorskip("ultralytics")
    data = make_shapes(60, image_size=64, seed=5, num_objects=(1, 3))
    for seed in range(2):
        predictions = _noisy_predictions(data, seed, noise)
        ours = evaluate_map(predictions, data.boxes, data.box_labels)
        map50, map50_95 = _ultralytics_map(predictions, data.boxes, data.box_labels, len(data.classes))
        assert 0.05 < map50_95 < map50 < 0.9  # a range where disagreements would show
        assert ours["mAP50"] == pytest.approx(map50, abs=0.01)
        assert ours["mAP50-95"] == pytest.approx(map50_95, abs=0.01)

def test_a_dry_run_predicts_the_first_images_and_repeats_their_detections(monkeypatch):
    """COURSEKIT_DRY_RUN=1 (coursekit.dry_run): the model sees at most MAX_EVAL_IMAGES images, every image
    still gets its detections (those of the image MAX_EVAL_IMAGES before it), so evaluate_map runs."""
    from coursekit import dry_run

    torch.manual_seed(0)
    model = build_faster_rcnn(build_backbone("resnet18", width=8), num_classes=2, min_size=SIZE, max_size=SIZE)
    images = two_images()[0].repeat(3, 1, 1, 1)  # 6 images
    seen = []
    model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    monkeypatch.setattr(dry_run, "MAX_EVAL_IMAGES", 2)
    predictions = predict_boxes(model, images, batch_size=4)
    assert seen == [2] and len(predictions) == 6
    for i, p in enumerate(predictions):
        assert all(torch.equal(p[key], predictions[i % 2][key]) for key in ("boxes", "scores", "labels"))
