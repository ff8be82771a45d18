"""Segmentation transfer: mean_iou, tokens_to_feature_map, heads, freeze/unfreeze groups, training."""

import pytest
import torch

from coursekit.models import build_backbone
from coursekit.evaluate.patches import tokens_to_feature_map
from coursekit.transfer.optim import make_optimizer, set_backbone_trainable
from coursekit.transfer.segmentation import (
    LinearSegHead,
    PyramidDecoder,
    SegmentationModel,
    UpsamplingDecoder,
    mean_iou,
    predict_masks,
    random_resized_crop,
    train_segmentation,
)
from tests.conftest import tiny_backbone  # resnet18 width 8, or a ViT for SIZE images

SIZE = 32


# ----------------------------------------------------------------------------------------------
# mean_iou


def masks(*rows):
    return torch.tensor(rows).reshape(1, 1, -1)


def test_mean_iou_hand_computed():
    pred = masks(0, 0, 1, 1, 2, 2)
    target = masks(0, 1, 1, 1, 2, 0)
    # class 0: inter 1, union {0,1,5} = 3; class 1: inter 2, union {1,2,3} = 3; class 2: 1 / 2
    expected = (1 / 3 + 2 / 3 + 1 / 2) / 3
    assert mean_iou(pred, target, num_classes=3) == pytest.approx(expected)


def test_mean_iou_perfect_and_disjoint():
    target = masks(0, 1, 1, 2)
    assert mean_iou(target.clone(), target, 3) == pytest.approx(1.0)
    assert mean_iou(masks(1, 0, 0, 0), masks(0, 1, 1, 1), 2) == pytest.approx(0.0)


def test_mean_iou_ignores_pixels_whatever_the_prediction():
    pred = masks(0, 1, 1, 2)
    target = masks(0, 1, 255, 255)
    # only the first two pixels count: both right, and class 2 (predicted only on ignored pixels) is absent
    assert mean_iou(pred, target, 3) == pytest.approx(1.0)
    assert mean_iou(pred, masks(0, 1, 7, 7), 3, ignore_index=7) == pytest.approx(1.0)


def test_mean_iou_leaves_out_classes_absent_from_both():
    pred, target = masks(0, 0, 3, 3), masks(0, 3, 3, 3)
    # classes 1 and 2 appear nowhere: mean over {0: 1/2, 3: 2/3}, not over four classes
    assert mean_iou(pred, target, 5) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_mean_iou_counts_a_class_only_in_pred_as_zero():
    assert mean_iou(masks(0, 2), masks(0, 0), 3) == pytest.approx((1 / 2 + 0.0) / 2)


def test_mean_iou_is_per_set_not_per_image():
    pred = torch.tensor([[[0, 0, 0, 0]], [[1, 1, 1, 1]]])
    target = torch.tensor([[[0, 0, 0, 1]], [[1, 1, 1, 1]]])
    # set: class 0 3/4, class 1 4/5 -> 0.775; the per-image mean would be ((3/4 + 0) / 2 + 1) / 2
    assert mean_iou(pred, target, 2) == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert mean_iou(pred, target, 2) != pytest.approx(((3 / 4 + 0) / 2 + 1) / 2)


def test_mean_iou_all_ignored_is_nan_and_bad_input_raises():
    assert mean_iou(masks(0, 1), masks(255, 255), 2) != mean_iou(masks(0, 1), masks(255, 255), 2)
    with pytest.raises(ValueError):
        mean_iou(masks(0, 1), masks(0, 1, 1), 2)
    with pytest.raises(ValueError):
        mean_iou(masks(0, 5), masks(0, 1), 2)
    with pytest.raises(TypeError):
        mean_iou(masks(0, 1).float(), masks(0, 1), 2)


# ----------------------------------------------------------------------------------------------
# tokens_to_feature_map


def test_tokens_to_feature_map_inverts_row_major_flattening():
    fmap = torch.randn(2, 5, 3, 4)  # [N, D, h, w]
    tokens = fmap.flatten(2).transpose(1, 2)  # [N, 12, 5]
    assert torch.equal(tokens_to_feature_map(tokens, (3, 4)), fmap)
    # token i sits at row i // w, column i % w
    out = tokens_to_feature_map(torch.arange(6.0).reshape(1, 6, 1), (2, 3))
    assert out[0, 0].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_tokens_to_feature_map_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="CLS"):
        tokens_to_feature_map(torch.randn(1, 5, 2), (2, 2))
    with pytest.raises(ValueError):
        tokens_to_feature_map(torch.randn(4, 2), (2, 2))


