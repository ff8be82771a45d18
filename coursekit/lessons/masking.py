"""Masking strategies for MAE and a comparator (lesson 06 and its analysis exercise).

A mask over a ``grid_h x grid_w`` grid of patches is a float tensor ``[L]`` (``L = grid_h * grid_w``,
row-major like ``patchify``) with 1 = removed and 0 = visible. Every strategy removes exactly
``L - int(L * (1 - ratio))`` patches, the count of ``coursekit.methods.mae.random_masking``, so that
strategies are compared at the same ratio:

- ``random_mask``: a uniformly random subset (MAE's choice);
- ``block_mask``: one contiguous block, a rectangle filled row by row, at a random place;
- ``grid_mask``: the visible patches on a regular lattice (MAE paper, Fig. 6: "keep one of every
  four patches" at 75%).

The comparator measures how hard each mask makes the pretext task:

- ``nearest_visible_distance``: mean grid distance from each removed patch to its nearest visible one
  (the "reconstruction difficulty" of the exercise);
- ``nearest_visible_fill`` and ``interpolation_error``: predict every removed patch by copying its
  nearest visible patch, and measure the squared error on real images: a task that this trivial
  interpolation solves well teaches the encoder little.

He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021 (arXiv:2111.06377).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["num_removed", "grid_positions", "random_mask", "block_mask", "grid_mask", "MASKS",
           "nearest_visible_distance", "nearest_visible_fill", "interpolation_error", "compare_masking"]


def num_removed(length: int, ratio: float) -> int:
    """How many of ``length`` patches a mask with ``ratio`` removes: ``length - int(length * (1 - ratio))``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    return length - int(length * (1 - ratio))


def grid_positions(grid_h: int, grid_w: int) -> Tensor:
    """Float ``[L, 2]``: the (row, column) of every patch, row-major."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1).float()


def random_mask(grid_h: int, grid_w: int, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random subset of ``num_removed(L, ratio)`` patches: float ``[L]``, 1 = removed."""
    length = grid_h * grid_w
    order = torch.randperm(length, generator=generator)
    mask = torch.zeros(length)
    mask[order[:num_removed(length, ratio)]] = 1.0
    return mask


