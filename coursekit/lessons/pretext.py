"""The classic pretext tasks before contrastive learning (the tour in lesson 02).

Each function turns unlabeled images into an input and a label made from the images themselves:

- ``rotations``: every image turned by 0, 90, 180 and 270 degrees; the label is the turn
  (Gidaris, Singh, Komodakis, 2018, arXiv:1803.07728);
- ``jigsaw``: the image cut into ``grid x grid`` tiles and shuffled; the label is the permutation
  (Noroozi, Favaro, 2016, arXiv:1603.09246);
- ``inpainting``: a central square hidden; the target is its pixels (Pathak et al., Context
  Encoders, 2016, arXiv:1604.07379), the ancestor of MAE (lesson 06).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor [N, C, H, W]; got {getattr(images, 'shape', type(images))}")


def rotations(images: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, C, H, W]`` (square) -> the 4N rotated images and their labels ``[4N]`` (k = turns of 90 degrees).

    Image ``i`` turned by ``k * 90`` degrees counter-clockwise is at index ``k * N + i``.
    """
    _check_images(images)
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotations needs square images; got {images.shape[-2]} x {images.shape[-1]}")
    turned = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4).repeat_interleave(len(images))
    return torch.cat(turned), labels


def jigsaw(images: Tensor, grid: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Cut each image into ``grid x grid`` tiles and shuffle them -> (shuffled ``[N, C, H, W]``, permutations ``[N, grid**2]``).

    ``permutations[i, j]`` is the tile (row-major index in the original) shown at position ``j``; the
    network's task is to predict it. H and W must be multiples of ``grid``.
    """
    _check_images(images)
    n, c, height, width = images.shape
    if grid < 2 or height % grid or width % grid:
        raise ValueError(f"grid must be >= 2 and divide the image size {height} x {width}; got {grid}")
    th, tw = height // grid, width // grid
    tiles = images.reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, th, tw)
    permutations = torch.stack([torch.randperm(grid * grid, generator=generator) for _ in range(n)])
    shuffled = tiles[torch.arange(n)[:, None], permutations]  # [N, grid * grid, C, th, tw]
    shuffled = shuffled.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, height, width)
    return shuffled, permutations


def inpainting(images: Tensor, hole: float = 0.5, fill: float | int = 128) -> tuple[Tensor, Tensor]:
    """Hide a central square covering ``hole`` of each side -> (images with the hole filled by ``fill``, bool mask ``[N, 1, H, W]``).

    The target of the task is ``images`` where the mask is True.
    """
    _check_images(images)
    if not 0.0 < hole < 1.0:
        raise ValueError(f"hole must be in (0, 1); got {hole}")
    height, width = images.shape[-2:]
    h, w = max(1, round(height * hole)), max(1, round(width * hole))
    top, left = (height - h) // 2, (width - w) // 2
    mask = torch.zeros(len(images), 1, height, width, dtype=torch.bool)
    mask[:, :, top:top + h, left:left + w] = True
    masked = images.masked_fill(mask.to(images.device), fill)
    return masked, mask
