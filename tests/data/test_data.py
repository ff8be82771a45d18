"""coursekit.data: procedural shapes, Fashion-MNIST from the Debian files, the offline error,
stratified subsets and the YOLO export (read and trained on by ultralytics)."""
from pathlib import Path

import pytest
import torch

from coursekit.data import (DatasetUnavailableError, ImageSet, export_yolo, load_images, make_shapes,
                            stratified_subset)
from coursekit.data.fashion_mnist import DEBIAN_FOLDER

# ----------------------------------------------------------------------------------------------
# Shapes


@pytest.fixture(scope="module")
def shapes() -> ImageSet:
    return make_shapes(64, image_size=40, seed=3, num_objects=(1, 3))


def test_shapes_are_deterministic_and_prefix_stable():
    first = make_shapes(100, seed=7)  # more than one block of images
    assert torch.equal(first.images, make_shapes(100, seed=7).images)
    assert not torch.equal(first.images, make_shapes(100, seed=8).images)
    fewer = make_shapes(70, seed=7)  # the first n images do not depend on how many are drawn
    assert torch.equal(fewer.images, first.images[:70]) and torch.equal(fewer.masks, first.masks[:70])


def test_shapes_shapes_dtypes_and_labels(shapes):
    assert shapes.images.shape == (64, 3, 40, 40) and shapes.images.dtype == torch.uint8
    assert shapes.labels.dtype == torch.long and shapes.labels.min() >= 0
    assert shapes.labels.max() < len(shapes.classes) >= 3
    assert all(len(labels) == len(boxes) >= 1 for labels, boxes in zip(shapes.box_labels, shapes.boxes))
    assert len(torch.unique(torch.cat(shapes.box_labels))) == len(shapes.classes)


def test_boxes_inside_images_and_tight_around_their_pixels(shapes):
    for boxes, instances in zip(shapes.boxes, shapes.instances):
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 40).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        for k, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            ys, xs = torch.nonzero(instances == k + 1, as_tuple=True)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_masks_agree_with_instances_boxes_and_labels(shapes):
    for mask, instances, labels, image_label in zip(shapes.masks, shapes.instances, shapes.box_labels, shapes.labels):
        assert torch.equal(mask > 0, instances > 0)
        areas = torch.stack([(instances == k + 1).sum() for k in range(len(labels))])
        for k, label in enumerate(labels.tolist()):
            assert (mask[instances == k + 1] == label + 1).all()
        assert image_label == labels[areas.argmax()]  # the class of the largest object


def test_single_object_classes_are_balanced_and_not_told_by_color():
    data = make_shapes(800, seed=0)
    counts = torch.bincount(data.labels, minlength=4)
    assert counts.min() > 150
    object_color = torch.stack([img[:, m > 0].float().mean(dim=1) for img, m in zip(data.images, data.masks)])
    per_class_mean = torch.stack([object_color[data.labels == c].mean(dim=0) for c in range(4)])
    assert (per_class_mean.max(dim=0).values - per_class_mean.min(dim=0).values).max() < 25


def test_make_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_objects"):
        make_shapes(4, num_objects=(3, 1))
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(4, image_size=4)


def test_load_images_shapes_splits_and_errors():
    train, test = load_images("shapes", "train", n=16, seed=0), load_images("shapes", "test", n=16, seed=0)
    assert len(train) == 16 and train.image_size == (32, 32)
    assert not torch.equal(train.images, test.images)
    with pytest.raises(ValueError, match="Valid names: .*fashion_mnist"):
        load_images("imagenet")
    with pytest.raises(ValueError, match="Valid splits: train, test, unlabeled"):
        load_images("stl10", "validation")


def test_imageset_subset_and_to(shapes):
    picked = shapes.subset([5, 2])
    assert torch.equal(picked.images[1], shapes.images[2]) and torch.equal(picked.boxes[0], shapes.boxes[5])
    assert torch.equal(picked.to("cpu").masks, shapes.masks[[5, 2]])
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(shapes.images.float(), shapes.labels, shapes.classes)


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST and downloads


