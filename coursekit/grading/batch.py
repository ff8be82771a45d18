"""Batch grading of submitted homework notebooks: ``coursekit grade``.

Usage (instructors)::

    coursekit grade submissions/ --out grades.csv --json grades.json [--timeout 300] [--homework 02_simclr]
                    [--resume] [--memory-limit 6144] [--cpu-limit 900] [--process-limit 256]

SUBMISSIONS are notebook files or folders of ``.ipynb`` files (searched recursively). For each:

1. The notebook is read as data; the homework is ``--homework``, else its metadata
   ``coursekit.homework``, else a known homework id in the file name (``alice_02_simclr.ipynb``).
   Its source is read (never run here) to find graded functions that call coursekit's own
   reference implementation (``references``): those exercises score 0.
2. It runs top to bottom in its own Jupyter kernel inside a sandbox (``sandbox``: private cwd,
   HOME and TMPDIR, resource limits, every process ended afterwards), every cell even when some
   raise, within ``--timeout`` seconds for the whole notebook. Stored outputs are never read.
3. The grader's own cell then connects the kernel back to this process (``wire.serve``). The
   checks run here, in the grader: they send the kernel inputs drawn with a secret seed, the
   student's function is called there, and only plain arrays come back (``remote``, ``wire``).
   No score, marker or grading code is ever in the student's process.
4. The row is appended to the progress file and the CSV, JSON and written answers are rewritten
   (``results``). Then the installed coursekit package is checked unchanged; if it changed, the
   batch stops (fix the installation, then ``--resume``).

Statuses: ``ok`` (graded; ``reason`` notes cells that raised and functions not found),
``timeout`` (the notebook ran past ``--timeout``: later cells were skipped, the functions defined
by then were graded), ``error`` (nothing graded: not a notebook, unknown homework, the kernel
died or never answered, the grader failed on it, or the package changed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import checks, references, sandbox
from .core import EXERCISES, GradeResult, get_exercise, grade_here
from .homework import HOMEWORK
from .remote import RemoteFunction, StudentKernel
from .results import (SubmissionResult, append_progress, display_name, progress_path, read_progress, write_all)

DEFAULT_TIMEOUT = 300.0  # seconds for all cells of one notebook
EXERCISE_TIME_LIMIT = 20.0  # seconds for the checks of one exercise
KERNEL_STARTUP_TIMEOUT = 120.0
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the coursekit package the kernels import
EXERCISE_NOTEBOOKS = PACKAGE_DIR.parent / "exercises"  # the questions as handed out (when present)
ANSWER_PROMPT = "*Your answer here: replace this line with a few sentences.*"


# ---------------------------------------------------------------------------------------------
# Reading a submission (as data)
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
        return str(declared)
    matches = [hw for hw in HOMEWORK if hw in display_name(path.stem)]
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


def written_answers(notebook, homework: str) -> list[dict]:
    """The answers to the homework's questions: for every markdown cell headed "... Question ...",
    its text and the markdown cells after it (up to the next code cell or heading), without the
    question's own words when the handed-out notebook is at hand."""
    handed_out = _question_texts(EXERCISE_NOTEBOOKS / f"{homework}.ipynb")
    answers, current = [], None
    for cell in notebook.cells:
        source = cell.source.strip()
        heading = cell.cell_type == "markdown" and source.startswith("#")
        if cell.cell_type != "markdown" or heading:
            current = None
        if heading and "question" in source.splitlines()[0].lower():
            question, _, text = source.partition("\n")
            question, text = question.lstrip("#").strip(), text.strip()
            prompt = handed_out.get(question, "").split(ANSWER_PROMPT)[0]  # the question's own words
            if prompt and text.startswith(prompt):
                text = text[len(prompt):]
            current = {"question": question, "answer": text.replace(ANSWER_PROMPT, "").strip()}
            answers.append(current)
        elif current is not None and source:
            current["answer"] = (current["answer"] + "\n\n" + source).strip()
    for answer in answers:
        answer["answered"] = bool(answer["answer"])
    return answers


