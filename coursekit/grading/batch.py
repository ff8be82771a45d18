"""Batch grading of submitted homework notebooks: ``coursekit grade``.

Usage (instructors)::

    coursekit grade submissions/ --out grades.csv --json grades.json [--timeout 300] [--homework 02_simclr]

SUBMISSIONS are notebook files or folders of ``.ipynb`` files (searched recursively). Each
submission is copied alone into a temporary folder and executed top to bottom in its own fresh
Jupyter kernel (this Python environment, ``COURSEKIT_PROFILE=smoke``), every cell even when some
raise, within ``--timeout`` seconds for the whole notebook. Then the grader appends a cell of its
own: it reloads coursekit from disk (so a redefined ``check`` or a patched ``coursekit.grading``
changes nothing), looks up each exercise's function by name in the notebook's namespace, grades
it with ``grade`` and prints the results after a random marker that the submission cannot know in
advance. Outputs stored in the submission are never read.

The homework is ``--homework``, else the notebook's metadata ``coursekit.homework``, else the
known homework id contained in the file name (``alice_02_simclr.ipynb`` -> ``02_simclr``).

Statuses (one CSV row per submission, with per-exercise scores, total and max):

* ``ok`` — the notebook ran and was graded; ``reason`` notes cells that raised errors, if any;
* ``timeout`` — the notebook ran past the time limit: the running cell was interrupted, later
  cells were skipped, and the functions defined by then were graded;
* ``error`` — nothing could be graded: not a notebook, invalid JSON, unknown homework, the kernel
  died (``os._exit``, ``exit()``, a crash), or the grading output went missing; scores are 0.

This runs student code with your permissions. It protects against mistakes and simple tampering,
not against a determined attacker (who can read files, use the network, or patch torch itself):
grade in a container or on a throwaway machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .homework import HOMEWORK

DEFAULT_TIMEOUT = 300.0  # seconds for all cells of one notebook
EXERCISE_TIME_LIMIT = 20.0  # seconds for the checks of one exercise
KERNEL_STARTUP_TIMEOUT = 120.0
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds coursekit/


@dataclass
class SubmissionResult:
    """The grading of one submission (one CSV row)."""

    submission: str
    homework: str = ""
    status: str = "ok"
    reason: str = ""
    exercises: dict[str, dict] = field(default_factory=dict)  # exercise id -> GradeResult fields

    @property
    def total(self) -> int:
        return sum(e["score"] for e in self.exercises.values())

    @property
    def max_score(self) -> int:
        return sum(e["max_score"] for e in self.exercises.values())


# ---------------------------------------------------------------------------------------------
# Inside the student's kernel
# ---------------------------------------------------------------------------------------------


def grade_in_kernel(namespace: dict, exercise_ids: list[str], marker: str, time_limit: float) -> None:
    """Run in the submission's kernel by the grader's own cell: grade each exercise's function,
    found by name in ``namespace``, and print ``marker`` followed by the results as JSON."""
    from .core import GradeResult, get_exercise, grade

    results = {}
    for exercise_id in exercise_ids:
        ex = get_exercise(exercise_id)
        fn = namespace.get(ex.function_name)
        if fn is None:
            result = GradeResult(exercise_id, 0, ex.max_score, False,
                                 [f"function {ex.function_name} not found: keep the name the homework defines"])
        else:
            result = grade(exercise_id, fn, time_limit=time_limit)
        results[exercise_id] = asdict(result)
    print(marker + json.dumps(results), flush=True)


def _grader_cell(exercise_ids: list[str], marker: str, time_limit: float) -> str:
    """Source of the cell appended to every submission: fresh coursekit from disk, then grade."""
    return "\n".join([
        "import sys as _grader_sys, importlib as _grader_importlib",
        "for _grader_name in [n for n in list(_grader_sys.modules) if n.split('.')[0] == 'coursekit']:",
        "    del _grader_sys.modules[_grader_name]",
        f"_grader_sys.path.insert(0, {str(PACKAGE_ROOT)!r})",
        "_grader_importlib.import_module('coursekit.grading.batch').grade_in_kernel(",
        f"    dict(globals()), {exercise_ids!r}, {marker!r}, {time_limit!r})",
    ])


# ---------------------------------------------------------------------------------------------
# One submission
# ---------------------------------------------------------------------------------------------


def find_submissions(paths: list[str]) -> list[Path]:
    """Files as given (whatever their suffix), folders searched for ``.ipynb`` files, sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def homework_of(notebook, path: Path, override: str | None) -> str:
    """The homework id: the override, the notebook metadata, or a known id in the file name."""
    if override:
        return override
    declared = notebook.metadata.get("coursekit", {}).get("homework")
    if declared:
        return declared
    matches = [hw for hw in HOMEWORK if hw in path.stem]
    return max(matches, key=len) if matches else ""


