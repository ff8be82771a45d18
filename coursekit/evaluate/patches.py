"""Patch features: what a backbone says about each patch, used without any training.

Patch tokens ``[N, L, D]`` come row-major from ViTs (and from ResNet maps flattened row-major):
``tokens_to_feature_map`` lays them back on their ``h x w`` grid for a convolutional decoder.
The first principal component of all patch tokens separates objects from background in DINOv2
(``first_component_map``, ``foreground_mask``; ``coursekit.viz.patch_pca`` draws it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["tokens_to_feature_map", "principal_components", "first_component_map", "foreground_mask"]


def tokens_to_feature_map(patch_tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Reshape patch tokens into a feature map, the inverse of flattening a map row-major.

    Token ``i`` belongs to row ``i // w`` and column ``i % w`` of the grid, as ViT patch embedding
    (``conv -> flatten(2) -> transpose(1, 2)``) and ResNet maps flattened row-major produce them.

    Args:
        patch_tokens: ``[N, L, D]`` tokens without a CLS token, ``L == h * w``.
        grid: ``(h, w)``, the patch grid.

    Returns:
        ``[N, D, h, w]`` (contiguous).
    """
    if patch_tokens.dim() != 3:
        raise ValueError(f"patch_tokens must be [N, L, D], got shape {tuple(patch_tokens.shape)}")
    h, w = (int(v) for v in grid)
    n, length, dim = patch_tokens.shape
    if length != h * w:
        hint = " (drop the CLS token first: tokens[:, 1:])" if length == h * w + 1 else ""
        raise ValueError(f"{length} tokens do not fill a {h}x{w} grid{hint}")
    # [N, L, D] -> [N, D, L] -> [N, D, h, w]
    return patch_tokens.transpose(1, 2).reshape(n, dim, h, w).contiguous()


def principal_components(points: Tensor, k: int) -> Tensor:
    """Projections ``[M, k]`` of ``points [M, D]`` on their first ``k`` principal directions (zeros beyond rank).

    The points are centered by their mean; the directions are the right singular vectors of the
    centered points, largest first. A direction has no sign of its own (callers choose one).
    """
    centered = points - points.mean(dim=0)
    _, _, directions = torch.linalg.svd(centered, full_matrices=False)
    projected = centered @ directions[:k].T
    return F.pad(projected, (0, k - projected.shape[1]))


def first_component_map(patch_features: Tensor, grid: tuple[int, int]) -> Tensor:
    """The first principal component of all patch tokens, scaled to [0, 1]: ``[N, L, D]`` -> ``[N, h, w]``.

    All ``N * L`` tokens are centered by their mean and projected on the direction of largest
    variance (the first right singular vector). A principal direction has no sign of its own: the
    sign is chosen so that the border patches (first and last row and column) have a lower mean
    than the inner patches, as objects are usually near the center. The projections are then
    min-max scaled over all patches of all images together.
    """
    height, width = grid
    count, length, _ = patch_features.shape
    if height * width != length:
        raise ValueError(f"grid {grid} does not hold L = {length} patch tokens")
    tokens = patch_features.detach().float().reshape(count * length, -1)
    first = principal_components(tokens, 1)[:, 0].reshape(count, height, width)
    border = torch.ones(height, width, dtype=torch.bool, device=first.device)
    border[1:-1, 1:-1] = False
    if first[:, border].mean() > first[:, ~border].mean():
        first = -first
    return (first - first.min()) / (first.max() - first.min()).clamp_min(1e-12)


def foreground_mask(patch_features: Tensor, grid: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Which patches are foreground: ``first_component_map(...) > threshold`` -> bool ``[N, h, w]``.

    The same rule ``coursekit.viz.patch_pca`` uses to paint the background black.
    """
    return first_component_map(patch_features, grid) > threshold
