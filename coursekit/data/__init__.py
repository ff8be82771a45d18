"""Datasets as in-memory uint8 tensors: ``load_images(name, split, n, image_size, seed)`` -> ``ImageSet``.

| name | splits | source |
|---|---|---|
| ``shapes`` | train, test | procedural (``shapes.py``): labels, boxes and masks, offline |
| ``scenes`` | train, test, unlabeled | procedural (``scenes.py``): objects in clutter, boxes and masks, offline |
| ``fashion_mnist`` | train, test | local IDX files or a download (``fashion_mnist.py``) |
| ``cifar10`` | train, test | torchvision download (``downloads.py``) |
| ``stl10`` | train, test, unlabeled | torchvision download |
| ``pets`` | train, test | Oxford-IIIT Pet with segmentation masks, torchvision download |

Files live in ``data_root()`` (``$COURSEKIT_DATA`` or ``~/.cache/coursekit/data``). A dataset that
must be downloaded and can't be raises ``DatasetUnavailableError``; nothing is silently swapped, except
in a dry run (``COURSEKIT_DRY_RUN=1``, ``coursekit.dry_run``), which downloads nothing and gives a
missing dataset random stand-in images of its shape and classes (``standin.py``).
``ImageSet`` lives in ``images.py``, ``stratified_subset`` in ``subsets.py``, box formats in
``boxes.py``; ``export_yolo`` writes shapes in the
ultralytics YOLO layout (``yolo_export.py``), ``export_coco`` as COCO JSON and ``coco_to_yolo``
converts COCO with ultralytics' converter (``coco.py``). Your own images: ``folder.ImageFolder``
streams a folder from disk (a Dataset for ``engine.fit``; ``coursekit pretrain --data``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from coursekit import dry_run

from .downloads import DatasetDamagedError, DatasetUnavailableError, data_root, load_cifar10, load_pets, load_stl10
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .shapes import SHAPE_CLASSES, make_shapes
from .scenes import SCENE_CLASSES, make_scenes
from .images import ImageSet, resize_images
from .subsets import seeded_first, stratified_subset
from .yolo_export import export_yolo
from .coco import coco_to_yolo, export_coco
from .standin import standin

SPLITS = {
    "shapes": ("train", "test"),
    "scenes": ("train", "test", "unlabeled"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "stl10": ("train", "test", "unlabeled"),
    "pets": ("train", "test"),
}
DATASET_NAMES = tuple(SPLITS)
SHAPES_SPLIT_SIZES = {"train": 10000, "test": 2000}  # shapes images drawn when n is None
SHAPES_DEFAULT_SIZE = 32
SCENES_SPLIT_SIZES = {"train": 10000, "test": 2000, "unlabeled": 20000}  # scenes drawn when n is None
SCENES_DEFAULT_SIZE = 64
_IN_MEMORY_LOADERS = {"fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10, "stl10": load_stl10}


def _check_name_and_split(name: str, split: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASET_NAMES)}.")
    if split not in SPLITS[name]:
        raise ValueError(f"Unknown split {split!r} for dataset {name!r}. Valid splits: {', '.join(SPLITS[name])}.")


def load_images(name: str, split: str = "train", n: int | None = None, image_size: int | None = None,
                seed: int = 0, root: str | Path | None = None) -> ImageSet:
    """Load a dataset split as an ``ImageSet`` of uint8 ``[N, 3, H, W]`` images on the CPU.

    Args:
        name: one of ``DATASET_NAMES``.
        split: one of ``SPLITS[name]``.
        n: number of images: the first ``n`` after a shuffle seeded by ``seed`` (all, shuffled, if None).
            For ``shapes``, ``n`` images are drawn (``SHAPES_SPLIT_SIZES[split]`` if None); train and
            test are drawn from different seeds. Likewise for ``scenes`` (``SCENES_SPLIT_SIZES``), whose
            ``unlabeled`` split (a third seed stream) has labels -1 and no boxes or masks.
        image_size: resize to ``image_size x image_size`` (bilinear, antialiased); None keeps the
            native size (shapes: 32, scenes: 64; both are drawn at the size asked). Required for
            ``pets``, whose photos come in many sizes.
        seed: picks the images (for shapes and scenes: draws them).
        root: data folder; default ``data_root()``.

    Raises:
        ValueError: unknown name or split (the message lists the valid ones), bad ``n``.
        DatasetUnavailableError: the files are missing and the download failed. In a dry run
            (``COURSEKIT_DRY_RUN``, ``coursekit.dry_run``) nothing is downloaded: missing files give
            random stand-in images of the split's shape and classes (``standin.py``), and every
            split keeps at most ``dry_run.MAX_IMAGES`` images.
    """
    _check_name_and_split(name, split)
    try:
        return _load(name, split, n, image_size, seed, root)
    except DatasetDamagedError:
        raise  # a damaged file is a real problem, dry run or not
    except DatasetUnavailableError:
        if not dry_run.is_dry_run():
            raise  # nothing is swapped in a real run
        return standin(name, split, n, image_size, seed)


def _load(name: str, split: str, n: int | None, image_size: int | None, seed: int, root) -> ImageSet:
    """The real split; in a dry run with at most ``dry_run.MAX_IMAGES`` images (the first of the
    same seeded order, so a capped split is a prefix of the real one)."""
    if name == "shapes":
        split_seed = 2 * seed + SPLITS["shapes"].index(split)
        count = dry_run.cap_count(SHAPES_SPLIT_SIZES[split] if n is None else n, split)
        return make_shapes(count, SHAPES_DEFAULT_SIZE if image_size is None else image_size, seed=split_seed)
    if name == "scenes":
        split_seed = 3 * seed + SPLITS["scenes"].index(split)
        count = dry_run.cap_count(SCENES_SPLIT_SIZES[split] if n is None else n, split)
        scenes = make_scenes(count, SCENES_DEFAULT_SIZE if image_size is None else image_size, seed=split_seed)
        if split == "unlabeled":
            scenes = ImageSet(scenes.images, torch.full((count,), -1, dtype=torch.long), scenes.classes)
        return scenes
    if name == "pets":
        if dry_run.is_dry_run():  # every split of Pets holds more than MAX_IMAGES
            n = dry_run.cap_count(dry_run.MAX_IMAGES if n is None else n, split)
        return load_pets(split, image_size, n=n, seed=seed, root=root)
    full = _IN_MEMORY_LOADERS[name](split, root)
    index = seeded_first(len(full), n, seed)
    picked = full.subset(index[:dry_run.cap_count(len(index), split)])
    if image_size is not None:
        picked.images = resize_images(picked.images, image_size)
    return picked


__all__ = [
    "DATASET_NAMES", "SPLITS", "SHAPE_CLASSES", "SCENE_CLASSES", "FASHION_MNIST_CLASSES", "ImageSet",
    "DatasetUnavailableError",
    "load_images", "make_shapes", "make_scenes", "data_root", "stratified_subset", "export_yolo", "resize_images",
    "export_coco", "coco_to_yolo",
]
