"""Stand-in data of the dry run (coursekit/data/standin.py) through load_images, as a lesson reaches it.

The expected values are the datasets' own facts (their documentation and torchvision's loaders),
written out here, not read from the module's table: a stand-in must look like the real split.
"""
from __future__ import annotations

import pytest
import torch

from coursekit import dry_run
from coursekit.data import DatasetUnavailableError, load_images

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10 = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@pytest.fixture
def offline_dry_run(monkeypatch, tmp_path):
    """A dry run with an empty data folder: every downloaded dataset is missing."""
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "1")
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "data"))


@pytest.mark.parametrize("name, split, side, classes, labeled", [
    ("cifar10", "train", 32, CIFAR10, True), ("cifar10", "test", 32, CIFAR10, True),
    ("stl10", "train", 96, STL10, True), ("stl10", "test", 96, STL10, True), ("stl10", "unlabeled", 96, STL10, False),
])
def test_a_standin_has_the_native_shape_dtype_and_classes(offline_dry_run, name, split, side, classes, labeled):
    data = load_images(name, split, n=50, seed=3)
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (50, 3, side, side)
    assert data.classes == classes
    assert data.labels.dtype == torch.long and data.labels.shape == (50,)
    if labeled:
        assert set(data.labels.tolist()) == set(range(10))  # 50 images: every class present
    else:
        assert (data.labels == -1).all()
    assert data.masks is None and data.boxes is None
    again = load_images(name, split, n=50, seed=3)
    assert torch.equal(data.images, again.images) and torch.equal(data.labels, again.labels)  # seeded
    assert not torch.equal(data.images, load_images(name, split, n=50, seed=4).images)


def test_pets_standin_has_breeds_and_trimap_masks(offline_dry_run):
    data = load_images("pets", "train", n=40, image_size=64)
    assert tuple(data.images.shape) == (40, 3, 64, 64) and data.images.dtype == torch.uint8
    assert len(data.classes) == 37 and data.classes[0] == "Abyssinian" and data.classes[-1] == "Yorkshire Terrier"
    assert "Staffordshire Bull Terrier" in data.classes and "German Shorthaired" in data.classes
    assert data.masks.dtype == torch.uint8 and tuple(data.masks.shape) == (40, 64, 64)
    for mask, label in zip(data.masks, data.labels.tolist()):
        assert set(mask.unique().tolist()) == {0, label + 1, 255}  # background, the pet, the trimap border
    with pytest.raises(ValueError, match="image_size is required"):
        load_images("pets", "test", n=4)


def test_a_standin_is_resized_as_the_real_split_and_capped(offline_dry_run):
    assert tuple(load_images("stl10", "train", n=8, image_size=32).images.shape) == (8, 3, 32, 32)
    assert len(load_images("cifar10", "train")) == dry_run.MAX_IMAGES  # all 50000, capped
    assert len(load_images("cifar10", "test")) == dry_run.MAX_TEST_IMAGES < dry_run.MAX_IMAGES  # only evaluated
    assert len(load_images("pets", "test", n=500, image_size=32)) == dry_run.MAX_TEST_IMAGES
    with pytest.raises(ValueError, match="between 1 and 10000"):
        load_images("cifar10", "test", n=10001)  # more than the split holds: refused as for real data


def test_local_datasets_stay_real_and_are_capped(offline_dry_run, monkeypatch):
    real = load_images("shapes", "train", n=dry_run.MAX_IMAGES + 10)
    assert len(real) == dry_run.MAX_IMAGES and real.boxes is not None and real.masks is not None
    assert len(load_images("shapes", "test", n=dry_run.MAX_IMAGES)) == dry_run.MAX_TEST_IMAGES
    monkeypatch.delenv("COURSEKIT_DRY_RUN")
    assert torch.equal(real.images, load_images("shapes", "train", n=dry_run.MAX_IMAGES).images)


def test_without_the_variable_a_missing_dataset_still_raises(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSEKIT_DRY_RUN", raising=False)
    monkeypatch.setattr("coursekit.data.downloads.DOWNLOAD_TIMEOUT_S", 5)  # never hang on a dead network
    with pytest.raises(DatasetUnavailableError):
        load_images("cifar10", "test", n=4, root=tmp_path / "data")
    assert len(load_images("shapes", "train", n=dry_run.MAX_IMAGES + 10)) == dry_run.MAX_IMAGES + 10  # no cap


def test_fashion_mnist_standin_is_gray_28px_with_its_ten_classes(offline_dry_run):
    # here Fashion-MNIST's files are on disk (so load_images reads them); a machine without them gets this
    from coursekit.data.standin import standin

    data = standin("fashion_mnist", "test", n=20, image_size=None)
    assert tuple(data.images.shape) == (20, 3, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(data.images[:, 0], data.images[:, 2])
    assert data.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                            "Bag", "Ankle boot"]
