"""Notebook authoring: Colab badges, the setup cell, exercises generated from solutions, stored outputs.

Solutions are the single source of the homework. ``coursekit exercises`` turns every
``solutions/*.ipynb`` into ``exercises/*.ipynb``:

- in code cells, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` become one
  ``raise NotImplementedError(...)`` at the same indentation;
- in markdown cells, the text between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``
  becomes a prompt for the learner's own answer;
- graded cells (tag ``graded``) get the output ``check`` prints for a function that is not
  implemented yet, so nbval can compare it;
- every other output is dropped.

``coursekit exercises --check`` exits with 1 when ``exercises/`` differs from what the solutions
generate (the test suite runs it). ``coursekit store-outputs PATH...`` executes notebooks under the
smoke profile and keeps only the outputs of the cells nbval compares.

Lessons are *published*: ``coursekit publish notebooks/02_simclr.ipynb`` runs a
lesson top to bottom under a profile (``demo`` by default), keeps every output (pictures shrunk to
small palette PNGs, text progress bars reduced to their last state, progress widgets dropped) and stamps the notebook's metadata with
``coursekit.outputs = {"profile", "device", "date", "seconds", "load_average", "cache",
"cells_over_a_minute", "source_sha256", "markdown_sha256", "values"}``. It runs with an empty checkpoint
cache (``cache: "empty"``; ``"prepared"`` when it was given one that held runs), so ``seconds`` is what
a learner waits on a fresh machine (``load_average``, the 1-minute load when it started, says
whether the machine was idle; ``cells_over_a_minute`` maps the index of each cell that took longer to
its seconds: such a cell must say beforehand how long it takes). ``source_sha256`` and ``markdown_sha256`` are the sha256 of the code and of
the markdown cells' sources, each joined by ``"\\0"``; ``values`` fingerprints every profile, recipe,
shipped run and stored result the lesson read (``coursekit.provenance``). A test fails when any of
them changed since the outputs were made (``staleness``). nbval still compares only the marked cells under ``smoke``, so
publishing refuses a marked cell whose output differs from the one committed (it must not depend on
the profile).
"""
from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import io
import os
import re
import time
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPARE_TAG = "nbval-check-output"
GRADED_TAG = "graded"
PRETRAINING_TAG = "pretraining"  # a lesson cell that pretrains (or loads from the cache) what the lesson uses
CODE_BEGIN, CODE_END = "# BEGIN SOLUTION", "# END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution")'
ANSWER_PROMPT = "*Your answer here: replace this line with a few sentences.*"
CHECK_CALL = re.compile(r"""check\(\s*["']([\w.]+)["']""")