def _question_texts(path: Path) -> dict[str, str]:
    """Question heading -> the question cell as handed out (empty when the notebook is not here)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return {}
    texts = {}
    for cell in cells:
        source = "".join(cell.get("source", [])).strip()
        heading, _, text = source.partition("\n")
        if cell.get("cell_type") == "markdown" and heading.startswith("#") and "question" in heading.lower():
            texts[heading.lstrip("#").strip()] = text.strip()
    return texts


# ---------------------------------------------------------------------------------------------
# Grading one submission
# ---------------------------------------------------------------------------------------------


def grade_submission(path: Path, timeout: float = DEFAULT_TIMEOUT, homework: str | None = None,
                     exercise_time_limit: float = EXERCISE_TIME_LIMIT,
                     limits: sandbox.Limits = sandbox.Limits()) -> SubmissionResult:
    """Execute and grade one submission in its sandbox; never raises because of the submission."""
    result = SubmissionResult(display_name(path))
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
    _zero_scores(result, exercise_ids, "not graded")
    result.answers = written_answers(notebook, result.homework)
    trees = references.parse_cells([cell.source for cell in notebook.cells if cell.cell_type == "code"])
    copies = {eid: references.reference_use(trees, get_exercise(eid).function_name, get_exercise(eid).reference())
              for eid in exercise_ids}
    before = sandbox.descendants()
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-", ignore_cleanup_errors=True) as root:
        folders = sandbox.Folders(Path(root))
        shutil.copy(path, folders.work / "submission.ipynb")
        try:
            grades, timed_out_at, executed = _execute(notebook, folders, exercise_ids, copies, timeout,
                                                      exercise_time_limit, limits)
        except Exception as error:  # noqa: BLE001 - the kernel died or could not start
            grades, failure = None, _kernel_failure(error)
        else:
            failure = "the kernel did not answer the grader (it crashed, or the notebook broke it)"
        finally:
            ended = sandbox.end_new_processes(before)  # before the folders go: nothing may write there
    if ended:
        result.reason = f"{ended} leftover process(es) ended"
    if grades is None:
        return _failed(result, "error", "; ".join(filter(None, [failure, result.reason])))
    result.exercises = {eid: asdict(grade) for eid, grade in grades.items()}
    if timed_out_at is not None:
        _failed(result, "timeout", f"ran past the {timeout:g} s limit at cell {timed_out_at}; later cells were "
                                   "skipped; the functions defined by then were graded")
    else:
        missing = [g.feedback[0].split(":")[0] for g in grades.values() if g.feedback[:1]
                   and g.feedback[0].startswith("function ")]
        result.reason = "; ".join(filter(None, [_cell_errors(executed), ", ".join(missing), result.reason]))
    return result


def _zero_scores(result: SubmissionResult, exercise_ids: list[str], why: str) -> None:
    for exercise_id in exercise_ids:
        result.exercises[exercise_id] = asdict(GradeResult(exercise_id, 0, get_exercise(exercise_id).max_score,
                                                           False, [why]))


def _failed(result: SubmissionResult, status: str, reason: str) -> SubmissionResult:
    result.status, result.reason = status, reason
    return result


def _kernel_failure(error: Exception) -> str:
    name = type(error).__name__
    if name == "DeadKernelError":
        return "the kernel died (the notebook called os._exit() or exit(), crashed, or hit a resource limit)"
    return f"could not run the notebook: {name}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _sandboxed_manager(limits: sandbox.Limits):
    """A Jupyter kernel manager whose kernels start in their own session under ``limits``."""
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            return sandbox.limited_command(super().format_kernel_cmd(extra_arguments), limits)

    return SandboxedKernelManager


def _execute(notebook, folders: sandbox.Folders, exercise_ids: list[str], copies: dict[str, str], timeout: float,
             exercise_time_limit: float, limits: sandbox.Limits):
    """Run the student's cells within ``timeout`` seconds in all, then grade each exercise through
    the kernel. Returns (grades or None if the kernel never answered, index of the cell that ran
    past the limit or None, the executed notebook)."""
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    deadline = time.monotonic() + timeout
    client = NotebookClient(
        notebook, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "Timeout", "evalue": "the time limit was reached", "traceback": []},
        startup_timeout=KERNEL_STARTUP_TIMEOUT, shutdown_kernel="immediate",
        kernel_manager_class=_sandboxed_manager(limits), resources={"metadata": {"path": str(folders.work)}},
    )
    timed_out_at = None
    # the kernel imports the coursekit this grader runs (and watches for changes), whatever the cwd
    python_path = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")]))
    env = folders.environment({**os.environ, "COURSEKIT_PROFILE": "smoke", "PYTHONPATH": python_path})
    with client.setup_kernel(env=env, cwd=str(folders.work)):
        for index, cell in enumerate(notebook.cells):
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

        def alive() -> bool:
            return bool(run_sync(client.km.is_alive)())

        kernel = StudentKernel(folders.work)
        try:
            client.kc.execute(kernel.runner_cell(), store_history=False)
            grades = _grade_through(kernel, exercise_ids, copies, exercise_time_limit, alive) \
                if kernel.connect(alive) else None
        finally:
            kernel.stop()
    return grades, timed_out_at, notebook


def _grade_through(kernel: StudentKernel, exercise_ids: list[str], copies: dict[str, str], time_limit: float,
                   alive) -> dict[str, GradeResult]:
    """Grade every exercise: its checks run here, each call of the student's function in the kernel."""
    checks.set_input_salt(secrets.randbelow(2**31))  # inputs the submission cannot know in advance
    grades: dict[str, GradeResult] = {}
    kernel_lost = False
    for exercise_id in exercise_ids:
        ex = get_exercise(exercise_id)
        if copies.get(exercise_id):
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False, [
                f"{ex.function_name} calls coursekit's own reference implementation ({copies[exercise_id]}): "
                "the exercise asks for your own code"])
            continue
        opened = None if kernel_lost else kernel.open_exercise(ex.function_name, time_limit, alive)
        if opened is None:
            kernel_lost = True
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False,
                                              ["not graded: the kernel stopped answering the grader"])
            continue
        connection, hello = opened
        if not hello.get("found"):
            feedback = f"function {ex.function_name} not found: keep the name the homework defines"
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False, [feedback])
        elif not hello.get("callable"):
            feedback = f"{ex.function_name} is a {str(hello.get('type'))[:40]}, not a function"
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False, [feedback])
        else:
            remote = RemoteFunction(connection, time.monotonic() + time_limit)
            grades[exercise_id] = grade_here(ex, remote, time_limit)
        kernel_lost = not kernel.close_exercise(connection, time_limit)
    checks.set_input_salt(0)
    return grades


