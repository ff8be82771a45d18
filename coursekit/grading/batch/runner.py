"""Batch grading of submitted homework notebooks: ``coursekit grade``.

Usage (instructors)::

    coursekit grade submissions/ --out grades.csv --json grades.json [--timeout 300] [--homework 02_simclr]
                    [--resume] [--memory-limit 6144] [--cpu-limit 900] [--process-limit 256]

SUBMISSIONS are notebook files or folders of ``.ipynb`` files (searched recursively). A submission
that is a symbolic link to a file outside its folder, or to another submission, is refused. Each
one is graded in a forked worker of this process (``grade_in_worker``) whose memory may grow by
``GRADER_MEMORY_MB`` and which is killed past ``wall_limit``: one submission costs at most its row.

1. The notebook is read as data, within the caps below (``MAX_*``: file, cells, source), its
   stored outputs dropped unread; the homework is ``--homework``, else a known homework id in
   the file name (``alice_02_simclr.ipynb``), else its metadata ``coursekit.homework``.
   Its source is read (never run here) to find graded functions that call coursekit's own
   reference implementation, or are a copy of its source with the names changed
   (``references``): those exercises score 0.
2. It runs top to bottom in its own Jupyter kernel inside a sandbox (``sandbox``: private cwd,
   HOME and TMPDIR, resource limits, every process ended afterwards), every cell even when some
   raise, within ``--timeout`` seconds for the whole notebook. Stored outputs are never read.
3. The grader's own cell then connects the kernel back to this process (``wire.serve``). The
   checks run here, in the grader: they send the kernel inputs drawn with a secret seed, the
   student's function is called there, and only plain arrays come back (``remote``, ``wire``).
   No score, marker or grading code is ever in the student's process.
4. The row is appended, signed, to the progress file and the CSV, JSON and written answers are
   rewritten (``results``). Then the installed coursekit package (its ``.pyc`` files included)
   is checked unchanged; if it changed, the batch stops (fix the installation, then ``--resume``).

While cells run, the grader keeps of their outputs only the names of errors; feedback names
exceptions and types only when Python, numpy or torch define them, never their messages.

Statuses: ``ok`` (graded; ``reason`` notes cells that raised and functions not found),
``timeout`` (the notebook ran past ``--timeout``: later cells were skipped, the functions defined
by then were graded), ``error`` (nothing graded: not a notebook, unknown homework, the kernel
died or never answered, the grader failed on it, or the package changed).
"""
from __future__ import annotations

import json
import math
import os
import resource
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ..core import EXERCISES, GradeResult, get_exercise, grade_here
from ..homework import HOMEWORK, checks
from ..wire import safe_name
from . import references, sandbox
from .remote import RemoteFunction, StudentKernel
from .results import (SubmissionResult, append_progress, display_name, key_path, new_key, progress_path, read_key,
                      read_progress, write_all)

DEFAULT_TIMEOUT = 300.0  # seconds for all cells of one notebook
EXERCISE_TIME_LIMIT = 20.0  # seconds for the checks of one exercise
KERNEL_STARTUP_TIMEOUT = 120.0
PACKAGE_DIR = Path(__file__).resolve().parents[2]  # the coursekit package the kernels import
EXERCISE_NOTEBOOKS = PACKAGE_DIR.parent / "exercises"  # the questions as handed out (when present)
ANSWER_PROMPT = "*Your answer here: replace this line with a few sentences.*"

# Caps on what one submission may cost the grader, each checked before what it bounds is parsed or kept
MAX_NOTEBOOK_BYTES = 32 * 2**20  # the file, plots included: the handed-out notebooks are under 1 MiB
MAX_CELLS = 500  # cells of one notebook: the homework notebooks have under 40
MAX_CELL_SOURCE_CHARS = 64 * 2**10  # characters of source of one cell: the solutions' longest is under 6 KiB
MAX_SOURCE_CHARS = 512 * 2**10  # characters of source of all cells together (parsed here): the solutions' is under 20 KiB
MAX_KERNEL_MESSAGE_BYTES = 64 * 2**20  # one kernel message: a plot is under 1 MiB; past it, outputs are cut off
GRADER_MEMORY_MB = 3072  # address space the grader's worker may add for one submission: an honest one adds < 1 GiB
WALL_SLACK = 60.0  # seconds past the sum of the grading's own time limits before a submission's worker is killed


