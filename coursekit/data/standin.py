"""Random stand-ins for the downloaded datasets, for the dry run only (``coursekit.dry_run``).

Why: the full profile's datasets (CIFAR-10, STL-10, Oxford-IIIT Pet) cannot be downloaded on an
offline machine, yet the dry run must run every line that reads them. A stand-in has what the code
can depend on, taken from the real split: the native image shape and dtype, the class names (so the
number of classes), labels -1 for an unlabeled split, segmentation masks with the real mask values
where the split has them, and the split's size (``n`` larger than it is refused as for the real
data). Its pixels and labels are seeded noise: the numbers a dry run prints mean nothing.
``load_images`` calls ``standin`` only in a dry run and only when the files are missing.

One table, ``NATIVE``, holds the facts of each dataset (as the loaders in ``downloads.py`` and
``fashion_mnist.py`` return them); ``dry_run.MAX_IMAGES`` caps the images of every split.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from coursekit import dry_run

from .downloads import IGNORE_INDEX
from .fashion_mnist import FASHION_MNIST_CLASSES
from .images import ImageSet, resize_images
from .subsets import seeded_first

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
# torchvision's OxfordIIITPet.classes: the breeds of the annotation files, title-cased, by class id
PET_CLASSES = (
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel", "English Setter",
    "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon",
    "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue",
    "Saint Bernard", "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier",
    "Wheaten Terrier", "Yorkshire Terrier",
)


@dataclass(frozen=True)
class Native:
    """What a downloaded dataset's split looks like when loaded.

    Attributes:
        size: ``(H, W)`` of its images; None when the photos come in many sizes (Pets: the loader
            stretches each to ``image_size``, so the stand-in is drawn at that size).
        classes: class names, in label order.
        splits: split -> number of images.
        unlabeled: splits whose labels are all -1.
        masks: whether the split has segmentation masks (0 background, class + 1, 255 ignore).
    """

    size: tuple[int, int] | None
    classes: tuple[str, ...]
    splits: dict
    unlabeled: tuple[str, ...] = ()
    masks: bool = False


NATIVE = {
    "cifar10": Native((32, 32), CIFAR10_CLASSES, {"train": 50000, "test": 10000}),
    "stl10": Native((96, 96), STL10_CLASSES, {"train": 5000, "test": 8000, "unlabeled": 100000},
                    unlabeled=("unlabeled",)),
    "pets": Native(None, PET_CLASSES, {"train": 3680, "test": 3669}, masks=True),
    "fashion_mnist": Native((28, 28), tuple(FASHION_MNIST_CLASSES), {"train": 60000, "test": 10000}),
}


def _generator(name: str, split: str, seed: int) -> torch.Generator:
    """A generator seeded by the dataset, the split and ``seed``: the same stand-in every time."""
    return torch.Generator().manual_seed(zlib.crc32(f"{name}/{split}".encode()) * 1000 + seed)


def _pet_masks(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``[N, size, size]`` masks as ``load_pets`` makes them: a random box of the pet's
    ``label + 1`` inside a 255 border (the trimap's uncertain ring), 0 around it."""
    masks = torch.zeros(len(labels), size, size, dtype=torch.uint8)
    corners = torch.randint(0, max(1, size // 4), (len(labels), 2), generator=generator)
    sides = torch.randint(max(2, size // 2), size + 1, (len(labels), 2), generator=generator)
    border = max(1, size // 32)
    for mask, label, (top, left), (height, width) in zip(masks, labels.tolist(), corners.tolist(), sides.tolist()):
        bottom, right = min(size, top + height), min(size, left + width)
        mask[top:bottom, left:right] = IGNORE_INDEX
        mask[top + border:bottom - border, left + border:right - border] = label + 1
    return masks


def standin(name: str, split: str, n: int | None, image_size: int | None, seed: int = 0) -> ImageSet:
    """Random images standing in for ``name``'s ``split``: its native shape, uint8, its classes,
    balanced labels (every class present once there are as many images; -1 for an unlabeled split),
    masks where it has them; at most ``dry_run.MAX_IMAGES`` images (``MAX_TEST_IMAGES`` for test), resized to ``image_size`` as the
    real loader would.

    Raises:
        ValueError: ``n`` outside 1..the split's size (as the real loader), or Pets without ``image_size``.
    """
    native = NATIVE[name]
    count = len(seeded_first(native.splits[split], n, seed))
    count = dry_run.cap_count(count, split)
    if native.size is None and image_size is None:
        raise ValueError(f"load_images({name!r}): image_size is required (the photos come in many sizes); got None")
    height, width = native.size if native.size is not None else (image_size, image_size)
    generator = _generator(name, split, seed)
    images = torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)
    if name == "fashion_mnist":  # gray, repeated to 3 channels as the loader does
        images = images[:, :1].expand(-1, 3, -1, -1).contiguous()
    num_classes = len(native.classes)
    if split in native.unlabeled:
        labels = torch.full((count,), -1, dtype=torch.long)
    else:
        labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    masks = _pet_masks(labels, height, generator) if native.masks else None
    if image_size is not None:
        images = resize_images(images, image_size)
    return ImageSet(images, labels, list(native.classes), masks=masks)