def block_mask(grid_h: int, grid_w: int, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """One contiguous block of ``n = num_removed(L, ratio)`` patches: float ``[L]``, 1 = removed.

    The block is ``bh x bw`` with ``bw = min(grid_w, max(ceil(sqrt(n)), ceil(n / grid_h)))`` (as square as
    the grid allows) and ``bh = ceil(n / bw)``,
    filled row by row (the last row may be partial); its top-left corner is drawn uniformly among the
    positions where it fits, with ``generator``.
    """
    length = grid_h * grid_w
    n = num_removed(length, ratio)
    mask = torch.zeros(grid_h, grid_w)
    if n == 0:
        return mask.flatten()
    bw = min(grid_w, max(math.ceil(math.sqrt(n)), math.ceil(n / grid_h)))
    bh = math.ceil(n / bw)
    top = int(torch.randint(grid_h - bh + 1, (1,), generator=generator))
    left = int(torch.randint(grid_w - bw + 1, (1,), generator=generator))
    block = torch.zeros(bh * bw)
    block[:n] = 1.0
    mask[top:top + bh, left:left + bw] = block.reshape(bh, bw)
    return mask.flatten()


def grid_mask(grid_h: int, grid_w: int, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Visible patches on a regular lattice: float ``[L]``, 1 = removed, ``num_removed(L, ratio)`` ones.

    The lattice has stride ``s = floor(sqrt(L / L_keep))`` in both directions (lowered until it holds
    at least ``L_keep`` points) and a random offset in ``[0, s)^2``; ``L_keep`` of its points, evenly
    spaced in row-major order, stay visible. At 75% on an even grid this keeps one patch of every 2 x 2.
    """
    length = grid_h * grid_w
    keep = length - num_removed(length, ratio)
    mask = torch.ones(length)
    if keep == 0:
        return mask
    stride = max(1, math.isqrt(length // keep))
    while True:
        dy = int(torch.randint(stride, (1,), generator=generator))
        dx = int(torch.randint(stride, (1,), generator=generator))
        rows, cols = torch.arange(dy, grid_h, stride), torch.arange(dx, grid_w, stride)
        lattice = (rows[:, None] * grid_w + cols[None, :]).flatten()  # row-major indices
        if len(lattice) >= keep or stride == 1:
            break
        stride -= 1
    chosen = lattice[(torch.arange(keep) * len(lattice)) // keep]
    mask[chosen] = 0.0
    return mask


MASKS: dict[str, Callable[..., Tensor]] = {"random": random_mask, "block": block_mask, "grid": grid_mask}


def nearest_visible_distance(mask: Tensor, grid_h: int, grid_w: int) -> float:
    """Mean Euclidean grid distance (in patches) from each removed patch to its nearest visible patch.

    mask: ``[L]`` with 1 = removed. 0.0 when nothing is removed; needs at least one visible patch.
    """
    mask = mask.flatten().bool()
    if mask.numel() != grid_h * grid_w:
        raise ValueError(f"mask has {mask.numel()} entries for a {grid_h} x {grid_w} grid")
    if mask.all():
        raise ValueError("every patch is removed: there is no visible patch to measure a distance to")
    if not mask.any():
        return 0.0
    positions = grid_positions(grid_h, grid_w)
    distances = torch.cdist(positions[mask], positions[~mask])  # [removed, visible]
    return distances.min(dim=1).values.mean().item()


def nearest_visible_fill(patches: Tensor, mask: Tensor, grid_h: int, grid_w: int) -> Tensor:
    """Every removed patch replaced by its nearest visible patch (ties: the first in row-major order).

    patches: ``[N, L, P]`` (``patchify`` output); mask: ``[N, L]`` or ``[L]``, 1 = removed.
    Returns ``[N, L, P]``; visible patches are unchanged.
    """
    n, length, _ = patches.shape
    mask = mask.expand(n, length).bool() if mask.dim() == 1 else mask.bool()
    positions = grid_positions(grid_h, grid_w).to(patches.device)
    distances = torch.cdist(positions, positions)  # [L, L]
    filled = patches.clone()
    for i in range(n):
        if mask[i].all():
            raise ValueError("every patch is removed: there is no visible patch to copy")
        to_visible = distances[:, ~mask[i]]  # [L, visible]
        source = torch.nonzero(~mask[i]).flatten()[to_visible.argmin(dim=1)]  # [L]
        filled[i, mask[i]] = patches[i, source[mask[i]]]
    return filled


def interpolation_error(patches: Tensor, mask: Tensor, grid_h: int, grid_w: int) -> float:
    """Mean squared error over the removed patches of ``nearest_visible_fill`` (patches ``[N, L, P]``)."""
    n, length, _ = patches.shape
    mask = mask.expand(n, length) if mask.dim() == 1 else mask
    filled = nearest_visible_fill(patches, mask, grid_h, grid_w)
    per_patch = ((filled - patches) ** 2).mean(dim=-1)  # [N, L]
    return ((per_patch * mask).sum() / mask.sum().clamp_min(1)).item()


def compare_masking(patches: Tensor, grid_h: int, grid_w: int, ratios: Sequence[float],
                    strategies: Sequence[str] = ("random", "block", "grid"), seed: int = 0) -> dict:
    """For each strategy and ratio, one mask per image (drawn from a generator seeded with ``seed``):

    ``{(strategy, ratio): {"distance": mean nearest_visible_distance, "error": interpolation_error}}``
    on ``patches`` ``[N, L, P]``.
    """
    results = {}
    for strategy in strategies:
        make = MASKS[strategy]
        for ratio in ratios:
            generator = torch.Generator().manual_seed(seed)
            masks = torch.stack([make(grid_h, grid_w, ratio, generator) for _ in range(len(patches))])
            results[(strategy, ratio)] = {
                "distance": sum(nearest_visible_distance(m, grid_h, grid_w) for m in masks) / len(masks),
                "error": interpolation_error(patches, masks.to(patches.device), grid_h, grid_w),
            }
    return results