# ---------------------------------------------------------------------------------------------
# Reading a submission (as data)
# ---------------------------------------------------------------------------------------------


def find_submissions(paths: list[str]) -> list[Path]:
    """Files as given (whatever their suffix), folders searched for ``.ipynb`` files, sorted."""
    return [path for path, _ in _find_with_folders(paths)]


def _find_with_folders(paths: list[str]) -> list[tuple[Path, Path]]:
    """Each submission with the folder it must stay in: the folder searched, or a file's own folder."""
    found: list[tuple[Path, Path]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [(p, path) for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
        else:
            found.append((path, path.parent))
    return found


def link_problem(path: Path, folder: Path, others: set[Path]) -> str:
    """Why a submission reached through a symbolic link is refused ("" when it is not): its target
    must lie inside ``folder`` and be no other submission (``others``: their resolved paths)."""
    real = Path(os.path.realpath(path))
    if real == Path(os.path.abspath(path)):
        return ""
    if not real.is_relative_to(os.path.realpath(folder)):
        return "refused: a symbolic link to a file outside the submissions folder"
    if real in others:
        return "refused: a symbolic link to another submission"
    return ""


def homework_of(notebook, path: Path, override: str | None) -> str:
    """The homework id: the override, else a known id in the file name, else the notebook metadata
    (the file name wins: a notebook cannot name itself another homework than its file says)."""
    if override:
        return override
    matches = [hw for hw in HOMEWORK if hw in display_name(path.stem)]
    if matches:
        return max(matches, key=len)
    declared = notebook.metadata.get("coursekit", {}).get("homework")
    return str(declared) if declared else ""


def _read_notebook(path: Path):
    """The notebook without its stored outputs, or a ``ValueError`` whose message is the reason for
    the CSV. The caps are checked before what they bound is parsed: the file's size before it is
    read, the cells' number and sizes before nbformat or the reference check parse them."""
    import nbformat
    import nbformat.v4.nbjson

    try:
        with open(path, "rb") as file:
            data = file.read(MAX_NOTEBOOK_BYTES + 1)
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"refused: the file is over the grader's cap of {MAX_NOTEBOOK_BYTES // 2**20} MiB")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"not a notebook: cannot read the file as text ({type(error).__name__})") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a notebook: invalid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise ValueError("not a notebook: JSON nested too deeply") from None
    del data, text
    if not isinstance(content, dict) or content.get("nbformat") != 4:
        raise ValueError("not a notebook in format 4 (save it with a current Jupyter or Colab)")
    _bound_cells(content)
    try:
        notebook = nbformat.v4.nbjson.JSONReader().to_notebook(content)
        nbformat.validate(notebook)
    except Exception as error:  # noqa: BLE001 - any malformed notebook
        raise ValueError(f"not a notebook: {str(error).splitlines()[0][:200]}") from None
    return notebook


