"""Collapse, read from what the loop logged: a collapsed run is reported, never passed on silently.

A self-supervised run can "succeed" (the loss goes down, or settles) while its representation is
useless. The two collapses that the course teaches to recognise (lessons 04 and 05) leave a clear
trace in the statistics every method logs (``coursekit.methods.Method.record``):

- **complete collapse**: every image maps to (nearly) the same embedding. The spread of the
  L2-normalized embedding (``embedding_std``) is about 1/sqrt(D) when the embeddings cover the
  sphere and 0 when they coincide; below a quarter of 1/sqrt(D) the run has collapsed (lesson 04's
  rule: BYOL without its predictor ends at 0.015 with D = 128, a healthy run at 0.07 of 0.088).
- **uniform collapse** (DINO): the teacher's output is the same flat distribution for every image.
  Its entropy then equals ln K, the largest possible for K outputs (the loss too sits at ln K);
  at 95% of ln K or more the teacher no longer tells images apart.
- **one prototype** (DINO's other collapse): one of the K prototypes takes every image, confidently.
  ``prototypes_used``, e to the entropy of the batch's mean teacher output (K when the images share
  all prototypes evenly, 1 when they all go to one), falls under 2. Fewer prototypes in use than K
  is not collapse (a run on 10 classes of garments may settle on a dozen); one is.

Both are judged on the last logged window, i.e. on what the run ends with: a run that dips and
recovers is healthy. ``fit`` stores the signs in ``History.collapse`` and prints them;
``coursekit pretrain`` prints them and writes ``"verdict": "collapsed"`` in ``--report``.
"""
from __future__ import annotations

import math

COLLAPSED_SPREAD = 0.25  # embedding_std below this fraction of 1/sqrt(D): complete collapse
UNIFORM_ENTROPY = 0.95  # teacher entropy at or above this fraction of ln K: uniform collapse
ONE_PROTOTYPE = 2.0  # prototypes_used below this: one prototype takes every image


def collapse_signs(metrics: dict[str, float], embedding_dim: int | None = None,
                   teacher_outputs: int | None = None) -> list[str]:
    """The signs of collapse in a run's last logged statistics, as sentences (empty: healthy).

    metrics: the last value of each logged statistic (``embedding_std``, ``teacher_entropy``,
        ``prototypes_used``...).
    embedding_dim: D of the embedding whose spread ``embedding_std`` measures (None: not checked).
    teacher_outputs: K, the number of the teacher's outputs (None: not checked).
    """
    signs = []
    spread = metrics.get("embedding_std")
    if spread is not None and embedding_dim:
        healthy = embedding_dim ** -0.5
        if spread < COLLAPSED_SPREAD * healthy:
            signs.append(f"the embeddings collapsed: their spread (embedding_std) ended at {spread:.4f}, below "
                         f"{COLLAPSED_SPREAD:g} x 1/sqrt({embedding_dim}) = {COLLAPSED_SPREAD * healthy:.4f} "
                         f"(spread out: about {healthy:.4f}; collapsed: 0)")
    entropy = metrics.get("teacher_entropy")
    if entropy is not None and teacher_outputs:
        uniform = math.log(teacher_outputs)
        if entropy >= UNIFORM_ENTROPY * uniform:
            signs.append(f"the teacher's output went uniform: its entropy ended at {entropy:.3f}, "
                         f"{entropy / uniform:.0%} of ln {teacher_outputs} = {uniform:.3f} (the same flat "
                         f"distribution for every image)")
    used = metrics.get("prototypes_used")
    if used is not None and used < ONE_PROTOTYPE:
        signs.append(f"one prototype takes every image: the teacher's outputs use {used:.2f} prototypes "
                     f"(e^entropy of their batch mean), under {ONE_PROTOTYPE:g}")
    return signs


def collapse_warning(signs: list[str]) -> str:
    """One line to print for a collapsed run (empty when ``signs`` is)."""
    if not signs:
        return ""
    return ("WARNING: this run collapsed, its backbone is not worth transferring: " + "; ".join(signs)
            + ". Change the recipe (see lessons 04 and 05) before using it.")
