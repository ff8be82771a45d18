"""Your own images: a folder of JPEG/PNG/WebP files streamed from disk, one decoded image per item.

``ImageFolder(root, image_size)`` scans ``root`` once (nested folders, ``.jpg .jpeg .png .webp`` in
any letter case, sorted by relative path) and decodes nothing until an item is asked for:
``engine.fit`` hands it to a ``DataLoader`` whose workers decode and resize, and the device-side
views do the rest (as for in-memory images). Every entry point that reads a folder goes through
this class (``coursekit pretrain --data``, and so the lessons and exports of its runs).

Memory per file: the file list is a ``PathList``, the relative paths encoded one after the other in
one numpy byte array plus an array of offsets (about 35 bytes per file for paths like
``part_012/sub_1/003456.png``), and the scan (``walk_images``) sorts one folder's entries at a time
instead of the whole tree. A list of ``Path`` objects cost about 400 bytes per file, and the scan
(``rglob``'s set of every path, a sort key per path) peaked at about 550 (tracemalloc,
``tests/cli/test_folder_memory.py``); ``benchmarks/folder_memory.py`` measures the command's peak RSS.

Every item is uint8 ``[3, S, S]``:

- grayscale, palette, CMYK and RGBA images become RGB (alpha is dropped);
- the EXIF orientation of camera photos is applied;
- the shorter side is resized to ``S`` (bilinear, antialiased) and the center ``S x S`` is cut out,
  so no image is stretched; the random crops of the views then pick the parts to learn from.

Damaged files: the scan reads every file's signature and header and runs PIL's ``verify()`` (no decoding), which
catches files that are not images or whose structure is broken; those are skipped, counted and the
first few named (``skipped``, ``summary()``). A file that passes the scan but fails to decode (e.g. a
truncated JPEG) is found when it is loaded: the item is then the next image that decodes, so a
DataLoader worker never crashes and the same index always gives the same image; the failure is
counted in ``load_failures`` of the process that loaded it and warned about once per file.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError, WebPImagePlugin
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
NAMED_SKIPS = 5  # how many damaged files summary() names
# What PIL raises for files that are not images, are cut short or have broken structure.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def walk_images(root: str | Path) -> Iterator[str]:
    """Relative paths (``/``-separated) of the image files under ``root`` (any depth), by suffix
    (case-insensitive), in sorted order, one at a time.

    The order is that of sorting the whole list of relative paths, without ever holding it: each
    folder's entries are sorted on their own, a subfolder as its name followed by ``/`` (so that
    ``a.jpg`` comes before everything in ``a/``, as ``"a.jpg" < "a/b.jpg"``), and walked depth
    first. What is held at a time is the sorted entries of the folders on the way down, not the
    tree. As ``Path.rglob``: symbolic links to folders are not followed, to files they are;
    folders that cannot be read are passed over.
    """
    def entries(folder: str) -> list[tuple[str, bool]]:
        """(sort key, is a folder) of the folder's subfolders and image files."""
        found = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            found.append((entry.name + "/", True))
                        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                            found.append((entry.name, False))
                    except OSError:
                        continue
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            return []
        found.sort()
        return found

    root = os.fspath(root)
    stack = [("", iter(entries(root)))]  # (relative folder with its "/", its remaining entries)
    while stack:
        prefix, remaining = stack[-1]
        entry = next(remaining, None)
        if entry is None:
            stack.pop()
        elif entry[1]:
            stack.append((prefix + entry[0], iter(entries(os.path.join(root, prefix + entry[0])))))
        else:
            yield prefix + entry[0]


