"""The one schedule shape the course uses: linear warmup, then a half cosine.

Learning rates decay along it; MoCo, BYOL and DINO raise their EMA momentum along it.
"""
from __future__ import annotations

import math


def cosine_schedule(step: float, total: float, warmup: float, base: float, final: float) -> float:
    """Value at ``step`` (0-based) of ``total``: linear warmup to ``base`` over the first ``warmup``
    steps (``base * (step + 1) / warmup``), then a half cosine from ``base`` down (or up) to ``final``,
    reached at ``step == total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
