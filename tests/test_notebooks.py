"""The notebooks as users meet them: badge and setup cell first, exercises in sync with solutions."""
import json
from pathlib import Path

import nbformat
import pytest

from coursekit.notebooks import (
    COMPARE_TAG, GRADED_TAG, STUB, generate_exercises, make_exercise, setup_cell,
)

ROOT = Path(__file__).resolve().parent.parent
ALL_NOTEBOOKS = sorted((ROOT / d / f).relative_to(ROOT) for d in ("notebooks", "solutions", "exercises")
                       for f in (p.name for p in (ROOT / d).glob("*.ipynb")))


def _solution_notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_markdown_cell("# Homework\n"),
        nbformat.v4.new_code_cell(
            "def double(x):\n    # BEGIN SOLUTION\n    y = 2 * x\n    return y\n    # END SOLUTION\n"),
        nbformat.v4.new_markdown_cell("Why?\n\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell('check("simclr.nt_xent", nt_xent)', metadata={"tags": [GRADED_TAG, COMPARE_TAG]}),
    ]
    cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="full marks\n")]
    return nbformat.v4.new_notebook(cells=cells)


def test_solution_regions_become_stubs_at_their_indentation():
    exercise = make_exercise(_solution_notebook())
    code = exercise.cells[1].source
    assert "2 * x" not in code and "return y" not in code
    assert f"    {STUB}" in code.splitlines()
    assert "Because." not in exercise.cells[2].source


def test_graded_output_is_the_not_implemented_text():
    from coursekit.grading import not_implemented_text

    outputs = make_exercise(_solution_notebook()).cells[3].outputs
    assert outputs[0]["text"] == not_implemented_text("simclr.nt_xent") + "\n"


def test_unclosed_region_is_an_error():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# BEGIN SOLUTION\nx = 1")])
    with pytest.raises(ValueError, match="never closed"):
        make_exercise(notebook)


def test_exercises_are_in_sync_with_solutions():
    stale = generate_exercises(ROOT / "solutions", ROOT / "exercises", check_only=True)
    assert stale == [], f"run `coursekit exercises`: stale {stale}"


def test_sync_check_fails_when_a_solution_changes(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "99_demo.ipynb")
    assert generate_exercises(solutions, exercises) == ["99_demo.ipynb"]
    assert generate_exercises(solutions, exercises, check_only=True) == []
    changed = _solution_notebook()
    changed.cells[1].source = changed.cells[1].source.replace("def double", "def triple")
    nbformat.write(changed, solutions / "99_demo.ipynb")
    assert generate_exercises(solutions, exercises, check_only=True) == ["99_demo.ipynb"]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=str)
def test_notebook_starts_with_badge_and_setup_cell(path):
    notebook = nbformat.read(ROOT / path, as_version=4)
    first, second = notebook.cells[0], notebook.cells[1]
    assert first.cell_type == "markdown" and "colab.research.google.com" in first.source
    assert path.as_posix() in first.source, "the badge must open this very notebook"
    assert second.cell_type == "code" and second.source == setup_cell()


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=str)
def test_only_compared_cells_store_outputs(path):
    """Except in a published lesson (tests/test_publish.py checks those are not stale)."""
    notebook = json.loads((ROOT / path).read_text())
    published = "outputs" in notebook["metadata"].get("coursekit", {})
    assert not (published and path.parts[0] != "notebooks"), "homework notebooks stay without outputs"
    if published:
        return
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and cell.get("outputs"):
            assert COMPARE_TAG in cell.get("metadata", {}).get("tags", []), cell["source"]


def test_every_homework_has_a_lesson_and_an_exercise():
    lessons = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    solutions = {p.stem for p in (ROOT / "solutions").glob("*.ipynb")}
    exercises = {p.stem for p in (ROOT / "exercises").glob("*.ipynb")}
    assert solutions == exercises
    assert solutions <= lessons


def test_setup_cell_keeps_the_cache_on_google_drive_on_colab(monkeypatch, capsys):
    import sys
    import types

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("COURSEKIT_CACHE", "")  # recorded, so the cell's setdefault is undone afterwards
    monkeypatch.delenv("COURSEKIT_CACHE")
    exec(setup_cell(), {})
    assert mounted == ["/content/drive"]
    assert "checkpoints are kept in /content/drive/MyDrive/coursekit-cache" in capsys.readouterr().out


def test_setup_cell_leaves_the_cache_alone_outside_colab(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path))
    exec(setup_cell(), {})
    assert f"checkpoints are kept in {tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.name)
def test_an_untouched_exercise_has_only_unanswered_questions(path):
    """The batch grader finds a question by its heading: two questions headed alike would mix up
    their texts, and the handed-out question would count as an answer."""
    from coursekit.grading.batch import written_answers

    answers = written_answers(nbformat.read(path, as_version=4), path.stem)
    headings = [answer["question"] for answer in answers]
    assert len(set(headings)) == len(headings), headings
    assert not any(answer["answered"] for answer in answers), answers
