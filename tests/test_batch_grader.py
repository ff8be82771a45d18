"""The batch grader on a folder of deliberately broken submissions (tests/fixtures/submissions)."""
import csv
import json
import sys
from pathlib import Path

import nbformat
import pytest

from coursekit.cli import main
from coursekit.grading.batch import find_submissions, homework_of

FIXTURES = Path(__file__).parent / "fixtures" / "submissions"
sys.path.insert(0, str(FIXTURES))
from build import NO_HOMEWORK, NOT_NOTEBOOK, SUBMISSIONS  # noqa: E402


def test_homework_comes_from_metadata_then_file_name():
    notebook = nbformat.v4.new_notebook()
    assert homework_of(notebook, Path("alice_02_simclr.ipynb"), None) == "02_simclr"
    notebook.metadata["coursekit"] = {"homework": "03_moco"}
    assert homework_of(notebook, Path("alice_02_simclr.ipynb"), None) == "03_moco"
    assert homework_of(notebook, Path("x.ipynb"), "06_mae") == "06_mae"


def test_folders_are_searched_for_notebooks():
    found = {p.name for p in find_submissions([str(FIXTURES)])}
    assert found == {f"{name}.ipynb" for name in SUBMISSIONS} | {NOT_NOTEBOOK, NO_HOMEWORK}


@pytest.mark.slow
def test_broken_submissions_are_each_graded_with_a_row_and_a_reason(tmp_path):
    out, report = tmp_path / "grades.csv", tmp_path / "grades.json"
    assert main(["grade", str(FIXTURES), "--out", str(out), "--json", str(report), "--timeout", "12"]) == 0
    rows = {Path(row["submission"]).stem: row for row in csv.DictReader(out.open())}
    assert len(rows) == len(SUBMISSIONS) + 2
    for name, (_, status, score, reason_words) in SUBMISSIONS.items():
        row = rows[name]
        assert (row["status"], int(row["simclr.nt_xent"])) == (status, score), row
        assert reason_words in row["reason"], row
    assert rows[NOT_NOTEBOOK[:-6]]["status"] == "error" and "invalid JSON" in rows[NOT_NOTEBOOK[:-6]]["reason"]
    assert rows[NO_HOMEWORK[:-6]]["status"] == "error" and "unknown homework" in rows[NO_HOMEWORK[:-6]]["reason"]
    assert "nt_xent not found" in rows["renamed_function_02_simclr"]["reason"]
    feedback = {Path(r["submission"]).stem: r for r in json.loads(report.read_text())}
    raising = feedback["raising_cell_02_simclr"]["exercises"]["simclr.nt_xent"]["feedback"]
    assert raising == ["not implemented yet: replace the raise NotImplementedError with your code"]