def find_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (any depth), by suffix (case-insensitive), sorted by relative path
    (``walk_images``), as a list of ``Path`` (``ImageFolder`` keeps them in a ``PathList`` instead)."""
    root = Path(root)
    return [root / relative for relative in walk_images(root)]


class PathList(Sequence):
    """Paths under one folder, stored compactly: their relative paths encoded (``os.fsencode``) one
    after the other in one numpy byte array, with an array of offsets: about the length of the
    relative path plus 8 bytes per file, where a list of ``Path`` objects costs several hundred
    bytes per file (each a Python object with its parts, its string, its hash). ``paths[i]`` is a
    fresh ``Path`` (``root / relative``); iteration and ``+`` (-> list) work as for a list.

    Give the relative paths to the constructor, or ``append`` them one by one and then ``freeze()``,
    which turns the growing buffers into numpy arrays (a DataLoader worker forked from the process
    shares their pages copy-on-write: reference counting never writes to them).
    """

    def __init__(self, root: str | Path, relative: Iterable[str] | None = None):
        self.root = Path(root)
        self._bytes, self._offsets = bytearray(), array("q", [0])  # path i: _bytes[_offsets[i]:_offsets[i + 1]]
        self._frozen = False
        if relative is not None:
            for path in relative:
                self.append(path)
            self.freeze()

    def append(self, relative: str) -> None:
        if self._frozen:
            raise RuntimeError("PathList is frozen")
        self._bytes += os.fsencode(relative)
        self._offsets.append(len(self._bytes))

    def freeze(self) -> "PathList":
        """No more ``append``: the buffers become numpy arrays (views of them, not copies)."""
        if not self._frozen:
            self._bytes = np.frombuffer(self._bytes, dtype=np.uint8)
            self._offsets = np.frombuffer(self._offsets, dtype=np.int64)
            self._frozen = True
        return self

    def relative(self, index: int) -> str:
        """The ``/``-separated path of item ``index`` relative to ``root``."""
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"PathList index {index} out of range ({count} paths)")
        index %= count
        return os.fsdecode(bytes(self._bytes[self._offsets[index]:self._offsets[index + 1]]))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.root / self.relative(int(index))

    def __iter__(self) -> Iterator[Path]:
        for index in range(len(self)):
            yield self[index]

    def __add__(self, other) -> list[Path]:
        return list(self) + list(other)

    def __eq__(self, other) -> bool:
        return isinstance(other, (PathList, list, tuple)) and len(self) == len(other) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PathList({str(self.root)!r}, {len(self)} paths)"

    @property
    def nbytes(self) -> int:
        """The bytes its arrays hold."""
        return len(self._bytes) + 8 * len(self._offsets)


def open_image(path: str | Path) -> Image.Image:
    """Open a JPEG, PNG or WebP file with PIL's decoder for the format its first bytes announce.

    Not ``Image.open``: importing ultralytics replaces it with a version that, for any file PIL
    cannot identify (a damaged one), installs and registers a HEIF plugin first. Raises
    ``UnidentifiedImageError`` for other bytes, one of ``DECODE_ERRORS`` for a broken header.
    """
    with open(path, "rb") as file:
        head = file.read(12)
    if head[:3] == b"\xff\xd8\xff":
        return JpegImagePlugin.JpegImageFile(path)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return PngImagePlugin.PngImageFile(path)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WebPImagePlugin.WebPImageFile(path)
    raise UnidentifiedImageError(f"{path} is not a JPEG, PNG or WebP file")


def header_is_valid(path: Path) -> bool:
    """True when the file is a JPEG, PNG or WebP whose structure ``verify()`` finds intact (no decoding)."""
    try:
        with open_image(path) as image:
            image.verify()
        return True
    except DECODE_ERRORS:
        return False


def load_rgb_square(path: str | Path, size: int) -> Tensor:
    """Decode one file -> uint8 ``[3, size, size]``: RGB, EXIF-rotated, shorter side resized to
    ``size``, center crop. Raises one of ``DECODE_ERRORS`` for a damaged file."""
    with open_image(path) as image:
        # JPEG only: decode at a reduced scale (1/2, 1/4, 1/8) that still covers the target size,
        # much cheaper than decoding megapixels and then shrinking them.
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        if image.mode == "P":  # a palette may carry transparency: go through RGBA, then drop alpha
            image = image.convert("RGBA")
        image = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


class ImageFolder(Dataset):
    """A folder of images as a map-style ``Dataset`` of uint8 ``[3, S, S]`` tensors, read on demand.

    Attributes:
        root: the folder.
        image_size: ``S``.
        paths: the valid files, sorted by relative path (``dataset[i]`` reads ``paths[i]``), a
            ``PathList`` (compact; indexing and iterating give ``Path`` objects).
        skipped: files the scan found damaged, sorted (a ``PathList`` too).
        load_failures: files that failed to decode in this process (for in-process loading).
    """

    def __init__(self, root: str | Path, image_size: int):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"--data: {root} is not a folder")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        # One pass over the folder: each file is checked as the walk finds it and its relative path
        # goes into a compact list, so that nothing of the scan is held per file but those bytes.
        self.paths, self.skipped = PathList(root), PathList(root)
        for relative in walk_images(root):
            (self.paths if header_is_valid(root / relative) else self.skipped).append(relative)
        self.paths.freeze(), self.skipped.freeze()
        if not self.paths:
            if not self.skipped:
                raise ValueError(f"--data: no .jpg/.jpeg/.png/.webp files under {root}")
            raise ValueError(f"--data: none of the {len(self.skipped)} image files under {root} can be read")
        self.root = root
        self.image_size = image_size
        self.load_failures: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        """uint8 ``[3, S, S]`` of ``paths[index]``, or of the next file that decodes if it is damaged."""
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            try:
                return load_rgb_square(path, self.image_size)
            except DECODE_ERRORS as error:
                if path not in self.load_failures:
                    self.load_failures.append(path)
                    warnings.warn(f"skipping damaged image {path}: {error}", stacklevel=2)
        raise RuntimeError(f"no image under {self.root} could be decoded")

    def fingerprint(self) -> dict:
        """What a checkpoint must agree on, without reading any pixels: the image count and size and
        a hash of the sorted relative paths with their byte sizes and modification times."""
        digest = hashlib.sha256()
        for index in range(len(self.paths)):
            relative = self.paths.relative(index)
            stat = (self.root / relative).stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"num_images": len(self.paths), "shape": [3, self.image_size, self.image_size],
                "files_sha256": digest.hexdigest()[:16]}

    def summary(self) -> str:
        """One line: how many images, and how many damaged files were skipped (the first few named)."""
        line = f"{len(self.paths)} images under {self.root}"
        if self.skipped:
            names = ", ".join(self.skipped.relative(i) for i in range(min(NAMED_SKIPS, len(self.skipped))))
            more = f" and {len(self.skipped) - NAMED_SKIPS} more" if len(self.skipped) > NAMED_SKIPS else ""
            line += f"; skipped {len(self.skipped)} damaged file(s): {names}{more}"
        return line


def write_image_folder(images: Tensor, root: str | Path, damaged: int = 0, per_folder: int = 100) -> list[Path]:
    """Write uint8 ``[N, 3, H, W]`` images as a folder of mixed files, the kind ``ImageFolder`` reads.

    For the tests, the benchmarks and a first try of ``coursekit pretrain --data``: image ``i`` goes
    to ``root/part_{i // per_folder}/sub_{i % 2}/``, its format cycles through JPEG, PNG, WebP
    and ``.JPG`` (upper case) with ``i % 4``, its mode through RGB, grayscale, RGBA and palette with
    ``(i // 4) % 4`` (JPEG turns RGBA and palette into RGB), and every third
    image is stretched to 1.5 times its width (mixed sizes and aspect ratios). Then ``damaged``
    broken files: alternately bytes that are no image (found by the scan) and JPEGs missing their
    last fifth (they pass the scan and fail when decoded).

    Returns:
        The paths of the written images, then of the damaged files.
    """
    import io

    root = Path(root)
    formats = [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("JPEG", ".JPG")]
    modes = ["RGB", "L", "RGBA", "P"]
    paths = []
    for i, image in enumerate(images):
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        if i % 3 == 2:
            picture = picture.resize((picture.width * 3 // 2, picture.height))
        picture = picture.convert(modes[i // 4 % 4])
        file_format, suffix = formats[i % 4]
        if file_format == "JPEG" and picture.mode in ("RGBA", "P"):
            picture = picture.convert("RGB")  # JPEG holds no alpha or palette
        path = root / f"part_{i // per_folder}" / f"sub_{i % 2}" / f"{i:06d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, format=file_format)
        paths.append(path)
    for k in range(damaged):
        path = root / "damaged" / (f"broken_{k:03d}.png" if k % 2 == 0 else f"truncated_{k:03d}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        if k % 2 == 0:
            path.write_bytes(b"this is not an image " * 8)
        else:
            buffer = io.BytesIO()
            Image.fromarray(images[k % len(images)].permute(1, 2, 0).numpy()).save(buffer, format="JPEG")
            path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 4 // 5])
        paths.append(path)
    return paths
