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
generate (the test suite runs it). ``python -m coursekit.notebooks store-outputs PATH...`` executes
notebooks under the smoke profile and keeps only the outputs of the cells nbval compares.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPARE_TAG = "nbval-check-output"
GRADED_TAG = "graded"
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

    It installs coursekit from the repository only when it is missing (Colab), never touching
    the torch that Colab brings, then prints the run profile's banner.
    """
    settings = repository_settings()
    return (
        "# Setup: installs coursekit when it is missing (e.g. on Colab) and keeps the installed torch.\n"
        "import importlib.util, subprocess, sys\n"
        'if importlib.util.find_spec("coursekit") is None:\n'
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                    \"coursekit[notebook] @ git+{settings['repository']}@{settings['branch']}\"], check=True)\n"
        "from coursekit.profile import get_profile\n"
        "profile = get_profile()\n"
        "print(profile.banner())"
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


def store_outputs(path: Path, timeout: int = 600) -> None:
    """Execute a notebook under the smoke profile and keep only the outputs of compared cells."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    os.environ["COURSEKIT_PROFILE"] = "smoke"
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    for cell in notebook.cells:
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code" and COMPARE_TAG not in _tags(cell):
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is in sync; exit 1 if not")
    parser.add_argument("--solutions", type=Path, default=REPO_ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=REPO_ROOT / "exercises")


def run(args: argparse.Namespace) -> int:
    if not any(args.solutions.glob("*.ipynb")):  # else every exercise would be deleted as stale
        from coursekit.cli import UsageError

        raise UsageError(f"--solutions {args.solutions} holds no notebooks: give the folder of the solution notebooks")
    stale = generate_exercises(args.solutions, args.exercises, check_only=args.check)
    if args.check and stale:
        print(f"exercises/ is out of date for: {', '.join(stale)}. Run `coursekit exercises` to regenerate.")
        return 1
    print(f"{'stale' if args.check else 'regenerated'}: {', '.join(stale) or 'none'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.notebooks")
    parser.add_argument("command", choices=["store-outputs"])
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.paths:
        print(f"executing {path} (smoke profile)", flush=True)
        store_outputs(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
