"""Small analysis tools of lessons 01-03, and the reference solutions of their analysis exercises.

- ``labeling_cost``: what a labeled dataset costs (images x seconds per label x hourly rate).
- ``augmentation_pair_similarity``: which pairs of augmentations make the hardest positives
  (lesson 02, exercise ``simclr.augmentation_pair_similarity``).
- ``simulate_ema``: the momentum (EMA) target of MoCo / BYOL / DINO following an online signal
  (lesson 03, exercise ``moco.simulate_ema``); ``ema_half_life``, ``steps_to_reach`` and
  ``tracking_noise`` read lag and stability off such a simulation.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["labeling_cost", "augmentation_pair_similarity", "simulate_ema", "ema_half_life",
           "steps_to_reach", "tracking_noise"]


def labeling_cost(num_images: int, seconds_per_label: float, hourly_rate: float,
                  labels_per_image: float = 1.0) -> tuple[float, float]:
    """(annotator hours, cost in the rate's currency) of labeling ``num_images`` images.

    hours = num_images * labels_per_image * seconds_per_label / 3600; cost = hours * hourly_rate.
    """
    if num_images < 0 or seconds_per_label < 0 or hourly_rate < 0 or labels_per_image < 0:
        raise ValueError("labeling_cost: every argument must be >= 0")
    hours = num_images * labels_per_image * seconds_per_label / 3600.0
    return hours, hours * hourly_rate


def augmentation_pair_similarity(view_features: Mapping[str, Tensor]) -> dict[tuple[str, str], float]:
    """Mean cosine similarity of the two views of the same image, for every pair of augmentations.

    Args:
        view_features: ``{augmentation name: features [N, D]}``; row ``i`` of every tensor comes
            from image ``i`` seen through that augmentation (at least two names, same N and D).

    Returns:
        ``{(a, b): s}`` for every pair of different names, ``a`` before ``b`` in the mapping's
        order (``itertools.combinations``), where ``s`` (a Python float) is the mean over the N
        images of cos(features_a[i], features_b[i]). A low ``s`` marks a hard positive pair: the
        network has to work to see that both views show the same image.
    """
    names = list(view_features)
    if len(names) < 2:
        raise ValueError(f"need at least two augmentations, got {names}")
    shapes = {name: tuple(view_features[name].shape) for name in names}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"every entry must be [N, D] with the same N and D; got {shapes}")
    unit = {name: F.normalize(view_features[name].detach().float(), dim=1) for name in names}
    return {(a, b): (unit[a] * unit[b]).sum(dim=1).mean().item() for a, b in itertools.combinations(names, 2)}


def simulate_ema(signal: Tensor, m: float) -> Tensor:
    """The momentum target that follows an online signal: what a key encoder's weight does.

    target[0] = signal[0] (the target starts as a copy of the online network), then for t >= 1
    target[t] = m * target[t - 1] + (1 - m) * signal[t]. The recurrence runs along dim 0, so
    ``signal`` may be ``[T]`` (one weight) or ``[T, ...]`` (several). Returns a new float tensor of
    the same shape; ``signal`` is not modified.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"m must be in [0, 1], got {m}")
    if signal.dim() < 1 or len(signal) == 0:
        raise ValueError(f"signal must be [T, ...] with T >= 1, got shape {tuple(signal.shape)}")
    signal = signal.detach().float()
    target = torch.empty_like(signal)
    target[0] = signal[0]
    for t in range(1, len(signal)):
        target[t] = m * target[t - 1] + (1.0 - m) * signal[t]
    return target


def ema_half_life(m: float) -> float:
    """Steps after which the target has closed half of a sudden jump of the online network:
    m ** h = 1/2, so h = ln(1/2) / ln(m) (about 0.69 / (1 - m) for m near 1)."""
    if not 0.0 < m < 1.0:
        raise ValueError(f"m must be in (0, 1), got {m}")
    return math.log(0.5) / math.log(m)


def steps_to_reach(target: Tensor, level: float) -> int:
    """First step t at which a 1-D ``target`` (e.g. the response to a unit step) is >= ``level``;
    ``len(target)`` when it never gets there."""
    reached = torch.nonzero(target >= level).flatten()
    return int(reached[0]) if len(reached) else len(target)


def tracking_noise(target: Tensor, clean: Tensor) -> float:
    """Root-mean-square distance between a target and the clean signal it should follow."""
    return (target.float() - clean.float()).pow(2).mean().sqrt().item()