def _bound_cells(content) -> None:
    """Refuse a notebook over the cell caps; drop the stored outputs and attachments (never used)."""
    cells = content.get("cells")
    if not isinstance(cells, list):
        return  # nbformat names what is missing
    if len(cells) > MAX_CELLS:
        raise ValueError(f"refused: {len(cells)} cells, over the grader's cap of {MAX_CELLS}")
    total = 0
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        size = sum(len(line) for line in source if isinstance(line, str)) if isinstance(source, list) else \
            len(source) if isinstance(source, str) else 0
        if size > MAX_CELL_SOURCE_CHARS:
            raise ValueError(f"refused: cell {index} holds {size} characters of source, over the grader's cap of "
                             f"{MAX_CELL_SOURCE_CHARS} per cell")
        total += size
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.pop("attachments", None)
    if total > MAX_SOURCE_CHARS:
        raise ValueError(f"refused: the cells hold {total} characters of source, over the grader's cap of "
                         f"{MAX_SOURCE_CHARS}")


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
                     limits: sandbox.Limits = sandbox.Limits(), hidden: tuple[Path, ...] = ()) -> SubmissionResult:
    """Execute and grade one submission in its sandbox; never raises because of the submission.
    ``hidden``: files and folders the kernel must not see (the grader's outputs, other submissions),
    replaced by empty ones when the kernel runs in namespaces (``sandbox.isolated_command``)."""
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
    copies = {eid: _reference_feedback(trees, get_exercise(eid)) for eid in exercise_ids}
    before = sandbox.descendants()
    # the kernel's channels are socket files in this folder, and a socket's path has at most 107 bytes
    base = "/tmp" if len(tempfile.gettempdir()) > 60 and os.path.isdir("/tmp") else None
    with tempfile.TemporaryDirectory(prefix="ckg-", dir=base, ignore_cleanup_errors=True) as root:
        folders = sandbox.Folders(Path(root))
        shutil.copy(path, folders.work / "submission.ipynb")
        try:
            grades, timed_out_at, executed = _execute(notebook, folders, exercise_ids, copies, timeout,
                                                      exercise_time_limit, limits, hidden)
        except Exception as error:  # noqa: BLE001 - the kernel died or could not start
            grades, failure = None, _kernel_failure(error)
        else:
            failure = "the kernel did not answer the grader (it crashed, or the notebook broke it)"
        finally:
            # before the folders go: nothing may write there (a kernel's namespace is given a moment to end)
            ended = sandbox.end_new_processes(before, grace=2.0 if sandbox.namespaces_available() else 0.0)
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


def _reference_feedback(trees, ex) -> str:
    """The feedback of an exercise whose graded function calls or copies coursekit's reference, else ""."""
    used = references.reference_use(trees, ex.function_name, ex.reference())
    if used:
        return (f"{ex.function_name} calls coursekit's own reference implementation ({used}): "
                "the exercise asks for your own code")
    if references.copies_reference(trees, ex.function_name, ex.reference()):
        return (f"{ex.function_name} is coursekit's own reference implementation with its names changed "
                f"({ex.reference_path.replace(':', '.')}): the exercise asks for your own code")
    return ""


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


def _sandboxed_manager(limits: sandbox.Limits, folders: sandbox.Folders, hidden: tuple[Path, ...]):
    """A Jupyter kernel manager whose kernels start in their own session under ``limits``, in their
    own namespaces where ``sandbox.namespaces_available()`` (there the Jupyter channels are socket
    files in ``folders.kernel``: the kernel has no network), and whose clients drop (and disconnect)
    any kernel message over ``MAX_KERNEL_MESSAGE_BYTES`` before reading it."""
    isolated = sandbox.namespaces_available()
    import zmq
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class BoundedKernelClient(AsyncKernelClient):
        @default("context")
        def _context_default(self):
            context = super()._context_default()
            context.setsockopt(zmq.MAXMSGSIZE, MAX_KERNEL_MESSAGE_BYTES)  # default of every socket it makes
            return context

    class SandboxedKernelManager(AsyncKernelManager):
        @default("client_factory")
        def _client_factory_default(self):
            return BoundedKernelClient

        @default("transport")
        def _transport_default(self):
            return "ipc" if isolated else "tcp"

        @default("ip")
        def _ip_default(self):
            return str(folders.kernel / "c") if isolated else "127.0.0.1"

        @property
        def kernel_spec(self):
            spec = super().kernel_spec
            if isolated and spec is not None:  # a signal would reach bwrap, not the kernel: ask the kernel itself
                spec.interrupt_mode = "message"
            return spec

        def format_kernel_cmd(self, extra_arguments=None):
            command = sandbox.limited_command(super().format_kernel_cmd(extra_arguments), limits)
            return sandbox.isolated_command(command, folders, hidden) if isolated else command

    return SandboxedKernelManager


