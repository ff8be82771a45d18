"""Graded exercises of lesson 01 (the label bottleneck): ``bottleneck.stratified_subset``."""
from __future__ import annotations

import torch

from .checks import call, expect_tensor, generator
from ..core import CheckFailed, exercise

subset_exercise = exercise("bottleneck.stratified_subset", "stratified_subset",
                           reference="coursekit.data:stratified_subset")

# Imbalanced classes (40, 20, 7 and 3 images), interleaved: a subset of the whole set is not stratified.
CLASS_SIZES = (40, 20, 7, 3)


def _labels() -> torch.Tensor:
    labels = torch.cat([torch.full((size,), c, dtype=torch.long) for c, size in enumerate(CLASS_SIZES)])
    return labels[torch.randperm(len(labels), generator=generator(0))]


def _indices(stratified_subset, fraction: float, seed: int, global_seed: int | None = None) -> torch.Tensor:
    """The student's indices, checked to be a 1-D long tensor of valid positions."""
    labels = _labels()
    value = call(stratified_subset, labels.clone(), fraction, seed, global_seed=global_seed)
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool:
        raise CheckFailed("returned a boolean mask: return the indices of the chosen images")
    indices = expect_tensor(value, "the result", dtype=torch.long)
    if indices.dim() != 1:
        raise CheckFailed(f"the result has {indices.dim()} dimensions, expected a 1-D tensor of indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= len(labels)):
        raise CheckFailed(f"some indices are outside 0..{len(labels) - 1}")
    return indices


@subset_exercise.checks("returns a 1-D long tensor of valid indices", points=1,
                        hint="return the positions of the chosen images in labels, as integers (not a mask)")
def _returns_indices(stratified_subset):
    _indices(stratified_subset, 0.25, 0)


@subset_exercise.checks("has no duplicate indices", points=1,
                        hint="each image may be chosen once: draw without replacement")
def _no_duplicates(stratified_subset):
    for fraction in (0.25, 0.5, 1.0):
        indices = _indices(stratified_subset, fraction, 0)
        if len(torch.unique(indices)) != len(indices):
            raise CheckFailed(f"duplicate indices (fraction {fraction}): sampled with replacement")


@subset_exercise.checks("keeps about `fraction` of every class (within one image)", points=2,
                        hint="loop over the classes and keep about fraction * (size of the class) of each")
def _fraction_per_class(stratified_subset):
    labels = _labels()
    for fraction in (0.1, 0.25, 0.5, 1.0):
        counts = torch.bincount(labels[_indices(stratified_subset, fraction, 1)], minlength=len(CLASS_SIZES))
        for cls, size in enumerate(CLASS_SIZES):
            if abs(counts[cls].item() - fraction * size) > 1:
                overall = abs(counts.sum().item() - fraction * len(labels)) <= 1
                reason = ("the fraction was taken of the whole set, not of each class (not stratified)"
                          if overall else f"class {cls} has {counts[cls].item()} of {size} images")
                raise CheckFailed(f"with fraction {fraction}: {reason}")


@subset_exercise.checks("keeps at least one image of every class", points=1,
                        hint="a small class can round down to no image at all: every class keeps at least one")
def _every_class_present(stratified_subset):
    labels = _labels()
    present = torch.unique(labels[_indices(stratified_subset, 0.05, 2)])
    missing = sorted(set(range(len(CLASS_SIZES))) - set(present.tolist()))
    if missing:
        raise CheckFailed(f"with fraction 0.05, class(es) {missing} are missing (rounded down to 0 images)")


@subset_exercise.checks("the same seed gives the same subset", points=1,
                        hint="all randomness must come from a generator seeded with `seed`, not from the global random state")
def _reproducible(stratified_subset):
    for seed in (3, 4):
        # the same seed under two different global random states: only the seed may matter
        first = _indices(stratified_subset, 0.25, seed, global_seed=1000 + seed).sort().values
        second = _indices(stratified_subset, 0.25, seed, global_seed=2000 + seed).sort().values
        if not torch.equal(first, second):
            raise CheckFailed(f"seed {seed} gave two different subsets: not reproducible from the seed")


@subset_exercise.checks("other seeds give other subsets", points=1,
                        hint="choose the images at random, with the seeded generator")
def _random(stratified_subset):
    subsets = {tuple(_indices(stratified_subset, 0.25, seed).sort().values.tolist()) for seed in range(4)}
    if len(subsets) == 1:
        raise CheckFailed("seeds 0 to 3 all gave the same subset: the choice is not random (e.g. the first "
                          "images of each class)")