@pytest.mark.skipif(not (DEBIAN_FOLDER / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Debian's dataset-fashion-mnist files are not in {DEBIAN_FOLDER}")
def test_fashion_mnist_from_debian_files(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))  # empty: the Debian folder must be found
    train, test = load_images("fashion_mnist", "train"), load_images("fashion_mnist", "test")
    assert train.images.shape == (60000, 3, 28, 28) and test.images.shape == (10000, 3, 28, 28)
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # gray repeated to 3 channels
    mean = train.images[:, 0].float().mean() / 255
    assert 0.25 < mean < 0.33  # Fashion-MNIST's pixel mean is 0.286
    small = load_images("fashion_mnist", "test", n=50, image_size=32, seed=1)
    assert small.images.shape == (50, 3, 32, 32)
    assert torch.equal(small.labels, load_images("fashion_mnist", "test", n=50, seed=1).labels)


def test_missing_download_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("coursekit.data.downloads.DOWNLOAD_TIMEOUT_S", 5)  # never hang on a dead network
    empty = tmp_path / "data"
    with pytest.raises(DatasetUnavailableError) as error:
        load_images("cifar10", "train", root=empty)
    message = str(error.value)
    assert "'cifar10'" in message and str(empty) in message
    assert "COURSEKIT_DATA" in message and "COURSEKIT_PROFILE=demo" in message and "smoke" in message
    assert isinstance(error.value, RuntimeError)


# ----------------------------------------------------------------------------------------------
# Stratified subsets


def test_stratified_subset_properties():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3 + [4] * 17)
    picked = stratified_subset(labels, 0.1, seed=0)
    assert len(torch.unique(picked)) == len(picked)
    for cls in torch.unique(labels):
        taken = (labels[picked] == cls).sum().item()
        assert taken >= 1 and abs(taken - 0.1 * (labels == cls).sum().item()) <= 1
    assert torch.equal(picked, stratified_subset(labels, 0.1, seed=0))
    assert not torch.equal(picked, stratified_subset(labels, 0.1, seed=1))
    assert torch.equal(stratified_subset(labels, 1.0, seed=3), torch.arange(len(labels)))
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0.0, seed=0)


# ----------------------------------------------------------------------------------------------
# YOLO export


def _read_labels(folder: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for path in sorted(folder.glob("*.txt"))
            for line in path.read_text().splitlines()]


def test_export_yolo_layout_and_labels(tmp_path, shapes):
    data_yaml = export_yolo(shapes, tmp_path / "det", task="detect", val_fraction=0.25)
    assert data_yaml.name == "data.yaml" and "names:" in data_yaml.read_text()
    assert len(list((tmp_path / "det/images/val").glob("*.png"))) == 16
    rows = _read_labels(tmp_path / "det/labels/train") + _read_labels(tmp_path / "det/labels/val")
    assert len(rows) == sum(len(b) for b in shapes.boxes)
    assert all(len(r) == 5 and 0 < r[3] <= 1 and 0 < r[4] <= 1 for r in rows)
    export_yolo(shapes, tmp_path / "seg", task="segment")
    polygons = _read_labels(tmp_path / "seg/labels/train")
    assert all(len(p) >= 7 and len(p) % 2 == 1 and 0 <= min(p[1:]) and max(p[1:]) <= 1 for p in polygons)



def test_export_yolo_with_a_separate_val_set(tmp_path, shapes):
    train, val = shapes.subset(list(range(10))), shapes.subset(list(range(10, 16)))
    export_yolo(train, tmp_path / "det", task="detect", val=val)
    assert len(list((tmp_path / "det/images/train").glob("*.png"))) == 10
    assert len(list((tmp_path / "det/images/val").glob("*.png"))) == 6
    assert len(_read_labels(tmp_path / "det/labels/val")) == sum(len(b) for b in val.boxes)
    # the first val image's label file holds its own boxes, normalized
    first = [[float(v) for v in line.split()] for line in (tmp_path / "det/labels/val/000000.txt").read_text().splitlines()]
    side = val.images.shape[-1]
    x1, y1, x2, y2 = val.boxes[0][0].tolist()
    assert first[0][0] == int(val.box_labels[0][0])
    assert first[0][1:] == pytest.approx([(x1 + x2) / 2 / side, (y1 + y2) / 2 / side, (x2 - x1) / side, (y2 - y1) / side],
                                         abs=1e-5)
    unlabeled = ImageSet(images=val.images, labels=val.labels, classes=val.classes)
    with pytest.raises(ValueError, match="val has no boxes"):
        export_yolo(train, tmp_path / "bad", val=unlabeled)

@pytest.mark.slow
@pytest.mark.parametrize("task, model", [("detect", "yolo11n.yaml"), ("segment", "yolo11n-seg.yaml")])
def test_ultralytics_trains_one_epoch_on_the_export(tmp_path, monkeypatch, task, model):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # anything ultralytics writes next to the working folder stays in tmp
    ultralytics = pytest.importorskip("ultralytics")
    data_yaml = export_yolo({"n": 16, "image_size": 64, "num_objects": (1, 2)}, tmp_path / "data", task=task)
    yolo = ultralytics.YOLO(model)
    yolo.train(data=str(data_yaml), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False,
               amp=False, project=str(tmp_path / "runs"), name=task, verbose=False)
    assert (tmp_path / "runs" / task / "weights" / "last.pt").is_file()