def _cell_errors(executed) -> str:
    errors = [(index, output.get("ename", "error")) for index, cell in enumerate(executed.cells)
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    if not errors:
        return ""
    index, name = errors[0]
    return f"{len(errors)} cell(s) raised errors (first: cell {index}, {name})"


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = sandbox.Limits()
    parser.add_argument("submissions", nargs="+", help="notebook files or folders of .ipynb files")
    parser.add_argument("--out", required=True, type=Path,
                        help="CSV file: one row per submission (beside it: OUT.progress.jsonl and OUT.answers.md)")
    parser.add_argument("--format", choices=("csv", "gradescope"), default="csv",
                        help="what --out holds: the CSV, or Gradescope's results.json for the one student whose "
                             "notebooks are SUBMISSIONS (e.g. /autograder/results/results.json)")
    parser.add_argument("--json", type=Path, help="JSON file with every score, its feedback and the written answers")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds for all cells of one notebook (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--homework", help="homework id for every submission (default: from metadata or file name)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of the progress file and grade only the submissions it lacks")
    parser.add_argument("--memory-limit", type=int, default=defaults.memory_mb,
                        help=f"MiB of address space per process of a submission (default {defaults.memory_mb})")
    parser.add_argument("--cpu-limit", type=int, default=defaults.cpu_seconds,
                        help=f"CPU seconds per process of a submission (default {defaults.cpu_seconds})")
    parser.add_argument("--process-limit", type=int, default=defaults.processes,
                        help=f"processes and threads a submission may add (default {defaults.processes})")


def run(args: argparse.Namespace) -> int:
    for name in ("memory_limit", "cpu_limit", "process_limit"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    for output in filter(None, [args.out, args.json]):
        if not output.parent.is_dir():
            raise SystemExit(f"the folder of {output} does not exist")
    if args.homework and args.homework not in HOMEWORK:
        raise SystemExit(f"unknown homework {args.homework!r}; known: {', '.join(HOMEWORK)}")
    limits = sandbox.Limits(args.memory_limit, args.cpu_limit, args.process_limit)
    submissions = find_submissions(args.submissions)
    progress = progress_path(args.out)
    results = read_progress(progress) if args.resume else []
    if not args.resume:
        progress.unlink(missing_ok=True)
    done = {r.submission for r in results}
    for exercise in EXERCISES.values():  # import every reference now, before any submission runs
        exercise.reference()
    package = sandbox.fingerprint(PACKAGE_DIR)
    sandbox.become_subreaper()
    write_all(results, args.out, args.json, args.format)
    for path in submissions:
        if display_name(path) in done:
            continue
        before, started = sandbox.descendants(), time.monotonic()
        try:
            result = grade_submission(path, timeout=args.timeout, homework=args.homework, limits=limits)
        except Exception as error:  # noqa: BLE001 - a grader bug must not lose the batch
            result = _failed(SubmissionResult(display_name(path)), "error",
                             f"the grader failed on this submission: {type(error).__name__}: {str(error)[:200]}")
        sandbox.end_new_processes(before)
        changed = sandbox.changed_files(package, sandbox.fingerprint(PACKAGE_DIR))
        if changed:
            _zero_scores(result, HOMEWORK.get(result.homework, []), "not graded: the submission changed coursekit")
            _failed(result, "error", f"the installed coursekit package changed while this submission ran "
                                     f"({', '.join(changed[:3])}): grading stopped")
        results.append(result)
        append_progress(progress, result)
        write_all(results, args.out, args.json, args.format)
        print(f"{result.submission}: {result.status} {result.total}/{result.max_score} "
              f"({time.monotonic() - started:.1f} s) {result.reason}".rstrip(), flush=True)
        if changed:
            print(f"stopped: the coursekit package at {PACKAGE_DIR} changed ({', '.join(changed)}). Reinstall it, "
                  "then run again with --resume to grade the rest.", flush=True)
            return 1
    print(f"graded {len(results)} submission(s) into {args.out}")
    return 0
