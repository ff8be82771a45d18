"""The batch grader, ``coursekit grade`` (the command line is ``coursekit/cli/grade.py``).

- ``runner``: ``grade_batch`` and ``grade_submission``: read each notebook, run it in a sandboxed
  kernel, grade its functions from this process (the module's docstring tells the whole story).
- ``sandbox``: the kernel's private folders, resource limits, the package fingerprint.
- ``remote``: the student's kernel as seen from the grader (``StudentKernel``, ``RemoteFunction``),
  through the data-only wire (``coursekit.grading.wire``).
- ``results``: rows kept as they come (the signed progress file), CSV, JSON and written answers.
- ``references``: graded functions that call or copy coursekit's own reference, found in the source.

It stands on the exercise checks (``coursekit.grading.homework``) and ``coursekit.grading.core``;
nothing below it imports it.
"""
from .runner import DEFAULT_TIMEOUT, find_submissions, grade_batch, grade_submission, homework_of, written_answers

__all__ = ["DEFAULT_TIMEOUT", "find_submissions", "grade_batch", "grade_submission", "homework_of", "written_answers"]
