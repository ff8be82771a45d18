"""Seeds derived from a run's seed: every random draw of a run comes from a generator seeded by
a tuple such as ``(seed, "step", step, rank)``, so that a resumed run draws exactly what an
uninterrupted one would."""
from __future__ import annotations

import hashlib


def derived_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints and strings, e.g. ``derived_seed(seed, "step", 12, rank)``.
    Different tuples give unrelated seeds (a hash, not a sum that could collide)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
