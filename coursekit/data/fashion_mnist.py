"""Fashion-MNIST from its IDX files (gzipped or not), found locally or downloaded.

Searched in order: ``$COURSEKIT_DATA/fashion-mnist``, the data folder itself, torchvision's download
folder inside it (``FashionMNIST/raw``), and Debian's ``dataset-fashion-mnist`` package folder
``/usr/share/datasets/fashion-mnist``. When none holds the files, torchvision downloads them into
the data folder.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .downloads import data_root, open_or_download
from .images import ImageSet

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> Tensor:
    """Read an IDX file (``.gz`` or raw): magic ``0 0 dtype ndim``, ``ndim`` big-endian sizes, the data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    values = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    return torch.from_numpy(values.astype(values.dtype.newbyteorder("="), copy=True).reshape(shape))


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_split(folders: list[Path], split: str) -> tuple[Path, Path] | None:
    """(images, labels) files of ``split`` in the first folder that holds both."""
    prefix = _FILE_PREFIX[split]
    for folder in folders:
        images = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            return images, labels
    return None


def search_folders(root: Path) -> list[Path]:
    """Where Fashion-MNIST files are looked for, in order."""
    return [root / "fashion-mnist", root, root / "FashionMNIST" / "raw", DEBIAN_FOLDER]


def load_fashion_mnist(split: str, root: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST ``train`` (60000) or ``test`` (10000): uint8 ``[N, 3, 28, 28]`` (gray repeated), 10 classes.

    Raises:
        DatasetUnavailableError: no local files and the download failed.
    """
    folder = Path(root).expanduser() if root is not None else data_root()
    found = _find_split(search_folders(folder), split)
    if found is None:
        from torchvision.datasets import FashionMNIST

        open_or_download("fashion_mnist", folder, lambda download: FashionMNIST(folder, download=download),
                         hint=f", or install Debian's dataset-fashion-mnist package (files in {DEBIAN_FOLDER})")
        found = _find_split(search_folders(folder), split)
    images, labels = (read_idx(path) for path in found)
    return ImageSet(images[:, None].expand(-1, 3, -1, -1).contiguous(), labels.long(), list(FASHION_MNIST_CLASSES))
