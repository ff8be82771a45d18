"""Using frozen features directly: image retrieval by cosine similarity, and patch-feature maps.

A foundation model (``coursekit.foundation``) or any trained backbone gives a global feature per
image and a feature per patch. Two things need no training at all:

- retrieval: the gallery images whose global features point in the most similar direction
  (``cosine_top_k``), scored by ``precision_at_k`` when labels are known;
- patch maps: patch tokens ``[N, L, D]`` laid back on their ``h x w`` grid (``tokens_to_grid``),
  and the first principal component of all patch tokens, which separates objects from background
  in DINOv2 (``first_component_map``, ``foreground_mask``; ``coursekit.viz.patch_pca`` draws it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_top_k", "precision_at_k", "tokens_to_grid", "first_component_map", "foreground_mask"]


def cosine_top_k(queries: Tensor, gallery: Tensor, k: int) -> Tensor:
    """Indices ``[Q, k]`` (long) of the ``k`` gallery rows most cosine-similar to each query, most similar first.

    Args:
        queries: float ``[Q, D]``; gallery: float ``[G, D]``, not assumed normalized; ``1 <= k <= G``.
    """
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries [Q, D] and gallery [G, D] must share D; got {list(queries.shape)} and "
                         f"{list(gallery.shape)}")
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be between 1 and the gallery size {len(gallery)}; got {k}")
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # [Q, G]
    return similarity.topk(k, dim=1).indices


def precision_at_k(indices: Tensor, query_labels: Tensor, gallery_labels: Tensor) -> float:
    """Share of retrieved items (``indices [Q, k]`` into the gallery) whose label is the query's, in [0, 1]."""
    retrieved = gallery_labels.cpu()[indices.cpu()]  # [Q, k]
    return (retrieved == query_labels.cpu()[:, None]).float().mean().item()


def tokens_to_grid(patch_tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens ``[N, L, D]`` (row-major, ``L = h * w``) -> a feature map ``[N, D, h, w]``.

    Row-major means token ``i`` sits at row ``i // w`` and column ``i % w``. The result can go
    into any convolutional decoder (lesson 10) or be upsampled to the image size.
    """
    height, width = grid
    count, length, dim = patch_tokens.shape
    if height * width != length:
        raise ValueError(f"grid {grid} does not hold L = {length} patch tokens")
    return patch_tokens.reshape(count, height, width, dim).permute(0, 3, 1, 2)


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
    centered = tokens - tokens.mean(dim=0)
    direction = torch.linalg.svd(centered, full_matrices=False).Vh[0]  # [D]
    first = (centered @ direction).reshape(count, height, width)
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
