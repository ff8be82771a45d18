"""The ways the course takes parts of a labeled set.

``seeded_first`` picks a seeded random subset; ``stratified_subset`` picks a label fraction per
class (lesson 01 and the label-fraction experiments); it is also the reference solution of the ``bottleneck.stratified_subset`` exercise.
"""
from __future__ import annotations

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
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        keep = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chosen).sort().values
