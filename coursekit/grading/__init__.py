"""Homework grading: ``grade`` and ``check`` for every exercise, and the batch grader.

    from coursekit.grading import grade, check
    result = grade("simclr.nt_xent", my_nt_xent)   # never raises for a bad student function
    check("simclr.nt_xent", my_nt_xent)            # grade() and print a short summary

Each homework's exercises live in a module named after it (``simclr.py``, ``linear_probe.py``...), registered on
import; ``homework.py`` says which exercises each homework notebook holds; ``batch.py`` is
``coursekit grade``, which runs each submission in a sandboxed kernel (``sandbox.py``) and calls
its functions from this process through a data-only wire (``remote.py``, ``wire.py``), with its
results kept as they come (``results.py``) and reference copies found in the source
(``references.py``). See CONTRIBUTING.md, "Adding a graded exercise".
"""
from . import (byol, dino, dinov2, label_bottleneck, linear_probe, mae, moco, segmentation,  # noqa: F401 - registers
               simclr, yolo_transfer)  # the exercises; one file per homework, named after it
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
