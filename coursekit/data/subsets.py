"""The ways the course takes parts of a labeled set.

``seeded_first`` picks a seeded random subset; ``stratified_subset`` picks a label fraction per
class (lesson 01 and the label-fraction experiments); it is also the reference solution of the
``bottleneck.stratified_subset`` exercise. ``per_class_subset`` picks n labeled images per class (the
few-label protocols, ``coursekit.evaluate.few_labels``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def seeded_first(num_items: int, n: int | None, seed: int) -> Tensor:
    """Indices of the first ``n`` items after a shuffle seeded by ``seed`` (all of them, shuffled, for None)."""
    if n is not None and not 0 < n <= num_items:
        raise ValueError(f"n must be between 1 and {num_items} (the size of the split); got {n}")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order if n is None else order[:n]


def stratified_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a random subset with about ``fraction`` of every class.

    Each class ``c`` present in ``labels`` with ``n_c`` images contributes ``max(1, round(fraction * n_c))``
    images drawn without replacement, so the count is within one of ``fraction * n_c`` and no class
    disappears. The same seed gives the same subset; other seeds give other subsets.

    Args:
        labels: long ``[N]`` class indices.
        fraction: share of each class to keep, in ``(0, 1]``.
        seed: seed of the random choice.

    Returns:
        long ``[M]`` sorted indices into ``labels``, without duplicates.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
        shape = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"stratified_subset: labels must be an integer tensor [N]; got {shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"stratified_subset: fraction must be in (0, 1]; got {fraction}")
    return _draw_per_class(labels, lambda members: max(1, round(fraction * members)), seed)


def per_class_subset(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """Indices of ``per_class`` images of every class in ``labels`` (all of a class's images when it
    has fewer), drawn without replacement; the same seed gives the same subset. Sorted, long ``[M]``."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1; got {per_class}")
    return _draw_per_class(labels, lambda members: per_class, seed)


def _draw_per_class(labels: Tensor, count: Callable[[int], int], seed: int) -> Tensor:
    """``count(n_c)`` indices of each class present in ``labels`` (n_c: its images), drawn without
    replacement by one generator seeded with ``seed``, class by class in increasing order; sorted."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count(len(members))]])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chosen).sort().values