# ----------------------------------------------------------------------------------------------
# Heads and the model


def test_heads_shapes():
    fmap = torch.randn(2, 16, 4, 4)
    assert LinearSegHead(16, 3)(fmap).shape == (2, 3, 4, 4)
    assert UpsamplingDecoder(16, 3, channels=8, num_upsamples=2)(fmap).shape == (2, 3, 16, 16)


def test_pyramid_decoder_returns_the_finest_resolution():
    fmaps = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 2, 2)]
    assert PyramidDecoder([8, 16, 32], 5, channels=12)(fmaps).shape == (2, 5, 16, 16)


def test_pyramid_head_on_a_yolo_backbone_and_refused_without_a_pyramid():
    pytest.importorskip("ultralytics")
    model = SegmentationModel(build_backbone("yolo11n"), num_classes=4, head="pyramid")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    with pytest.raises(ValueError, match="feature pyramid"):
        SegmentationModel(tiny_backbone("vit_tiny"), num_classes=4, head="pyramid")


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
@pytest.mark.parametrize("head", ["linear", "decoder"])
def test_segmentation_model_logits_at_input_resolution(name, head):
    model = SegmentationModel(tiny_backbone(name), num_classes=4, head=head)
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 4, SIZE, SIZE)
    with pytest.raises(ValueError):
        SegmentationModel(tiny_backbone(name), num_classes=4, head="unet")


# ----------------------------------------------------------------------------------------------
# Freeze / unfreeze and parameter groups


def backbone_ids(model):
    return {id(p) for p in model.backbone.parameters()}


def optimizer_ids(optimizer, name):
    return {id(p) for g in optimizer.param_groups if g["name"] == name for p in g["params"]}


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_frozen_backbone_is_out_of_the_optimizer(name):
    model = SegmentationModel(tiny_backbone(name), num_classes=3)
    counts = set_backbone_trainable(model, "frozen")
    assert counts["trainable"] == 0 and counts["total"] > 0
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    optimizer = make_optimizer(model, lr=1e-3)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & backbone_ids(model)
    assert in_optimizer == {id(p) for p in model.head.parameters()}


def test_frozen_batchnorm_keeps_its_statistics():
    model = SegmentationModel(tiny_backbone("resnet18"), num_classes=3)
    set_backbone_trainable(model, "frozen")
    model.train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, SIZE, SIZE))
    assert torch.equal(model.backbone.bn1.running_mean, before)
    assert model.head.norm.training  # the head's BatchNorm still trains


def test_last_blocks_unfreezes_only_the_last_vit_blocks_and_the_norm():
    model = SegmentationModel(tiny_backbone("vit_tiny"), num_classes=3)
    set_backbone_trainable(model, "last_blocks", last_n=1)
    vit = model.backbone
    trainable = {id(p) for p in vit.parameters() if p.requires_grad}
    expected = {id(p) for m in (vit.blocks[-1], vit.norm) for p in m.parameters()}
    assert trainable == expected
    assert not vit.blocks[0].attn.qkv.weight.requires_grad and not vit.pos_embed.requires_grad


def test_last_blocks_on_a_resnet_unfreezes_the_last_residual_blocks():
    model = SegmentationModel(tiny_backbone("resnet18"), num_classes=3)
    set_backbone_trainable(model, "last_blocks", last_n=2)  # the two blocks of layer4
    trainable = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.backbone.layer4.parameters()}
    with pytest.raises(ValueError):
        set_backbone_trainable(model, "last_blocks", last_n=99)


def test_backbone_learning_rate_is_ten_times_smaller():
    model = SegmentationModel(tiny_backbone("vit_tiny"), num_classes=3)
    set_backbone_trainable(model, "last_blocks", last_n=1)
    optimizer = make_optimizer(model, lr=1e-3)  # rebuilt after changing requires_grad
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-3) and lrs["backbone"] == pytest.approx(1e-4)
    trainable_backbone = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert optimizer_ids(optimizer, "backbone") == trainable_backbone
    set_backbone_trainable(model, "all")
    assert optimizer_ids(make_optimizer(model, lr=1e-3), "backbone") == backbone_ids(model)
    with pytest.raises(ValueError):
        set_backbone_trainable(model, "half")


# ----------------------------------------------------------------------------------------------
# Training