def _error_names_client():
    """A notebook client that keeps, of the outputs the kernel sends, only the names of errors."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    class ErrorNamesClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] != "error":
                return None
            out = new_output("error", ename=safe_name(msg["content"].get("ename")), evalue="", traceback=[])
            outs.append(out)
            return out

        def handle_comm_msg(self, outs, msg, cell_index):
            return None  # widget state is never kept

    return ErrorNamesClient


def _execute(notebook, folders: sandbox.Folders, exercise_ids: list[str], copies: dict[str, str], timeout: float,
             exercise_time_limit: float, limits: sandbox.Limits, hidden: tuple[Path, ...] = ()):
    """Run the student's cells within ``timeout`` seconds in all, then grade each exercise through
    the kernel. Returns (grades or None if the kernel never answered, index of the cell that ran
    past the limit or None, the executed notebook)."""
    from nbclient.util import run_sync

    deadline = time.monotonic() + timeout  # the notebook holds no outputs: _read_notebook dropped them
    client = _error_names_client()(
        notebook, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "Timeout", "evalue": "the time limit was reached", "traceback": []},
        startup_timeout=KERNEL_STARTUP_TIMEOUT, shutdown_kernel="immediate",
        kernel_manager_class=_sandboxed_manager(limits, folders, hidden), resources={"metadata": {"path": str(folders.work)}},
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

        kernel = StudentKernel(folders.channel, abstract=not sandbox.namespaces_available())
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
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False, [copies[exercise_id]])
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
            feedback = f"{ex.function_name} is a {safe_name(hello.get('type'))}, not a function"
            grades[exercise_id] = GradeResult(exercise_id, 0, ex.max_score, False, [feedback])
        else:
            remote = RemoteFunction(connection, time.monotonic() + time_limit)
            grades[exercise_id] = grade_here(ex, remote, time_limit)
        kernel_lost = not kernel.close_exercise(connection, time_limit)
    checks.set_input_salt(0)
    return grades


def _cell_errors(executed) -> str:
    errors = [(index, safe_name(output.get("ename"))) for index, cell in enumerate(executed.cells)
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    if not errors:
        return ""
    index, name = errors[0]
    return f"{len(errors)} cell(s) raised errors (first: cell {index}, {name})"


def wall_limit(timeout: float, exercise_time_limit: float = EXERCISE_TIME_LIMIT) -> float:
    """Seconds one submission may take in all, whatever it patches: the notebook's timeout, the
    kernel's start, and each exercise of the longest homework with its connection, plus slack."""
    from .remote import CONNECT_TIMEOUT

    exercises = max(len(ids) for ids in HOMEWORK.values())
    return timeout + KERNEL_STARTUP_TIMEOUT + CONNECT_TIMEOUT + exercises * (exercise_time_limit + 15.0) + WALL_SLACK


