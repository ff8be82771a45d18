"""scripts/test_dry_run.sh, CI's full-profile dry run of the notebooks, run as CI runs it.

The lessons themselves take minutes each in a dry run, so these tests give the script small probe
notebooks: it must run them under the full profile's dry run (whatever the caller's profile), fail
when a cell fails, and collect every notebook of its default list.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test_dry_run.sh"


def probe(path: Path, source: str, checked_output: str | None = None) -> Path:
    """A one-cell notebook; with ``checked_output``, the cell is tagged nbval-check-output and stores it."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    if checked_output is not None:
        cell.metadata["tags"] = ["nbval-check-output"]
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=checked_output)]
    notebook.cells = [cell]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "COURSEKIT_PROFILE": "smoke",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("COURSEKIT_DRY_RUN", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_the_script_runs_notebooks_in_the_full_profile_dry_run_and_fails_with_them(tmp_path):
    passing = probe(tmp_path / "passing.ipynb", (
        "from coursekit import dry_run\n"
        "from coursekit.profile import cache_dir, get_profile\n"
        "profile = get_profile()\n"
        "assert profile.name == 'full' and dry_run.is_dry_run(), profile.banner()\n"
        "assert '(dry run)' in profile.banner()\n"
        f"assert str(cache_dir()) != {str(Path.home() / '.cache' / 'coursekit')!r}  # a fresh cache"))
    failing = probe(tmp_path / "failing.ipynb", "raise RuntimeError('a broken lesson')")
    result = run_script(str(passing), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout and "full-profile dry run took" in result.stdout
    result = run_script(str(passing), str(failing), "-q")
    assert result.returncode != 0 and "a broken lesson" in result.stdout


def test_the_default_list_collects_lessons_solutions_and_exercises():
    result = run_script("--collect-only", "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    assert "notebooks/02_simclr.ipynb" in collected and "notebooks/08_dinov2.ipynb" in collected
    for folder in ("solutions", "exercises"):
        assert {f"{folder}/{p.name}" for p in (ROOT / folder).glob("*.ipynb")} <= collected


def test_checked_outputs_are_compared_without_their_numbers(tmp_path):
    """The stored outputs come from another profile: other shapes and scores, the same words."""
    code = "print('patches:', (8, 64, 48), 'agree:', 1 + 1 == 2)"
    other_numbers = probe(tmp_path / "numbers.ipynb", code, "patches: (8, 16, 192) agree: True\n")
    other_words = probe(tmp_path / "words.ipynb", code, "patches: (8, 64, 48) agree: False\n")
    result = run_script(str(other_numbers), "-q")
    assert result.returncode == 0, result.stdout[-3000:]
    result = run_script(str(other_words), "-q")
    assert result.returncode != 0 and "1 failed" in result.stdout