def square_data(n=16, seed=0):
    """Bright squares on dark noise; mask 1 + channel of the square, 0 elsewhere, some pixels ignored."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (n, 3, SIZE, SIZE), generator=g).to(torch.uint8)
    target = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    for i in range(n):
        x, y = torch.randint(0, SIZE // 2, (2,), generator=g).tolist()
        images[i, i % 2, y:y + 14, x:x + 14] = 220
        target[i, y:y + 14, x:x + 14] = 1 + i % 2
    target[:, 0, :] = 255
    return images, target


@pytest.mark.parametrize("head", ["linear", "decoder"])
def test_training_reduces_the_loss_and_beats_chance(head):
    torch.manual_seed(0)
    images, target = square_data()
    model = SegmentationModel(tiny_backbone("vit_tiny"), num_classes=3, head=head)
    set_backbone_trainable(model, "all")
    history = train_segmentation(model, images, target, epochs=6, batch_size=8, lr=3e-3, progress=False)
    assert len(history["loss"]) == 6
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    pred = predict_masks(model, images)
    assert pred.shape == target.shape and pred.dtype == torch.long
    assert mean_iou(pred, target, 3) > 0.3


def test_training_a_frozen_backbone_leaves_it_unchanged():
    images, target = square_data(8)
    model = SegmentationModel(tiny_backbone("resnet18"), num_classes=3)
    set_backbone_trainable(model, "frozen")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train_segmentation(model, images, target, epochs=1, batch_size=4, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


# ----------------------------------------------------------------------------------------------
# Random resized crops of (image, mask) pairs


def column_index_pair(n=4, size=SIZE):
    """Images whose every pixel holds its column index; masks whose every pixel holds its column index // 8."""
    columns = torch.arange(size, dtype=torch.float32).expand(n, 1, size, size)
    return columns.repeat(1, 3, 1, 1), (columns[:, 0] // 8).long()


def test_crop_covers_the_drawn_area_fraction():
    x, _ = column_index_pair()
    generator = torch.Generator().manual_seed(0)
    out, _ = random_resized_crop(x, torch.zeros(4, SIZE, SIZE, dtype=torch.long), (0.25, 0.25), generator, ratio=1.0)
    spans = out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2))  # columns seen: half the side, less one pixel
    assert torch.allclose(spans, torch.full((4,), SIZE / 2 - 1.0), atol=0.6)


def test_crop_moves_image_and_mask_together_and_keeps_mask_values():
    x, y = column_index_pair()
    y[:, :, :3] = 255  # an ignored strip
    out_x, out_y = random_resized_crop(x, y, (0.3, 1.0), torch.Generator().manual_seed(1))
    assert out_y.dtype == torch.long and set(out_y.unique().tolist()) <= {0, 1, 2, 3, 255}
    counted = out_y != 255
    # nearest mask value and bilinear column agree away from the edges between strips
    agree = (out_y[counted] == (out_x[:, 0][counted] // 8).long()).float().mean()
    assert agree > 0.9
    again = random_resized_crop(x, y, (0.3, 1.0), torch.Generator().manual_seed(1))
    assert torch.equal(again[0], out_x) and torch.equal(again[1], out_y)


def test_training_with_crops_and_cosine_runs_and_checks_the_scale():
    images, target = square_data(8)
    model = SegmentationModel(tiny_backbone("resnet18"), num_classes=3)
    history = train_segmentation(model, images, target, epochs=2, batch_size=4, crop_scale=(0.5, 1.0), cosine=True,
                                 progress=False)
    assert len(history["loss"]) == 2
    with pytest.raises(ValueError, match="crop_scale"):
        train_segmentation(model, images, target, epochs=1, crop_scale=(0.0, 1.0), progress=False)


def test_a_dry_run_predicts_the_first_masks_and_repeats_them(monkeypatch):
    """COURSEKIT_DRY_RUN=1 (coursekit.dry_run): the model sees at most MAX_EVAL_IMAGES images; every image
    still gets a mask (that of the image MAX_EVAL_IMAGES before it), so mean_iou reads the whole split."""
    from coursekit import dry_run

    torch.manual_seed(0)
    images, target = square_data(n=10)
    model = SegmentationModel(tiny_backbone("resnet18"), num_classes=3, head="linear")
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    monkeypatch.setattr(dry_run, "MAX_EVAL_IMAGES", 4)
    pred = predict_masks(model, images, batch_size=3)
    assert seen == [3, 1] and pred.shape == target.shape
    assert torch.equal(pred[4:8], pred[:4]) and torch.equal(pred[8:], pred[:2])
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "0")
    seen.clear()
    assert predict_masks(model, images, batch_size=3).shape == target.shape and seen == [3, 3, 3, 1]
