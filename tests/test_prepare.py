"""``coursekit prepare``: the lessons' pretrainings run ahead of class, into the cache the lessons read."""
import re
from pathlib import Path

import nbformat
import pytest

from coursekit.notebooks import PRETRAINING_TAG

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECKPOINT_DIR = re.compile(r"checkpoint_dir\(([^)]*)\)")


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_run_a_lesson_reads_from_the_cache_is_made_by_a_tagged_cell():
    """A cell that names a checkpoint folder either is a pretraining cell, or reads a run that a pretraining
    cell of some lesson makes (e.g. lesson 08 loads lesson 02's SimCLR run), so prepare covers it."""
    prepared, read = set(), {}
    for path in LESSONS:
        for cell in _code_cells(path):
            names = set(CHECKPOINT_DIR.findall(cell.source))
            if PRETRAINING_TAG in cell.metadata.get("tags", []):
                prepared |= names
            else:
                for name in names:
                    read.setdefault(name, []).append(path.name)
    assert prepared, "no lesson cell is tagged as a pretraining"
    assert {name: lessons for name, lessons in read.items() if name not in prepared} == {}


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_cells_that_train_are_tagged(path):
    for cell in _code_cells(path):
        code = "\n".join(line.split("#")[0] for line in cell.source.splitlines())  # calls, not comments
        if re.search(r"pretrain_yolo_backbone\(|\bfit\(", code) or (
                "load_or_pretrain(" in code and "checkpoint_dir(" in code and CHECKPOINT_DIR.search(code)):
            trains_own = PRETRAINING_TAG in cell.metadata.get("tags", [])
            reads_other = any(PRETRAINING_TAG in c.metadata.get("tags", []) and
                              set(CHECKPOINT_DIR.findall(c.source)) & set(CHECKPOINT_DIR.findall(cell.source))
                              for p in LESSONS for c in _code_cells(p))
            assert trains_own or reads_other, f"{path.name}: a cell trains but is not tagged {PRETRAINING_TAG!r}:\n" \
                                              f"{cell.source[:200]}"


def test_coursekit_prepare_runs_a_lesson_up_to_its_last_pretraining_cell(tmp_path, monkeypatch, capsys):
    from coursekit.cli import main

    cache = tmp_path / "cache"
    cells = [
        nbformat.v4.new_code_cell("from coursekit.profile import cache_dir\nrun = cache_dir() / 'run.txt'"),
        nbformat.v4.new_code_cell("run.parent.mkdir(parents=True, exist_ok=True)\nrun.write_text('trained')",
                                  metadata={"tags": [PRETRAINING_TAG]}),
        nbformat.v4.new_code_cell("raise RuntimeError('the class part: prepare must not run it')"),
    ]
    lesson = tmp_path / "lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), lesson)
    idle = tmp_path / "idle.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), idle)
    before = lesson.read_text()
    monkeypatch.setenv("COURSEKIT_CACHE", str(cache))
    assert main(["prepare", str(lesson), str(idle), "--profile", "smoke"]) == 0
    assert (cache / "run.txt").read_text() == "trained"
    out = capsys.readouterr().out
    assert re.search(r"lesson.ipynb: ready in \d+ s", out) and "idle.ipynb: pretrains nothing" in out
    assert lesson.read_text() == before, "prepare writes nothing into the lesson"


def test_coursekit_prepare_refuses_an_unknown_profile_before_running_anything(tmp_path, capsys):
    from coursekit.cli import main

    lesson = tmp_path / "lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[]), lesson)
    assert main(["prepare", str(lesson), "--profile", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
