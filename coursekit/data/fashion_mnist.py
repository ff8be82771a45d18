"""Fashion-MNIST from its IDX files (gzipped or not), found locally or downloaded.

Searched in order: ``$COURSEKIT_DATA/fashion-mnist``, the data folder itself, torchvision's download
folder inside it (``FashionMNIST/raw``), and Debian's ``dataset-fashion-mnist`` package folder
``/usr/share/datasets/fashion-mnist``. When none holds the files, torchvision downloads them into
the data folder.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .downloads import DatasetDamagedError, data_root, open_or_download
from .images import ImageSet

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
_FILE_PREFIX = {"train": "train", "test": "t10k"}
SPLIT_SIZES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def damaged_error(path: Path, problem: str) -> DatasetDamagedError:
    """The error for a damaged Fashion-MNIST file: which file, what is wrong, how to get a good one."""
    return DatasetDamagedError(
        f"Fashion-MNIST file {path} is damaged: {problem}. Delete it, then copy the four files from "
        f"{DEBIAN_FOLDER} (Debian's dataset-fashion-mnist package) into its folder, or run with internet "
        f"access so that torchvision downloads them again."
    )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it ends in .gz; a damaged gzip stream is a DatasetDamagedError."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except EOFError:
        raise damaged_error(path, "the gzip stream ends early (the file is truncated)") from None
    except gzip.BadGzipFile:
        raise damaged_error(path, "it is not a gzip file although its name ends in .gz") from None
    except zlib.error as error:
        raise damaged_error(path, f"its compressed data is corrupt ({error})") from None


def read_idx(path: Path) -> Tensor:
    """Read an IDX file (``.gz`` or raw): magic ``0 0 dtype ndim``, ``ndim`` big-endian sizes, the data.

    Raises:
        DatasetDamagedError: the file is truncated, corrupt, or not an IDX file (naming the file).
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise damaged_error(path, f"it is not an IDX file (its first bytes are {raw[:4]!r})")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise damaged_error(path, f"its IDX header is cut short ({len(raw)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    data_bytes = len(raw) - 4 - 4 * ndim
    if data_bytes != expected:
        raise damaged_error(path, f"its header announces shape {list(shape)} ({expected} bytes of data) but it "
                                  f"holds {data_bytes} bytes (truncated or padded)")
    values = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True).reshape(shape))


def _check_split(split: str, images_path: Path, images: Tensor, labels_path: Path, labels: Tensor) -> None:
    """Refuse files that read well but are not Fashion-MNIST's ``split`` (other sizes, other labels)."""
    count = SPLIT_SIZES[split]
    if tuple(images.shape) != (count, *IMAGE_SHAPE) or images.dtype != torch.uint8:
        raise damaged_error(images_path, f"it holds {images.dtype} images of shape {list(images.shape)}, not the "
                                         f"{split} split's uint8 [{count}, 28, 28]")
    if tuple(labels.shape) != (count,):
        raise damaged_error(labels_path, f"it holds labels of shape {list(labels.shape)}, not the {split} "
                                         f"split's [{count}]")
    if int(labels.max()) >= len(FASHION_MNIST_CLASSES) or int(labels.min()) < 0:
        raise damaged_error(labels_path, f"its labels span [{int(labels.min())}, {int(labels.max())}], not the "
                                         f"classes 0-9")


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
        DatasetDamagedError: a file is truncated, corrupt or not the split's (its path in the message).
    """
    folder = Path(root).expanduser() if root is not None else data_root()
    found = _find_split(search_folders(folder), split)
    if found is None:
        from torchvision.datasets import FashionMNIST

        open_or_download("fashion_mnist", folder, lambda download: FashionMNIST(folder, download=download),
                         hint=f", or install Debian's dataset-fashion-mnist package (files in {DEBIAN_FOLDER})")
        found = _find_split(search_folders(folder), split)
    images_path, labels_path = found
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_split(split, images_path, images, labels_path, labels)
    return ImageSet(images[:, None].expand(-1, 3, -1, -1).contiguous(), labels.long(), list(FASHION_MNIST_CLASSES))