def grade_in_worker(path: Path, wall_seconds: float, **options) -> tuple[SubmissionResult, int | None]:
    """``grade_submission`` in a forked worker whose address space may grow by ``GRADER_MEMORY_MB``,
    killed (with everything it started) after ``wall_seconds``. Returns the row and the worker's
    peak resident memory in MiB (None when it did not finish): whatever one submission does to
    the grader's side, it costs at most its own row."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            os.close(read_end)
            payload = _worker(path, options)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    data, deadline = b"", time.monotonic() + wall_seconds
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
            chunk = pipe.read(1 << 20) if ready else None
            if chunk == b"":
                break
            data += chunk or b""
        else:
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    try:
        row = json.loads(data)
        result = SubmissionResult(**row["result"])
        return result, row["peak_mb"]
    except (ValueError, KeyError, TypeError):
        result = SubmissionResult(display_name(path))
        if time.monotonic() >= deadline:
            return _failed(result, "error", f"ran past the grader's wall limit of {wall_seconds:g} s for one "
                                            "submission and was stopped"), None
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}"
        return _failed(result, "error", f"the grader's worker for this submission ended ({why}): over its "
                                        f"{GRADER_MEMORY_MB} MiB cap?"), None


def _warm_up() -> None:
    """Import and load once, here, what every worker needs (Jupyter's client, nbformat's schema, the
    reference check's parser): forked workers inherit it instead of loading it again, seconds each."""
    import nbclient  # noqa: F401
    import nbformat
    from jupyter_client.asynchronous import AsyncKernelClient  # noqa: F401

    nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
    references.parse_cells(["x = 1"])


def _worker(path: Path, options: dict) -> bytes:
    """Grade in this (forked) process under the memory cap; the row as JSON, never an exception."""
    sandbox.become_subreaper()  # processes the submission detaches are re-parented here, and ended here
    current = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmSize:")) * 1024 if sys.platform.startswith("linux") else 0
    if current:  # the soft limit (the kernel's launcher sets its own), within a hard limit set from outside
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        cap = current + GRADER_MEMORY_MB * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        result = grade_submission(path, **options)
    except MemoryError:
        result = _failed(SubmissionResult(display_name(path)), "error",
                         f"grading it took more than the grader's cap of {GRADER_MEMORY_MB} MiB")
    except Exception as error:  # noqa: BLE001 - a grader bug must not lose the batch
        result = _failed(SubmissionResult(display_name(path)), "error",
                         f"the grader failed on this submission: {type(error).__name__}: {str(error)[:200]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return json.dumps({"result": asdict(result), "peak_mb": peak}).encode()


# ---------------------------------------------------------------------------------------------
# A batch (``coursekit grade``, in ``coursekit/cli/grade.py``, parses the command line)
# ---------------------------------------------------------------------------------------------


def hidden_paths(outputs: list[Path | None], submissions: list[Path]) -> tuple[Path, ...]:
    """What a kernel must not see: the grader's output files and the submissions, each by its folder
    when that folder holds nothing the kernel needs, else by itself. The package, the Python
    installation, Jupyter's runtime files and the temporary folders (which hold the kernel's
    connection file and the private folders) stay readable, read-only."""
    from jupyter_core.paths import jupyter_runtime_dir

    needed = [PACKAGE_DIR.parent, Path(sys.prefix), Path(sys.base_prefix), Path(jupyter_runtime_dir()),
              Path(tempfile.gettempdir()), Path("/tmp")]  # the private folders are made in one of these two
    needed = [Path(os.path.realpath(p)) for p in needed]
    hidden: list[Path] = []
    for path in [Path(os.path.realpath(p)) for p in [*outputs, *submissions] if p is not None]:
        folder = path.parent
        if not any(p == folder or folder in p.parents for p in needed):
            hidden.append(folder)
        elif path.exists():
            hidden.append(path)
    return tuple(dict.fromkeys(hidden))


def grade_batch(submissions: list[str], out: Path, json_path: Path | None = None, fmt: str = "csv",
                timeout: float = DEFAULT_TIMEOUT, homework: str | None = None, resume: bool = False,
                limits: sandbox.Limits | None = None) -> int:
    """Grade every notebook of ``submissions`` (files or folders), each in its own sandboxed worker,
    into ``out`` (CSV, or Gradescope's results.json with ``fmt="gradescope"``) and ``json_path``;
    ``resume`` keeps the signed rows of a previous run. Returns the exit status."""
    # From here on this process reads and writes bytecode in a private folder, never in the package's
    # __pycache__ (so a .pyc planted there is not loaded, and any .pyc written there shows in the hash)
    prefix = sys.pycache_prefix
    with tempfile.TemporaryDirectory(prefix="coursekit-grader-bytecode-") as bytecode:
        sys.pycache_prefix = bytecode
        try:
            return _grade_batch(submissions, out, json_path, fmt, timeout, homework, resume, limits or sandbox.Limits())
        finally:
            sys.pycache_prefix = prefix


def _grade_batch(submissions: list[str], out: Path, json_path: Path | None, fmt: str, timeout: float,
                 homework: str | None, resume: bool, limits: sandbox.Limits) -> int:
    submissions = _find_with_folders(submissions)
    originals = {Path(os.path.realpath(p)) for p, _ in submissions if os.path.realpath(p) == os.path.abspath(p)}
    progress, key_file = progress_path(out), key_path(out)
    key = read_key(key_file) if resume else None
    results, refused = read_progress(progress, key) if key else ([], 0)
    if resume and key is None and progress.exists():
        print(f"no usable key in {key_file} (missing, a link, or readable by others): every submission is "
              "graded again", flush=True)
    elif refused:
        print(f"refused {refused} line(s) of {progress}: unsigned, altered or cut short; their submissions are "
              "graded again", flush=True)
    key = key or new_key(key_file)
    progress.unlink(missing_ok=True)
    for result in results:  # the progress file keeps only the rows the key signed
        append_progress(progress, result, key)
    done = {r.submission for r in results}
    for exercise in EXERCISES.values():  # import every reference now, before any submission runs
        exercise.reference()
    _warm_up()
    package = sandbox.fingerprint(PACKAGE_DIR)
    sandbox.become_subreaper()
    write_all(results, out, json_path, fmt)
    if sandbox.namespaces_available():
        print("each submission runs in its own namespaces (bubblewrap): no network, a read-only filesystem but "
              "for its own folder, the grader's outputs and the other submissions hidden", flush=True)
    else:
        print("WARNING: grading WITHOUT isolation (bubblewrap's bwrap is missing, or this kernel refuses user "
              "namespaces): a submission can use the network and read or write what your account can. Install "
              "bubblewrap, or grade in a container or a throwaway account.", flush=True)
    for path, folder in submissions:
        if display_name(path) in done:
            continue
        before, started = sandbox.descendants(), time.monotonic()
        problem = link_problem(path, folder, originals)
        if problem:
            result, peak = _failed(SubmissionResult(display_name(path)), "error", problem), None
        else:
            hidden = hidden_paths([out, json_path, progress, key_file], [p for p, _ in submissions])
            result, peak = grade_in_worker(path, wall_limit(timeout), timeout=timeout,
                                           homework=homework, limits=limits, hidden=hidden)
        ended = sandbox.end_new_processes(before)  # those of a worker that was killed
        if ended:
            result.reason = "; ".join(filter(None, [result.reason, f"{ended} leftover process(es) ended"]))
        changed = sandbox.changed_files(package, sandbox.fingerprint(PACKAGE_DIR))
        if changed:
            _zero_scores(result, HOMEWORK.get(result.homework, []), "not graded: the submission changed coursekit")
            _failed(result, "error", f"the installed coursekit package changed while this submission ran "
                                     f"({', '.join(changed[:3])}): grading stopped")
        results.append(result)
        append_progress(progress, result, key)
        write_all(results, out, json_path, fmt)
        memory = f", grader peak {peak} MiB" if peak else ""
        print(f"{result.submission}: {result.status} {result.total}/{result.max_score} "
              f"({time.monotonic() - started:.1f} s{memory}) {result.reason}".rstrip(), flush=True)
        if changed:
            print(f"stopped: the coursekit package at {PACKAGE_DIR} changed ({', '.join(changed)}). Reinstall it "
                  "(or delete what changed, .pyc files included), then run again with --resume to grade the rest.",
                  flush=True)
            return 1
    print(f"graded {len(results)} submission(s) into {out}")
    return 0
