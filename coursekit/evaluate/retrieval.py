"""Image retrieval with frozen features: the gallery images whose global features point in the
most similar direction (``cosine_top_k``), scored by ``precision_at_k`` when labels are known."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_top_k", "precision_at_k"]


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