def _read_notebook(path: Path):
    """The notebook, or a ``ValueError`` whose message is the reason for the CSV."""
    import nbformat

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"not a notebook: cannot read the file as text ({type(error).__name__})") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a notebook: invalid JSON ({error.msg} at line {error.lineno})") from None
    try:
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # noqa: BLE001 - any malformed notebook
        raise ValueError(f"not a notebook: {str(error).splitlines()[0][:200]}") from None
    return notebook


def grade_submission(path: Path, timeout: float = DEFAULT_TIMEOUT, homework: str | None = None,
                     exercise_time_limit: float = EXERCISE_TIME_LIMIT) -> SubmissionResult:
    """Execute and grade one submission; never raises because of the submission."""
    result = SubmissionResult(str(path))
    try:
        notebook = _read_notebook(path)
    except ValueError as error:
        return _failed(result, "error", str(error))
    result.homework = homework_of(notebook, path, homework)
    if result.homework not in HOMEWORK:
        known = ", ".join(HOMEWORK)
        return _failed(result, "error", f"unknown homework {result.homework or '(none found)'!r}: name the file "
                                        f"after one of {known} or pass --homework")
    exercise_ids = HOMEWORK[result.homework]
    _zero_scores(result, exercise_ids)
    marker = f"@@coursekit-grades-{secrets.token_hex(16)}@@"
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-") as folder:
        shutil.copy(path, Path(folder) / "submission.ipynb")
        try:
            executed, timed_out_at = _execute(notebook, Path(folder), exercise_ids, marker, timeout,
                                              exercise_time_limit)
        except Exception as error:  # noqa: BLE001 - the kernel died or could not start
            return _failed(result, "error", _kernel_failure(error))
    _read_grades(result, executed, marker, exercise_ids, timed_out_at, timeout)
    return result


def _zero_scores(result: SubmissionResult, exercise_ids: list[str]) -> None:
    from .core import get_exercise

    for exercise_id in exercise_ids:
        result.exercises[exercise_id] = {"exercise_id": exercise_id, "score": 0,
                                         "max_score": get_exercise(exercise_id).max_score,
                                         "passed": False, "feedback": ["not graded"]}


def _failed(result: SubmissionResult, status: str, reason: str) -> SubmissionResult:
    result.status, result.reason = status, reason
    return result


def _kernel_failure(error: Exception) -> str:
    name = type(error).__name__
    if name == "DeadKernelError":
        return "the kernel died (the notebook called os._exit() or exit(), or crashed)"
    return f"could not run the notebook: {name}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _execute(notebook, folder: Path, exercise_ids: list[str], marker: str, timeout: float,
             exercise_time_limit: float):
    """Run the student's cells within ``timeout`` seconds in all, then the grader's cell.

    Returns the executed notebook and the index of the cell that ran past the limit (or None).
    """
    import nbformat
    from nbclient import NotebookClient

    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.cells.append(nbformat.v4.new_code_cell(_grader_cell(exercise_ids, marker, exercise_time_limit)))
    grading_time = 60 + exercise_time_limit * max(len(exercise_ids), 1)
    deadline = time.monotonic() + timeout
    client = NotebookClient(
        notebook, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "Timeout", "evalue": "the time limit was reached", "traceback": []},
        startup_timeout=KERNEL_STARTUP_TIMEOUT, shutdown_kernel="immediate",
        resources={"metadata": {"path": str(folder)}},
    )
    timed_out_at = None
    env = {**os.environ, "COURSEKIT_PROFILE": "smoke"}
    with client.setup_kernel(env=env, cwd=str(folder)):
        student_cells = len(notebook.cells) - 1
        for index, cell in enumerate(notebook.cells[:student_cells]):
            if cell.cell_type != "code":
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            client.timeout = math.ceil(remaining)
            started = time.monotonic()
            client.execute_cell(cell, index)
            if time.monotonic() - started >= client.timeout and timed_out_at is None:
                timed_out_at = index
        client.timeout = int(grading_time)
        client.execute_cell(notebook.cells[-1], student_cells)
    return notebook, timed_out_at


