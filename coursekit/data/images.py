"""Images as the course keeps them: uint8 tensors ``[N, 3, H, W]`` in memory, with their labels.

``ImageSet`` is what every loader in ``coursekit.data`` returns: uint8 images kept in memory (small
enough to move once to the GPU), their labels and, for the procedural shapes, boxes and masks.
``check_images`` is the one input check of every function that takes an image batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def check_images(images, name: str = "images", channels: int | None = 3,
                 float_only: bool = False) -> None:
    """Raise a clear error unless `images` is a [N, C, H, W] uint8 or float tensor with `channels`
    channels (any number when None); with float_only, uint8 is refused too."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D [N, C, H, W], got shape {tuple(images.shape)}")
    allowed = "float" if float_only else "uint8 or float"
    if not (images.is_floating_point() or (images.dtype == torch.uint8 and not float_only)):
        raise TypeError(f"{name} must have dtype {allowed}, got {images.dtype}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (dim 1 of [N, C, H, W]), "
            f"got shape {tuple(images.shape)}"
        )


@dataclass
class ImageSet:
    """Images with labels and, optionally, detection and segmentation targets.

    Attributes:
        images: uint8 ``[N, 3, H, W]``, values 0..255 (grayscale data repeated to 3 channels).
        labels: long ``[N]``, the class index of each image (for shapes: the class of the largest
            object); -1 where a split has no labels (STL-10 ``unlabeled``).
        classes: class names; ``classes[c]`` is the name of label ``c``.
        boxes: optional list of N float tensors ``[K_i, 4]``, one row per object, ``x1, y1, x2, y2``
            in pixels with exclusive right/bottom edges (a box covering pixel columns 3..7 has
            ``x1 = 3, x2 = 8``), tight around the object's visible mask pixels.
        box_labels: optional list of N long tensors ``[K_i]``, the class of each box.
        masks: optional uint8 ``[N, H, W]`` pixel classes: 0 = background, ``c + 1`` = class ``c``;
            255 = "don't know" (the trimap border of Oxford-IIIT Pet), to be ignored by losses.
        instances: optional uint8 ``[N, H, W]`` object ids: 0 = background, ``k + 1`` = the object of
            ``boxes[i][k]`` (what instance segmentation, e.g. YOLO-seg labels, needs).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    boxes: list[Tensor] | None = None
    box_labels: list[Tensor] | None = None
    masks: Tensor | None = None
    instances: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"ImageSet.images must be uint8 [N, 3, H, W]; got {self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.dtype != torch.long or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSet.labels must be long [{len(self.images)}]; got {self.labels.dtype} {list(self.labels.shape)}"
            )
        for name in ("boxes", "box_labels"):
            targets = getattr(self, name)
            if targets is not None and len(targets) != len(self.images):
                raise ValueError(f"ImageSet.{name} must hold one tensor per image ({len(self.images)}); got {len(targets)}")
        for name in ("masks", "instances"):
            maps = getattr(self, name)
            if maps is not None and (maps.dtype != torch.uint8 or maps.shape != (len(self), *self.images.shape[2:])):
                raise ValueError(
                    f"ImageSet.{name} must be uint8 [N, H, W] = {[len(self), *self.images.shape[2:]]}; "
                    f"got {maps.dtype} {list(maps.shape)}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return tuple(self.images.shape[2:])

    def to(self, device: torch.device | str) -> "ImageSet":
        """A copy with every tensor on ``device`` (move once, then index batches there)."""
        return ImageSet(
            images=self.images.to(device),
            labels=self.labels.to(device),
            classes=list(self.classes),
            boxes=None if self.boxes is None else [b.to(device) for b in self.boxes],
            box_labels=None if self.box_labels is None else [b.to(device) for b in self.box_labels],
            masks=None if self.masks is None else self.masks.to(device),
            instances=None if self.instances is None else self.instances.to(device),
        )

    def subset(self, indices: Tensor | Sequence[int]) -> "ImageSet":
        """The images at ``indices`` (a long tensor or a list of ints), in that order."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)
        if index.dim() != 1:
            raise ValueError(f"subset: indices must be one-dimensional; got shape {list(index.shape)}")
        picked = index.tolist()
        return ImageSet(
            images=self.images[index.to(self.images.device)],
            labels=self.labels[index],
            classes=list(self.classes),
            boxes=None if self.boxes is None else [self.boxes[i] for i in picked],
            box_labels=None if self.box_labels is None else [self.box_labels[i] for i in picked],
            masks=None if self.masks is None else self.masks[index.to(self.masks.device)],
            instances=None if self.instances is None else self.instances[index.to(self.instances.device)],
        )


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize uint8 ``[N, C, h, w]`` images to uint8 ``[N, C, size, size]`` (bilinear, antialiased).

    Works in chunks of ``chunk`` images so that a whole dataset never exists as floats at once.
    """
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round().clamp(0, 255).to(torch.uint8)
        for part in images.split(chunk)
    ])
