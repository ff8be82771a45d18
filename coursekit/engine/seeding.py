"""Seeds derived from a run's seed: every random draw of a run comes from a generator seeded by
a tuple such as ``(seed, "step", step, rank)``, so that a resumed run draws exactly what an
uninterrupted one would."""
from __future__ import annotations

import hashlib

import torch


def derived_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints and strings, e.g. ``derived_seed(seed, "step", 12, rank)``.
    Different tuples give unrelated seeds (a hash, not a sum that could collide)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the items in an epoch: a permutation of range(num_items), long [num_items],
    drawn on the CPU from a generator seeded by (seed, "epoch", epoch); the same on every process."""
    generator = torch.Generator().manual_seed(derived_seed(seed, "epoch", epoch))
    return torch.randperm(num_items, generator=generator)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu", rank: int = 0) -> torch.Generator:
    """The generator of a step's random draws (augmentations, masks), on ``device``, seeded by
    (seed, "step", step, rank): each step and each process draws its own numbers."""
    return torch.Generator(device).manual_seed(derived_seed(seed, "step", step, rank))
