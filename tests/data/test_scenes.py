"""coursekit.data.scenes: procedural multi-object scenes in clutter (the in-domain data of lessons 09-10):
determinism, splits, targets that agree with each other, what the pictures hold, the YOLO and COCO exports."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coursekit.data import SCENE_CLASSES, ImageSet, export_yolo, load_images, make_scenes
from coursekit.data import scenes as scenes_module
from coursekit.data.boxes import box_iou, yolo_to_xyxy
from coursekit.data.coco import export_coco


@pytest.fixture(scope="module")
def scenes() -> ImageSet:
    return make_scenes(256, seed=3)  # four whole blocks


def test_same_seed_same_scenes_other_seed_other_scenes_and_prefix_stable():
    first = make_scenes(80, seed=5)  # more than one block of images
    again = make_scenes(70, seed=5)  # the same seed: the same scenes, whatever the number asked
    assert torch.equal(again.images, first.images[:70]) and torch.equal(again.masks, first.masks[:70])
    assert torch.equal(again.instances, first.instances[:70])
    assert all(torch.equal(a, b) for a, b in zip(first.boxes, again.boxes))
    other = make_scenes(8, seed=6)
    assert (first.images[:8] != other.images).any(dim=(1, 2, 3)).all()  # every image differs


def test_splits_are_disjoint_and_unlabeled_has_no_targets():
    splits = {split: load_images("scenes", split, n=64, seed=0) for split in ("train", "test", "unlabeled")}
    seen = {}
    for split, data in splits.items():
        for image in data.images:
            key = image.numpy().tobytes()
            assert key not in seen, f"an image of {split} is also in {seen.get(key)}"
            seen[key] = split
    assert splits["train"].image_size == (64, 64)  # the default size
    assert torch.equal(splits["train"].images, load_images("scenes", "train", n=64, seed=0).images)
    assert not torch.equal(splits["train"].images, load_images("scenes", "train", n=64, seed=1).images)
    unlabeled = splits["unlabeled"]
    assert (unlabeled.labels == -1).all() and unlabeled.boxes is None and unlabeled.masks is None
    with pytest.raises(ValueError, match="Valid splits: train, test, unlabeled"):
        load_images("scenes", "validation")


def test_shapes_dtypes_and_value_ranges(scenes):
    assert scenes.classes == SCENE_CLASSES and len(SCENE_CLASSES) == 6
    assert scenes.images.shape == (256, 3, 64, 64) and scenes.images.dtype == torch.uint8
    assert scenes.masks.shape == scenes.instances.shape == (256, 64, 64)
    assert scenes.masks.dtype == scenes.instances.dtype == torch.uint8
    assert scenes.labels.dtype == torch.long and 0 <= scenes.labels.min() and scenes.labels.max() < 6
    assert set(torch.unique(scenes.masks).tolist()) <= set(range(7)) | {255}
    assert all(b.dtype == torch.float32 and b.shape == (len(l), 4) and l.dtype == torch.long
               for b, l in zip(scenes.boxes, scenes.box_labels))
    assert scenes.images.min() < 10 and scenes.images.max() > 245  # the whole range is used
    assert len(torch.unique(scenes.labels)) == 6 and len(torch.unique(torch.cat(scenes.box_labels))) == 6


@pytest.mark.parametrize("size", [32, 96, 128])
def test_other_sizes(size):
    data = make_scenes(8, image_size=size, seed=1)
    assert data.images.shape == (8, 3, size, size) and data.masks.shape == (8, size, size)
    _check_targets(data)


def _check_targets(data: ImageSet) -> None:
    height, width = data.image_size
    for mask, instances, boxes, labels, label in zip(data.masks, data.instances, data.boxes, data.box_labels,
                                                     data.labels):
        assert len(boxes) >= 1
        assert torch.equal((mask > 0) & (mask != 255), instances > 0)  # labeled pixels <=> a boxed object's
        assert (instances[mask == 255] == 0).all()
        assert instances.max() == len(boxes)
        areas = []
        for k, ((x1, y1, x2, y2), c) in enumerate(zip(boxes.long().tolist(), labels.tolist())):
            ys, xs = torch.nonzero(instances == k + 1, as_tuple=True)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)  # tight
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert (mask[instances == k + 1] == c + 1).all()  # class c's pixels are where a c is visible
            areas.append(len(xs))
        assert label == labels[torch.tensor(areas).argmax()]  # the class of the largest visible object


def test_boxes_masks_instances_and_labels_agree(scenes):
    _check_targets(scenes)


def test_several_objects_of_many_sizes_that_occlude_each_other(scenes):
    counts = torch.tensor([len(b) for b in scenes.boxes])
    assert counts.float().mean() > 2.8 and counts.max() >= 5 and counts.min() >= 1
    sides = torch.cat([torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for b in scenes.boxes]) / 64
    assert sides.min() < 0.12 and sides.max() > 0.38 and 0.12 < sides.median() < 0.3  # sizes 10% to 45%
    overlapping = sum(bool((box_iou(b, b) > 0).float().sum() > len(b)) for b in scenes.boxes)
    assert overlapping > 0.4 * len(scenes)  # boxes overlap in many scenes
    hidden = (scenes.masks == 255).any(dim=(1, 2)).sum()  # objects hidden too much to be labeled
    assert 0 < hidden < 0.2 * len(scenes)


def test_visibility_threshold_drops_hidden_objects():
    counts = {t: sum(len(b) for b in make_scenes(64, seed=2, min_visible=t).boxes) for t in (0.0, 0.3, 0.9)}
    assert counts[0.0] > counts[0.3] > counts[0.9] >= 64


def test_color_does_not_tell_the_class(scenes):
    colors, classes = [], []
    for image, instances, labels in zip(scenes.images, scenes.instances, scenes.box_labels):
        for k, c in enumerate(labels.tolist()):
            colors.append(image[:, instances == k + 1].float().mean(dim=1))
            classes.append(c)
    colors, classes = torch.stack(colors), torch.tensor(classes)
    per_class = torch.stack([colors[classes == c].mean(dim=0) for c in range(6)])
    assert (per_class.max(dim=0).values - per_class.min(dim=0).values).max() < 25
    assert colors.std(dim=0).min() > 50  # colors vary a lot within the data


def test_backgrounds_are_textured_not_flat(scenes):
    background = (scenes.masks == 0)[:, None].float()
    images = scenes.images.float()
    # 4 x 4 averages remove the pixel noise: what varies is gradients, texture and clutter
    pooled = F.avg_pool2d(images * background, 4) / F.avg_pool2d(background, 4).clamp(min=1e-6)
    full = F.avg_pool2d(background, 4) == 1
    spread = torch.stack([pooled[i][:, full[i, 0]].std(dim=1).mean() for i in range(len(images))])
    assert spread.min() > 8  # no flat background
    fine = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs()  # edges of texture and clutter
    strong_edges = ((fine > 60) & (background[:, :, :, 1:] > 0) & (background[:, :, :, :-1] > 0)).sum(dim=(1, 2, 3))
    assert (strong_edges > 20).float().mean() > 0.9  # clutter and textures have sharp edges


def test_drawn_in_blocks_not_image_by_image(monkeypatch):
    calls = []
    draw = scenes_module._draw_block
    monkeypatch.setattr(scenes_module, "_draw_block", lambda *args, **kw: calls.append(args[0]) or draw(*args, **kw))
    make_scenes(130, seed=0)
    assert calls == [scenes_module.BLOCK] * 3  # vectorized: one call per 64 images


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        make_scenes(4, image_size=16)
    with pytest.raises(ValueError, match="num_objects"):
        make_scenes(4, num_objects=(3, 1))
    with pytest.raises(ValueError, match="size_range"):
        make_scenes(4, size_range=(0.2, 1.0))
    with pytest.raises(ValueError, match="min_visible"):
        make_scenes(4, min_visible=1.5)


def test_export_yolo_round_trip(tmp_path):
    data = make_scenes(12, image_size=96, seed=4)
    data_yaml = export_yolo(data, tmp_path / "det", task="detect", val_fraction=0.25)
    assert all(f'"{name}"' in data_yaml.read_text() for name in SCENE_CLASSES)
    label_files = sorted((tmp_path / "det" / "labels").glob("*/*.txt"))
    assert len(label_files) == 12 and len(list((tmp_path / "det" / "images" / "val").glob("*.png"))) == 3
    for path in label_files:
        i = int(path.stem)
        rows = torch.tensor([[float(v) for v in line.split()] for line in path.read_text().splitlines()])
        assert torch.equal(rows[:, 0].long(), data.box_labels[i])
        assert torch.allclose(yolo_to_xyxy(rows[:, 1:], 96, 96), data.boxes[i], atol=1e-3)
    export_yolo(data, tmp_path / "seg", task="segment")
    for path in (tmp_path / "seg" / "labels").glob("*/*.txt"):
        lines = path.read_text().splitlines()
        assert len(lines) == len(data.boxes[int(path.stem)])
        for line in lines:
            values = [float(v) for v in line.split()]
            assert len(values) >= 7 and len(values) % 2 == 1 and 0 <= min(values[1:]) and max(values[1:]) <= 1


def test_export_coco_counts_every_box(tmp_path):
    data = make_scenes(10, seed=7)
    paths = export_coco(data, Path(tmp_path) / "coco")
    annotations = [a for path in paths.values() for a in json.loads(path.read_text())["annotations"]]
    assert len(annotations) == sum(len(b) for b in data.boxes)
    assert all(a["area"] > 0 and len(a["segmentation"][0]) >= 6 for a in annotations)