def repository_settings(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict:
    """The ``[tool.coursekit]`` table of ``pyproject.toml``: ``repository`` URL and ``branch``."""
    import tomllib

    with open(pyproject, "rb") as f:
        return tomllib.load(f)["tool"]["coursekit"]


def colab_badge(notebook_path: str) -> str:
    """Markdown for the Open-in-Colab badge of a notebook, e.g. ``colab_badge("notebooks/02_simclr.ipynb")``."""
    settings = repository_settings()
    github_path = settings["repository"].removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{github_path}/blob/{settings['branch']}/{notebook_path}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def setup_cell() -> str:
    """Source of the setup cell every notebook starts with.

    It keeps the checkpoint cache on Google Drive when it runs on Colab (so a disconnect loses no
    training; the learner can decline), installs coursekit from the repository only when it is missing,
    never touching the torch that Colab brings, then prints the run profile's banner and the cache.
    """
    settings = repository_settings()
    return (
        "# Setup: installs coursekit when it is missing (e.g. on Colab) and keeps the installed torch.\n"
        "# Training cells save checkpoints in the cache folder as they go and resume from them: after a\n"
        "# disconnect, rerun the cells and training continues where it stopped. Colab wipes its disk on a\n"
        "# disconnect, so there the cache goes to Google Drive (Colab asks for permission once; set\n"
        "# KEEP_CACHE_ON_DRIVE = False to keep it on the machine). Elsewhere set COURSEKIT_CACHE to move it.\n"
        "KEEP_CACHE_ON_DRIVE = True\n"
        "import importlib.util, os, subprocess, sys\n"
        'if "google.colab" in sys.modules and KEEP_CACHE_ON_DRIVE:\n'
        "    from google.colab import drive\n"
        '    drive.mount("/content/drive")\n'
        '    os.environ.setdefault("COURSEKIT_CACHE", "/content/drive/MyDrive/coursekit-cache")\n'
        'if importlib.util.find_spec("coursekit") is None:\n'
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                    \"coursekit[notebook] @ git+{settings['repository']}@{settings['branch']}\"], check=True)\n"
        "from coursekit.profile import cache_dir, get_profile\n"
        "profile = get_profile()\n"
        "print(profile.banner())\n"
        'print("checkpoints are kept in", cache_dir())'
    )


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _replace_code_regions(source: str) -> str:
    """Replace each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by an indented stub."""
    lines, out, inside = source.split("\n"), [], False
    for number, line in enumerate(lines, 1):
        marker = line.strip()
        if marker == CODE_BEGIN:
            if inside:
                raise ValueError(f"line {number}: nested '{CODE_BEGIN}'")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif marker == CODE_END:
            if not inside:
                raise ValueError(f"line {number}: '{CODE_END}' without '{CODE_BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{CODE_BEGIN}' is never closed by '{CODE_END}'")
    return "\n".join(out)


def _replace_markdown_regions(source: str) -> str:
    pattern = re.compile(re.escape(MD_BEGIN) + r".*?" + re.escape(MD_END), re.DOTALL)
    return pattern.sub(ANSWER_PROMPT, source)


def _not_implemented_outputs(source: str) -> list:
    """The stdout of a graded cell whose student functions all raise NotImplementedError."""
    from coursekit.grading import not_implemented_text

    text = "".join(not_implemented_text(exercise_id) + "\n" for exercise_id in CHECK_CALL.findall(source))
    return [nbformat.v4.new_output("stream", name="stdout", text=text)] if text else []


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook generated from a solution notebook (see the module docstring)."""
    exercise = copy.deepcopy(solution)
    if exercise.cells and exercise.cells[0].cell_type == "markdown":  # the badge opens the exercise
        exercise.cells[0].source = exercise.cells[0].source.replace("/solutions/", "/exercises/")
    for cell in exercise.cells:
        if cell.cell_type == "markdown":
            cell.source = _replace_markdown_regions(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        cell.source = _replace_code_regions(cell.source)
        cell.outputs = _not_implemented_outputs(cell.source) if GRADED_TAG in _tags(cell) else []
        # nbval refuses a cell with stored outputs and no execution count ("Unrun reference cell").
        cell.execution_count = 1 if cell.outputs else None
    return exercise


def _comparable(notebook: nbformat.NotebookNode) -> list[tuple]:
    """What must agree between a committed exercise and a regenerated one."""
    def outputs(cell):
        return [(o.get("name"), o.get("text")) for o in cell.get("outputs", [])]

    return [(c.cell_type, c.source, _tags(c), outputs(c), c.get("execution_count")) for c in notebook.cells]


def generate_exercises(solutions_dir: Path, exercises_dir: Path, check_only: bool = False) -> list[str]:
    """Regenerate ``exercises_dir`` from ``solutions_dir``; return the names that were stale.

    With ``check_only`` nothing is written. An exercise without a solution is stale too.
    """
    solutions = {p.name: p for p in sorted(Path(solutions_dir).glob("*.ipynb"))}
    stale = sorted(p.name for p in Path(exercises_dir).glob("*.ipynb") if p.name not in solutions)
    for name, path in solutions.items():
        exercise = make_exercise(nbformat.read(path, as_version=4))
        target = Path(exercises_dir) / name
        if target.exists() and _comparable(nbformat.read(target, as_version=4)) == _comparable(exercise):
            continue
        stale.append(name)
        if not check_only:
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(exercise, target)
    if not check_only:
        for name in stale:
            if name not in solutions:
                (Path(exercises_dir) / name).unlink()
    return sorted(stale)


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures become stored PNG outputs


def _execute(notebook: nbformat.NotebookNode, path: Path, profile: str, timeout: int,
             mpl_backend: str = "Agg", env: dict | None = None) -> dict[int, float]:
    """Run every cell of ``notebook`` in a fresh kernel under ``profile``, in the notebook's folder.

    The kernel gets this process's environment with the profile, offline YOLO, the given
    matplotlib backend and ``env`` set (this process's own environment is left alone).
    Returns the wall seconds of each code cell, by index.
    Raises nbclient's CellExecutionError at the first cell that fails.
    """
    from nbclient import NotebookClient

    env = {**os.environ, "COURSEKIT_PROFILE": profile, "MPLBACKEND": mpl_backend, **(env or {})}
    env.setdefault("YOLO_OFFLINE", "1")
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute(env=env)
    seconds = {}
    for index, cell in enumerate(notebook.cells):
        timing = cell.get("metadata", {}).pop("execution", None) or {}
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            seconds[index] = (end - start).total_seconds()
    return seconds


def store_outputs(path: Path, timeout: int = 600) -> None:
    """Execute a notebook under the smoke profile and keep only the outputs of compared cells."""
    notebook = nbformat.read(path, as_version=4)
    _execute(notebook, path, "smoke", timeout)
    for cell in notebook.cells:
        if cell.cell_type == "code" and COMPARE_TAG not in _tags(cell):
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)


# --- Published lessons -----------------------------------------------------------------------------

PUBLISHED_KEY = "outputs"  # notebook.metadata["coursekit"]["outputs"]
MAX_PNG_WIDTH = 900  # pixels: wide enough for a two-panel figure on GitHub, small enough to commit


def _cells_sha256(notebook: nbformat.NotebookNode, cell_type: str) -> str:
    sources = [cell.source for cell in notebook.cells if cell.cell_type == cell_type]
    return hashlib.sha256("\0".join(sources).encode("utf-8")).hexdigest()


def source_sha256(notebook: nbformat.NotebookNode) -> str:
    """sha256 of the code cells' sources joined by ``"\\0"``: what the stored outputs were made from."""
    return _cells_sha256(notebook, "code")


def markdown_sha256(notebook: nbformat.NotebookNode) -> str:
    """sha256 of the markdown cells' sources joined by ``"\\0"``: the text that quotes the outputs' numbers."""
    return _cells_sha256(notebook, "markdown")


def publication(notebook: nbformat.NotebookNode) -> dict | None:
    """The ``coursekit.outputs`` stamp of a published notebook, or None if it was never published."""
    return notebook.metadata.get("coursekit", {}).get(PUBLISHED_KEY)


def stale_inputs(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """What changed since a published notebook's outputs were made, by kind -> why: ``"code"``,
    ``"markdown"``, ``"values"`` (a stamp that does not record them) or the key of a value it read
    (``"recipe:byol/demo"``). Empty when it is current or was never published."""
    from coursekit.provenance import fingerprint

    stamp = publication(notebook)
    if stamp is None:
        return {}
    changed = {}
    if stamp.get("source_sha256") != source_sha256(notebook):
        changed["code"] = "its code cells changed"
    if stamp.get("markdown_sha256") != markdown_sha256(notebook):
        changed["markdown"] = "its markdown cells changed (numbers in the text may no longer match the outputs)"
    if "values" not in stamp:
        changed["values"] = "its stamp does not record the coursekit values it read"
    for key, stamped in sorted(stamp.get("values", {}).items()):
        if fingerprint(key) != stamped:
            changed[key] = f"{key} changed since it was read"
    return changed


def staleness(notebook: nbformat.NotebookNode) -> list[str]:
    """Why a published notebook's outputs may no longer be what it would show: one line per changed
    input (its code, its markdown, a value it read), empty when it is current or was never published."""
    return list(stale_inputs(notebook).values())


def is_stale(notebook: nbformat.NotebookNode) -> bool:
    """True when a published notebook's code, markdown or a coursekit value it read changed since its
    outputs were made."""
    return bool(staleness(notebook))


def shrink_png(data: str, max_width: int = MAX_PNG_WIDTH) -> str:
    """A base64 PNG scaled down to ``max_width`` pixels (never up) and stored with a 256-colour palette.

    Plots use few colours, so the palette keeps them sharp at a fraction of the size; the smaller of the
    original and the shrunk encoding is returned.
    """
    from PIL import Image

    original = base64.b64decode(data)
    image = Image.open(io.BytesIO(original))
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    if image.mode not in ("RGB", "RGBA", "L", "P"):
        image = image.convert("RGBA")
    if image.mode in ("RGB", "RGBA"):
        method = Image.Quantize.FASTOCTREE if image.mode == "RGBA" else Image.Quantize.MEDIANCUT
        image = image.quantize(colors=256, method=method)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    shrunk = buffer.getvalue()
    return base64.b64encode(shrunk if len(shrunk) < len(original) else original).decode("ascii")


ERASE_LINE = "\x1b[K"  # ANSI "erase to the end of the line": how ultralytics redraws its progress bars


def _last_progress_state(text: str) -> str:
    """A progress bar's stream text reduced to what a terminal shows at the end (``\\r`` and an
    erase-line code at the start of a redraw overwrite the line)."""
    text = text.replace(ERASE_LINE, "\r")
    return "\n".join(([part for part in line.split("\r") if part] or [""])[-1] for line in text.split("\n"))


def _merged_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name joined into one (a redraw may come as its own output)."""
    merged = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _tidy_outputs(cell) -> None:
    """Shrink the pictures, collapse text progress bars, drop progress widgets.

    A widget's stored text is its *first* state ("0%"), which would misreport the run; without the
    kernel the widget itself shows nothing on GitHub or Colab, so it goes.
    """
    cell.outputs = _merged_streams([o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})])
    for output in cell.outputs:
        if output.output_type == "stream":
            output.text = _last_progress_state(output.text)
        data = output.get("data", {})
        if "image/png" in data:
            data["image/png"] = shrink_png(data["image/png"])


def _output_texts(cell) -> list:
    return [(o.get("name"), o.get("text")) for o in cell.get("outputs", []) if o.output_type == "stream"]


def publish(path: Path, profile: str = "demo", timeout: int = 3600, cache: Path | None = None) -> dict:
    """Run a lesson top to bottom under ``profile``, keep all its outputs and stamp its metadata.

    The checkpoint cache is a fresh empty folder, or ``cache`` (kept afterwards, so that a later lesson
    can be published with the runs an earlier one made); the stamp says whether it was ``empty`` or
    ``prepared`` (held runs) when the lesson started.

    The notebook on disk is replaced only when every cell ran and every cell nbval compares printed
    what was committed before (those cells are checked under ``smoke`` and must not depend on the
    profile). Returns the stamp.

    Raises:
        ValueError: the path is not a notebook, or a compared cell's output changed.
        nbclient.exceptions.CellExecutionError: a cell failed (the file is left as it was).
    """
    import tempfile

    from coursekit.profile import CACHE_ENV, get_profile
    from coursekit.provenance import READS_ENV, fingerprint, read_keys

    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"publish: {path} is not a notebook file")
    device = get_profile(profile).device  # also rejects an unknown profile name before the long run
    notebook = nbformat.read(path, as_version=4)
    committed = {i: _output_texts(c) for i, c in enumerate(notebook.cells)
                 if c.cell_type == "code" and COMPARE_TAG in _tags(c) and c.get("outputs")}
    load_average = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="coursekit-publish-") as scratch:
        reads = Path(scratch) / "reads.txt"
        checkpoints = Path(cache) if cache is not None else Path(scratch) / "cache"
        cache_state = "prepared" if checkpoints.is_dir() and any(checkpoints.iterdir()) else "empty"
        start = time.perf_counter()
        cell_seconds = _execute(notebook, path, profile, timeout, mpl_backend=INLINE_BACKEND,
                                env={CACHE_ENV: str(checkpoints), READS_ENV: str(reads)})
        seconds = round(time.perf_counter() - start)
        values = {key: fingerprint(key) for key in read_keys(reads)}
    for index, expected in committed.items():
        if _output_texts(notebook.cells[index]) != expected:
            raise ValueError(f"publish: cell {index} of {path} is compared by nbval under smoke but printed "
                             f"something else under {profile!r}; make its output independent of the profile")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            _tidy_outputs(cell)
    stamp = {"profile": profile, "device": device,
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
             "seconds": seconds, "load_average": load_average, "cache": cache_state,
             "cells_over_a_minute": {str(i): round(t) for i, t in cell_seconds.items() if t > 60},
             "source_sha256": source_sha256(notebook), "markdown_sha256": markdown_sha256(notebook),
             "values": values}
    notebook.metadata.setdefault("coursekit", {})[PUBLISHED_KEY] = stamp
    nbformat.write(notebook, path)
    return stamp


def restamp_markdown(path: Path) -> dict:
    """Stamp a published lesson's edited text without running it again: for prose rewritten to match
    the outputs it already has. Refused when anything that made the outputs (its code, a value it read)
    changed: then only a new run shows what the lesson prints. Returns the stamp.
    """
    notebook = nbformat.read(path, as_version=4)
    stamp = publication(notebook)
    if stamp is None:
        raise ValueError(f"publish: {path} was never published; run it first (coursekit publish {path})")
    others = [reason for kind, reason in stale_inputs(notebook).items() if kind != "markdown"]
    if others:
        raise ValueError(f"publish: {path} needs a new run, not a new stamp: {'; '.join(others)}")
    stamp["markdown_sha256"] = markdown_sha256(notebook)
    nbformat.write(notebook, path)
    return stamp


TEN_MINUTES = 600  # seconds: a lesson must fit a class hour with room to talk (demo profile, laptop CPU)


def times_table(paths: list[Path]) -> str:
    """The README's table of how long each published lesson took, read from the stamps (a markdown table)."""
    rows = ["| lesson | top to bottom | checkpoint cache | within 10 minutes | cells that pretrain | published "
            "| 1-min load at the start |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        stamp = publication(notebook) or {}
        seconds = stamp.get("seconds")
        took = "not measured" if seconds is None else f"{seconds // 60} min {seconds % 60:02d} s"
        fits = "" if seconds is None else ("yes" if seconds <= TEN_MINUTES else "**no**")
        where = f"`{stamp['profile']}`, {stamp['device']}, {stamp['date']}" if stamp else "not published"
        rows.append(f"| [{Path(path).stem}](notebooks/{Path(path).name}) | {took} | {stamp.get('cache', '')} | {fits} | "
                    f"{len(pretraining_cells(notebook))} | {where} | {stamp.get('load_average', '')} |")
    return "\n".join(rows) + "\n"


# --- Before class ----------------------------------------------------------------------------------

def pretraining_cells(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of the cells tagged ``pretraining``: the ones that train (or load from the cache) a run."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and PRETRAINING_TAG in _tags(cell)]


def prepare(path: Path, profile: str = "demo", timeout: int = 3600) -> float | None:
    """Run a lesson up to its last ``pretraining`` cell under ``profile``, so that its runs are in the
    checkpoint cache (``coursekit.profile.cache_dir``) and the lesson loads them in class.

    The cells before it run too (they load the data the pretraining reads); nothing is written to the
    notebook. Returns the wall seconds it took, or None when the lesson pretrains nothing.
    """
    notebook = nbformat.read(path, as_version=4)
    tagged = pretraining_cells(notebook)
    if not tagged:
        return None
    notebook.cells = notebook.cells[:tagged[-1] + 1]
    start = time.perf_counter()
    _execute(notebook, Path(path), profile, timeout)
    return time.perf_counter() - start