def _read_grades(result: SubmissionResult, executed, marker: str, exercise_ids: list[str],
                 timed_out_at: int | None, timeout: float) -> None:
    """Scores from the grader cell's own output (the line after the marker); status and reason."""
    grades = None
    for output in executed.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines() if output.get("output_type") == "stream" else []:
            if line.startswith(marker):
                grades = json.loads(line[len(marker):])
    if grades is None or set(grades) != set(exercise_ids):
        _failed(result, "error", "the grading cell printed no results (the notebook may have broken the kernel's "
                                 "output or the import of coursekit)")
        return
    result.exercises = grades
    if timed_out_at is not None:
        _failed(result, "timeout", f"ran past the {timeout:g} s limit at cell {timed_out_at}; later cells were "
                                   "skipped; the functions defined by then were graded")
    else:
        missing = [e["feedback"][0].split(":")[0] for e in grades.values() if e["feedback"][:1]
                   and e["feedback"][0].startswith("function ")]
        result.reason = "; ".join(filter(None, [_cell_errors(executed), ", ".join(missing)]))


def _cell_errors(executed) -> str:
    errors = [(index, output.get("ename", "error")) for index, cell in enumerate(executed.cells[:-1])
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    if not errors:
        return ""
    index, name = errors[0]
    return f"{len(errors)} cell(s) raised errors (first: cell {index}, {name})"


# ---------------------------------------------------------------------------------------------
# Output files and the command line
# ---------------------------------------------------------------------------------------------


def exercise_columns(results: list[SubmissionResult]) -> list[str]:
    """Exercise ids of all graded homework, in homework order."""
    homework = {r.homework for r in results}
    return [eid for hw, ids in HOMEWORK.items() if hw in homework for eid in ids]


def write_csv(results: list[SubmissionResult], path: Path) -> None:
    columns = exercise_columns(results)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["submission", "homework", "status", "reason", *columns, "total", "max"])
        for r in results:
            scores = [r.exercises[c]["score"] if c in r.exercises else "" for c in columns]
            writer.writerow([r.submission, r.homework, r.status, r.reason, *scores, r.total, r.max_score])


def write_json(results: list[SubmissionResult], path: Path) -> None:
    rows = [{**asdict(r), "total": r.total, "max": r.max_score} for r in results]
    Path(path).write_text(json.dumps(rows, indent=2), encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submissions", nargs="+", help="notebook files or folders of .ipynb files")
    parser.add_argument("--out", required=True, type=Path, help="CSV file: one row per submission")
    parser.add_argument("--json", type=Path, help="JSON file with every score and its feedback")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds for all cells of one notebook (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--homework", help="homework id for every submission (default: from metadata or file name)")


def run(args: argparse.Namespace) -> int:
    submissions = find_submissions(args.submissions)
    results = []
    for path in submissions:
        results.append(grade_submission(path, timeout=args.timeout, homework=args.homework))
        r = results[-1]
        print(f"{r.submission}: {r.status} {r.total}/{r.max_score} {r.reason}".rstrip(), flush=True)
    write_csv(results, args.out)
    if args.json:
        write_json(results, args.json)
    print(f"graded {len(results)} submission(s) into {args.out}")
    return 0
