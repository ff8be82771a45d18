"""Datasets that must be downloaded (CIFAR-10, STL-10, Oxford-IIIT Pet), through torchvision.

All downloads go to one data folder, ``data_root()``: ``$COURSEKIT_DATA`` or ``~/.cache/coursekit/data``
(point it at Google Drive on Colab to keep the files across sessions). Files already there are used
as they are; missing ones are downloaded. When that fails (offline), a ``DatasetUnavailableError``
says what to do: this module never swaps in another dataset.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from coursekit import dry_run

from .images import ImageSet, resize_images
from .subsets import seeded_first

DATA_ENV = "COURSEKIT_DATA"
DOWNLOAD_TIMEOUT_S = 30  # per network operation, so that a dead connection fails instead of hanging


class DatasetUnavailableError(RuntimeError):
    """A dataset's files are missing and could not be downloaded."""


class DatasetDamagedError(DatasetUnavailableError):
    """A dataset file is there but damaged (truncated, corrupt, or not the file it is named after)."""


def data_root() -> Path:
    """The folder datasets are read from and downloaded to: ``$COURSEKIT_DATA`` or ``~/.cache/coursekit/data``."""
    configured = os.environ.get(DATA_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "coursekit" / "data"


def unavailable_error(dataset: str, folder: Path, cause: BaseException, hint: str = "") -> DatasetUnavailableError:
    """The error for a dataset whose files are missing: what was searched, how to get it, what to use offline."""
    return DatasetUnavailableError(
        f"Dataset {dataset!r} is not available: its files are missing from {folder} or fail torchvision's "
        f"checksum, and the download failed "
        f"({type(cause).__name__}: {cause}).\n"
        f"To get it: run again with internet access (it downloads into {folder}), or copy the files there, "
        f"or set {DATA_ENV} to a folder that holds them{hint}.\n"
        f"Offline, use another profile: COURSEKIT_PROFILE=demo uses Fashion-MNIST from local files, "
        f"COURSEKIT_PROFILE=smoke uses the procedural shapes."
    )


@contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def open_or_download(dataset: str, folder: Path, make: Callable[..., object], hint: str = "") -> object:
    """``make(download=False)`` when the files are there, else ``make(download=True)`` (never in a
    dry run, ``coursekit.dry_run``: it must not spend minutes and gigabytes on data it replaces).

    Raises:
        DatasetUnavailableError: the files are missing and the download failed (or was not tried:
            dry run).
    """
    try:
        return make(download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        if dry_run.is_dry_run():
            raise unavailable_error(dataset, folder, FileNotFoundError("a dry run downloads nothing"), hint) from error
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _network_timeout(DOWNLOAD_TIMEOUT_S):
            return make(download=True)
    except Exception as error:  # URLError, socket timeouts, HTTP errors, checksum failures...
        raise unavailable_error(dataset, folder, error, hint) from error


def _folder(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


def load_cifar10(split: str, root: str | Path | None = None) -> ImageSet:
    """CIFAR-10 ``train`` (50000) or ``test`` (10000): uint8 ``[N, 3, 32, 32]``, 10 classes."""
    from torchvision.datasets import CIFAR10

    folder = _folder(root)
    dataset = open_or_download("cifar10", folder, lambda download: CIFAR10(folder, train=split == "train", download=download))
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(dataset.targets, dtype=torch.long), list(dataset.classes))


def load_stl10(split: str, root: str | Path | None = None) -> ImageSet:
    """STL-10 ``train`` (5000), ``test`` (8000) or ``unlabeled`` (100000, labels -1): uint8 ``[N, 3, 96, 96]``."""
    from torchvision.datasets import STL10

    folder = _folder(root)
    dataset = open_or_download("stl10", folder, lambda download: STL10(folder, split=split, download=download))
    labels = torch.from_numpy(dataset.labels).long() if dataset.labels is not None else torch.full(
        (len(dataset.data),), -1, dtype=torch.long)
    return ImageSet(torch.from_numpy(dataset.data).contiguous(), labels, list(dataset.classes))


# Oxford-IIIT Pet trimap values -> ImageSet mask values (the pet gets its breed's class + 1).
PET_TRIMAP_FOREGROUND, PET_TRIMAP_BACKGROUND, PET_TRIMAP_BORDER = 1, 2, 3
IGNORE_INDEX = 255


def _pet_mask(trimap: Tensor, label: int) -> Tensor:
    """uint8 ``[h, w]`` trimap -> mask: 0 background, ``label + 1`` pet, 255 the uncertain border."""
    mask = torch.zeros_like(trimap)
    mask[trimap == PET_TRIMAP_FOREGROUND] = label + 1
    mask[trimap == PET_TRIMAP_BORDER] = IGNORE_INDEX
    return mask


def load_pets(split: str, image_size: int | None, n: int | None = None, seed: int = 0,
              root: str | Path | None = None) -> ImageSet:
    """Oxford-IIIT Pet ``train`` (the official trainval, 3680) or ``test`` (3669) with segmentation masks.

    Images come in many sizes, so ``image_size`` is required: every image is stretched to a square
    ``image_size`` (bilinear, antialiased; masks by nearest neighbour). Only the ``n`` images picked
    (first ``n`` after a shuffle seeded by ``seed``) are decoded.

    Returns:
        ``ImageSet`` with 37 breed classes and ``masks``: 0 = background, ``breed + 1`` = the pet,
        255 = the trimap's uncertain border (ignore it in losses and mIoU).
    """
    from torchvision.datasets import OxfordIIITPet
    from torchvision.transforms.functional import pil_to_tensor

    if image_size is None:
        raise ValueError("load_images('pets'): image_size is required (the photos come in many sizes); got None")
    folder = _folder(root)
    dataset = open_or_download("pets", folder, lambda download: OxfordIIITPet(
        folder, split="trainval" if split == "train" else "test",
        target_types=("category", "segmentation"), download=download))
    images, labels, masks = [], [], []
    for index in tqdm(seeded_first(len(dataset), n, seed).tolist(), desc="pets", leave=False):
        image, (label, trimap) = dataset[index]
        images.append(resize_images(pil_to_tensor(image)[None], image_size))
        mask = _pet_mask(pil_to_tensor(trimap)[0], label)
        masks.append(F.interpolate(mask[None, None].float(), size=(image_size, image_size), mode="nearest")[0, 0])
        labels.append(label)
    return ImageSet(torch.cat(images), torch.tensor(labels, dtype=torch.long), list(dataset.classes),
                    masks=torch.stack(masks).to(torch.uint8))
