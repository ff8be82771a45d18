"""Homework grading: ``grade`` and ``check`` for every exercise, and the batch grader.

    from coursekit.grading import grade, check
    result = grade("simclr.nt_xent", my_nt_xent)   # never raises for a bad student function
    check("simclr.nt_xent", my_nt_xent)            # grade() and print a short summary

Three rooms, each standing on the ones before it:

- ``core.py`` (the exercise registry, ``grade``, ``check``) and ``wire.py`` (the data-only calling
  convention: how a check calls the student's function, in this process for ``check()`` or in the
  student's kernel for the batch grader);
- ``homework/``: the exercise checks, one module per homework named after it (``simclr.py``...),
  registered on import, the helpers they share (``checks.py``) and which exercises each homework
  notebook holds (``HOMEWORK``);
- ``batch/``: ``coursekit grade``, which runs each submission in a sandboxed kernel (``sandbox.py``)
  and calls its functions from this process through the wire (``remote.py``), with its results
  kept as they come (``results.py``) and reference copies found in the source (``references.py``);
  ``runner.py`` puts them together.

See CONTRIBUTING.md, "Adding a graded exercise".
"""
from . import homework  # noqa: F401 - registers every exercise
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
