"""Exponential moving averages of networks: the momentum encoders of MoCo, BYOL and DINO.

A target (teacher, key encoder) is a copy of the online network whose parameters trail it:

    target = m * target + (1 - m) * online

with m close to 1, and m raised towards 1 over training by a cosine schedule (BYOL, DINO).
"""

import copy

import torch
from torch import nn

from coursekit.engine.schedules import cosine_schedule


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """In place: every target parameter becomes m * target + (1 - m) * online. No gradient.

    Parameters only (buffers such as BatchNorm statistics are the target's own), matched in the
    order of ``parameters()``; both modules must have the same architecture.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    online_params = list(online.parameters())
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError(
            f"online has {len(online_params)} parameter tensors, target {len(target_params)}: "
            "the target must be a copy of the online network"
        )
    for p_online, p_target in zip(online_params, target_params):
        if p_online.shape != p_target.shape:
            raise ValueError(f"parameter shapes differ: {tuple(p_online.shape)} vs {tuple(p_target.shape)}")
        p_target.mul_(m).add_(p_online.detach(), alpha=1.0 - m)


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """Momentum at ``progress`` in [0, 1] of training: ``base`` at 0 rising along a half cosine to ``final``.

    m(progress) = final - (final - base) * (cos(pi * progress) + 1) / 2   (BYOL, DINO, MoCo v3).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return cosine_schedule(progress, total=1, warmup=0, base=base, final=final)


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online`` to be updated only by ``momentum_update``."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target
