"""Homework grading: ``grade`` and ``check`` for every exercise, and the batch grader.

    from coursekit.grading import grade, check
    result = grade("simclr.nt_xent", my_nt_xent)   # never raises for a bad student function
    check("simclr.nt_xent", my_nt_xent)            # grade() and print a short summary

Each lesson's exercises live in their own module (``simclr.py``, ``moco.py``...), registered on
import; ``homework.py`` says which exercises each homework notebook holds; ``batch.py`` is
``coursekit grade``, which runs each submission in a sandboxed kernel (``sandbox.py``) and calls
its functions from this process through a data-only wire (``remote.py``, ``wire.py``), with its
results kept as they come (``results.py``) and reference copies found in the source
(``references.py``). See CONTRIBUTING.md, "Adding a graded exercise".
"""
from . import bottleneck, byol, detection, dino, dinov2, mae, moco, probe, segmentation, simclr  # noqa: F401 - registers the exercises
from .core import (
    DEFAULT_TIME_LIMIT,
    EXERCISES,
    GradeResult,
    check,
    get_exercise,
    grade,
    not_implemented_text,
    render,
)

__all__ = ["DEFAULT_TIME_LIMIT", "EXERCISES", "GradeResult", "check", "get_exercise", "grade",
           "not_implemented_text", "render"]
