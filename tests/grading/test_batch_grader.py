"""The batch grader on a folder of broken, hostile and honest submissions (tests/fixtures/submissions).

The batch runs as its own process against a copy of the coursekit package (one submission
rewrites the package it finds), with its own HOME and TMPDIR holding files that must survive.
"""
import csv
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from coursekit.cli import main
from coursekit.grading import grade
from coursekit.grading.batch import find_submissions, homework_of, written_answers
from coursekit.grading.batch import sandbox
from coursekit.grading.batch.results import progress_path
from tests.conftest import processes_with

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "submissions"
# With namespaces (bubblewrap) the package is read-only to a submission: it cannot change it at all
ISOLATED = sandbox.namespaces_available()
PACKAGE = Path(__file__).resolve().parents[2] / "coursekit"
sys.path.insert(0, str(FIXTURES))
from build import CANARIES, FORGED, NO_HOMEWORK, NOT_NOTEBOOK, SUBMISSIONS  # noqa: E402

ODD_NAME = b"good_\xff\xfe_02_simclr.ipynb"  # not valid UTF-8
HONEST = {"zero": lambda z1, z2, t: torch.zeros(())}  # what a forged function computes, written honestly


def test_homework_comes_from_the_file_name_then_metadata():
    notebook = nbformat.v4.new_notebook()
    assert homework_of(notebook, Path("alice_02_simclr.ipynb"), None) == "02_simclr"
    notebook.metadata["coursekit"] = {"homework": "03_moco"}  # a notebook cannot name itself another homework
    assert homework_of(notebook, Path("alice_02_simclr.ipynb"), None) == "02_simclr"
    assert homework_of(notebook, Path("alice.ipynb"), None) == "03_moco"
    assert homework_of(notebook, Path("alice_02_simclr.ipynb"), "06_mae") == "06_mae"


def test_folders_are_searched_for_notebooks():
    found = {p.name for p in find_submissions([str(FIXTURES)])}
    assert found == {f"{name}.ipynb" for name in SUBMISSIONS} | {NOT_NOTEBOOK, NO_HOMEWORK}


def test_written_answers_are_the_text_under_each_question():
    cells = [nbformat.v4.new_markdown_cell("## Question 1\n\nWhy?\n\nBecause."), nbformat.v4.new_markdown_cell("More."),
             nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("## Question 2\n\nHow?")]
    answers = written_answers(nbformat.v4.new_notebook(cells=cells), "99_none")
    assert [(a["question"], a["answer"]) for a in answers] == [("Question 1", "Why?\n\nBecause.\n\nMore."),
                                                             ("Question 2", "How?")]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")
def test_a_class_of_broken_hostile_and_honest_submissions(tmp_path):
    folder = tmp_path / "submissions"
    shutil.copytree(FIXTURES, folder, ignore=shutil.ignore_patterns("build.py", "__pycache__"))
    shutil.copy(folder / "good_02_simclr.ipynb", os.path.join(os.fsencode(folder), ODD_NAME))
    package = tmp_path / "installed"
    shutil.copytree(PACKAGE, package / "coursekit", ignore=shutil.ignore_patterns("__pycache__"))
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    for place in (home, tmp):
        place.mkdir()
        (place / "precious.txt").write_text("keep me")
    token = secrets.token_hex(8)
    out, report = tmp_path / "grades.csv", tmp_path / "grades.json"
    listener = socket.create_server(("127.0.0.1", 0))  # the canaries try it, and the grader's outputs
    env = {**os.environ, "PYTHONPATH": str(package), "HOME": str(home), "TMPDIR": str(tmp), "BATCH_TEST_TOKEN": token,
           "BATCH_TEST_OUT": str(out), "BATCH_TEST_SUBMISSIONS": str(folder),
           "BATCH_TEST_PORT": str(listener.getsockname()[1])}
    command = [sys.executable, "-m", "coursekit", "grade", str(folder), "--out", str(out), "--json", str(report),
               "--timeout", "40", "--memory-limit", "4096", "--process-limit", "150"]
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    expected = dict(SUBMISSIONS)
    if ISOLATED:  # its write to the package fails (read-only there), its nt_xent is graded, the batch goes on
        assert finished.returncode == 0 and "own namespaces" in finished.stdout, finished.stdout + finished.stderr[-3000:]
        expected["zz_hostile_rewrites_package_02_simclr"] = (None, "ok", 10, "OSError")
        # its detached processes end with its PID namespace, before the grader's sweep (which finds none);
        # that none is left is checked below
        expected["hostile_escape_02_simclr"] = (None, "ok", 10, "")
    else:
        assert finished.returncode == 1 and "package" in finished.stdout, finished.stdout + finished.stderr[-3000:]
        for name in CANARIES:  # without namespaces they reach what they reach for: no expectation
            expected.pop(name)
    rows = {Path(row["submission"]).stem: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert len(rows) == len(SUBMISSIONS) + 3  # the odd name, the essay and the untitled notebook too
    for name, (_, status, score, reason_words) in expected.items():
        row = rows[name]
        assert row["status"] == status and reason_words in row["reason"], row
        if name in FORGED:  # worth what computing the same numbers honestly is worth
            honest, relation = FORGED[name]
            honest_score = grade("simclr.nt_xent", HONEST[honest]).score
            assert honest_score < 10 and (int(row["simclr.nt_xent"]) == honest_score if relation == "equal"
                                          else int(row["simclr.nt_xent"]) <= honest_score), row
        else:
            assert int(row["simclr.nt_xent"]) == score, row
    assert (int(rows["good_02_simclr"]["total"]), rows["good_02_simclr"]["answers"]) == (17, "1/1")
    if os.geteuid() != 0:  # the process limit does not bind root
        assert int(rows["hostile_limits_02_simclr"]["simclr.augmentation_pair_similarity"]) == 7
    odd = rows[os.fsdecode(ODD_NAME).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:-6]]
    assert odd["status"] == "ok" and int(odd["total"]) == 17
    assert rows[NOT_NOTEBOOK[:-6]]["status"] == "error" and "invalid JSON" in rows[NOT_NOTEBOOK[:-6]]["reason"]
    assert rows[NO_HOMEWORK[:-6]]["status"] == "error" and "unknown homework" in rows[NO_HOMEWORK[:-6]]["reason"]
    assert "nt_xent not found" in rows["renamed_function_02_simclr"]["reason"]

    feedback = {Path(r["submission"]).stem: r for r in json.loads(report.read_text(encoding="utf-8"))}
    raising = feedback["raising_cell_02_simclr"]["exercises"]["simclr.nt_xent"]["feedback"]
    assert raising == ["not implemented yet: replace the raise NotImplementedError with your code"]
    for name in ("hostile_reference_02_simclr", "hostile_reference_wrapped_02_simclr"):
        assert "reference implementation" in feedback[name]["exercises"]["simclr.nt_xent"]["feedback"][0]
    copied = feedback["hostile_reference_copied_02_simclr"]["exercises"]["simclr.augmentation_pair_similarity"]
    assert copied["score"] == 0 and "reference implementation with its names changed" in copied["feedback"][0]
    assert feedback["good_02_simclr"]["answers"][0]["answer"].endswith("Because two crops share their colors.")
    assert len(progress_path(out).read_text().splitlines()) == len(rows)

    assert processes_with(token) == []  # the sleeps and the daemon of hostile_background are gone
    listener.close()
    for place in (home, tmp):  # hostile_tmpdir cleaned only its own folders
        assert (place / "precious.txt").read_text() == "keep me"
        assert not (place / "left_by_a_submission.txt").exists()


def _signed(key: bytes, row: dict) -> str:
    """A progress line signed as the README says (HMAC-SHA256 of the row's JSON, sorted keys, no spaces)."""
    mark = hmac.new(key, json.dumps(row, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"row": row, "hmac": mark})


@pytest.mark.slow
def test_resume_keeps_only_rows_signed_with_the_batch_key(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ("raising_cell_02_simclr", "renamed_function_02_simclr"):
        shutil.copy(FIXTURES / f"{name}.ipynb", folder)
    out = tmp_path / "grades.csv"
    key = secrets.token_bytes(32)
    key_file = tmp_path / "grades.progress.key"
    key_file.write_text(key.hex())
    key_file.chmod(0o600)
    row = {"homework": "02_simclr", "status": "ok", "exercises": {}, "answers": [], "total": 0, "max": 0}
    kept = {**row, "submission": str(folder / "raising_cell_02_simclr.ipynb"), "reason": "graded before the interruption"}
    victim = {**row, "submission": str(folder / "renamed_function_02_simclr.ipynb"), "reason": "graded"}
    altered = json.loads(_signed(key, victim))
    altered["row"]["exercises"] = {"simclr.nt_xent": {"score": 10, "max_score": 10}}  # the mark changed, not the hmac
    forged = {"row": {**victim, "reason": "forged by a submission graded first"}, "hmac": "0" * 64}
    progress_path(out).write_text("\n".join([_signed(key, kept), json.dumps(altered), json.dumps(forged),
                                             json.dumps(victim), '{"row": {"submission": "cut sh']))
    assert main(["grade", str(folder), "--out", str(out), "--resume", "--timeout", "30"]) == 0
    assert "refused 4 line(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["submission"]).stem for r in rows] == ["raising_cell_02_simclr", "renamed_function_02_simclr"]
    assert rows[0]["reason"] == "graded before the interruption"  # kept: signed with the key
    assert "nt_xent not found" in rows[1]["reason"] and rows[1]["total"] == "0"  # graded again
    lines = progress_path(out).read_text().splitlines()  # what the grader wrote verifies with the key
    assert [_signed(key, json.loads(line)["row"]) == line for line in lines] == [True, True]


def test_a_key_file_others_can_read_signs_nothing(tmp_path):
    from coursekit.grading.batch.results import read_key

    key_file = tmp_path / "grades.progress.key"
    key_file.write_text(secrets.token_hex(32))
    key_file.chmod(0o600)
    assert read_key(key_file) is not None
    key_file.chmod(0o644)
    assert read_key(key_file) is None
    (tmp_path / "link.key").symlink_to(key_file)
    key_file.chmod(0o600)
    assert read_key(tmp_path / "link.key") is None


def test_a_fresh_batch_makes_a_key_only_its_owner_reads(tmp_path):
    out = tmp_path / "grades.csv"
    assert main(["grade", str(FIXTURES / "untitled.ipynb"), "--out", str(out)]) == 0
    key_file = tmp_path / "grades.progress.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    line = progress_path(out).read_text().splitlines()[0]
    assert _signed(key, json.loads(line)["row"]) == line


def test_gradescope_results_hold_one_test_per_exercise(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    shutil.copy(FIXTURES / "raising_cell_02_simclr.ipynb", folder)
    out = tmp_path / "results.json"
    assert main(["grade", str(folder), "--out", str(out), "--format", "gradescope", "--timeout", "30"]) == 0
    results = json.loads(out.read_text())
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [
        ("raising_cell_02_simclr.ipynb: simclr.nt_xent", 0, 10),
        ("raising_cell_02_simclr.ipynb: simclr.augmentation_pair_similarity", 0, 7),
        ("raising_cell_02_simclr.ipynb: simclr.overlap_matrix", 0, 8)]
    assert results["score"] == 0 and "ZeroDivisionError" in results["output"]
    assert "not implemented" in results["tests"][0]["output"]


def test_a_grader_failure_on_one_submission_becomes_its_error_row(tmp_path, monkeypatch):
    from coursekit.grading.batch import runner as batch
    from coursekit.grading.batch.results import SubmissionResult

    def grade_or_fail(path, **options):
        if "raising" in path.name:
            raise RuntimeError("a bug in the grader")
        return SubmissionResult(str(path), "02_simclr", "ok", "graded")

    monkeypatch.setattr(batch, "grade_submission", grade_or_fail)
    out = tmp_path / "grades.csv"
    assert main(["grade", str(FIXTURES / "raising_cell_02_simclr.ipynb"), str(FIXTURES / "good_02_simclr.ipynb"),
                 "--out", str(out), "--json", str(tmp_path / "grades.json")]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("error", "the grader failed on this submission: RuntimeError: a bug in the grader"), ("ok", "graded")]


# ---------------------------------------------------------------------------------------------
# A bounded grader: hostile notebooks written here by hand, not by the fixtures' builder


def _notebook_json(cells: list[dict]) -> str:
    return json.dumps({"nbformat": 4, "nbformat_minor": 4, "metadata": {}, "cells": cells})


def _code(source) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


def test_notebooks_over_the_caps_are_refused_before_they_are_parsed(tmp_path):
    import tracemalloc

    from coursekit.grading.batch import runner as batch

    cases = {
        "huge_file_02_simclr.ipynb": None,  # over the file cap: a sparse file, never read whole
        "many_cells_02_simclr.ipynb": _notebook_json([_code("x = 1")] * (batch.MAX_CELLS + 1)),
        "big_cell_02_simclr.ipynb": _notebook_json([_code("x = 1\n" + "x = x + 1\n" * 400_000)]),  # 4 MiB
        "big_cells_02_simclr.ipynb": _notebook_json([_code(["y = 2\n"] * 9_000)] * 12),  # each under the cell cap
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is None:
            with open(path, "wb") as file:
                file.truncate(batch.MAX_NOTEBOOK_BYTES + 1)
        else:
            path.write_text(text)
    tracemalloc.start()
    reasons = {name: batch.grade_submission(tmp_path / name).reason for name in cases}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert reasons["huge_file_02_simclr.ipynb"].startswith("refused: the file is over")
    assert reasons["many_cells_02_simclr.ipynb"].startswith(f"refused: {batch.MAX_CELLS + 1} cells")
    assert reasons["big_cell_02_simclr.ipynb"].startswith("refused: cell 0 holds")
    assert reasons["big_cells_02_simclr.ipynb"].startswith("refused: the cells hold")
    assert peak < 64 * 2**20, peak  # a 4 MiB cell parsed into a syntax tree would take far more


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")
def test_outputs_and_feedback_keep_no_text_of_the_submission(tmp_path, capsys):
    secret = tmp_path / "grades_of_others.csv"
    secret.write_text("bob,SECRETSCORE25\n")
    folder = tmp_path / "submissions"
    folder.mkdir()
    cells = [
        _code("raise type('SECRETSCORE25', (Exception,), {})()"),
        _code(f"def nt_xent(z1, z2, t):\n    raise ValueError(open({str(secret)!r}).read())\n"
              "augmentation_pair_similarity = type('SECRETSCORE25', (), {})()"),
        _code("import sys\nsys.stdout.write('x' * (96 * 2**20))"),  # one message over the cap: dropped unread
    ]
    (folder / "mallory_02_simclr.ipynb").write_text(_notebook_json(cells))
    out, report = tmp_path / "grades.csv", tmp_path / "grades.json"
    assert main(["grade", str(folder), "--out", str(out), "--json", str(report), "--timeout", "60"]) == 0
    printed = capsys.readouterr().out
    row = json.loads(report.read_text())[0]
    assert row["status"] == "ok" and "cell 0, (a type of its own)" in row["reason"], row
    feedback = row["exercises"]["simclr.nt_xent"]["feedback"]
    raised = "FileNotFoundError" if ISOLATED else "ValueError"  # in namespaces the secret's folder is an empty one
    assert any(f"raised {raised}" in line for line in feedback), feedback
    assert "SECRETSCORE25" not in report.read_text() + out.read_text() + printed


def test_a_worker_past_its_wall_limit_or_memory_cap_costs_only_its_row(tmp_path, monkeypatch, capsys):
    from coursekit.grading.batch import runner as batch
    from coursekit.grading.batch.results import SubmissionResult

    def hostile_grading(path, **options):
        if "slow" in path.name:  # what a patched socket.connect and a no-op os.kill did to the old grader
            import time
            time.sleep(600)
        if "greedy" in path.name:
            return bytearray((batch.GRADER_MEMORY_MB + 512) * 2**20)
        if "crash" in path.name:
            os.kill(os.getpid(), 9)
        return SubmissionResult(str(path), "02_simclr", "ok", "graded")

    monkeypatch.setattr(batch, "grade_submission", hostile_grading)
    monkeypatch.setattr(batch, "wall_limit", lambda timeout: 3.0)
    names = ["a_slow_02_simclr", "b_greedy_02_simclr", "c_crash_02_simclr", "d_honest_02_simclr"]
    for name in names:
        shutil.copy(FIXTURES / "untitled.ipynb", tmp_path / f"{name}.ipynb")
    out = tmp_path / "grades.csv"
    assert main(["grade", *[str(tmp_path / f"{name}.ipynb") for name in names], "--out", str(out)]) == 0
    reasons = [r["reason"] for r in csv.DictReader(out.open())]
    assert reasons[0] == "ran past the grader's wall limit of 3 s for one submission and was stopped"
    assert reasons[1] == f"grading it took more than the grader's cap of {batch.GRADER_MEMORY_MB} MiB"
    assert reasons[2].startswith("the grader's worker for this submission ended (signal 9)")
    assert reasons[3] == "graded"


def test_symlinked_submissions_outside_the_folder_or_to_another_submission_are_refused(tmp_path, monkeypatch):
    from coursekit.grading.batch import runner as batch
    from coursekit.grading.batch.results import SubmissionResult

    monkeypatch.setattr(batch, "grade_submission",
                        lambda path, **options: SubmissionResult(str(path), "02_simclr", "ok", "graded"))
    folder, elsewhere = tmp_path / "submissions", tmp_path / "elsewhere"
    (folder / "alice").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(FIXTURES / "good_02_simclr.ipynb", folder / "alice" / "alice_02_simclr.ipynb")
    shutil.copy(FIXTURES / "good_02_simclr.ipynb", elsewhere / "someone_02_simclr.ipynb")
    (folder / "mallory_02_simclr.ipynb").symlink_to(folder / "alice" / "alice_02_simclr.ipynb")
    (folder / "eve_02_simclr.ipynb").symlink_to(elsewhere / "someone_02_simclr.ipynb")
    (folder / "trudy").symlink_to(elsewhere, target_is_directory=True)  # a linked folder
    out = tmp_path / "grades.csv"
    assert main(["grade", str(folder), "--out", str(out)]) == 0
    rows = {Path(r["submission"]).name: (r["status"], r["reason"]) for r in csv.DictReader(out.open())}
    assert rows["alice_02_simclr.ipynb"] == ("ok", "graded")
    assert rows["mallory_02_simclr.ipynb"] == ("error", "refused: a symbolic link to another submission")
    assert rows["eve_02_simclr.ipynb"] == ("error", "refused: a symbolic link to a file outside the submissions folder")
    assert rows.get("someone_02_simclr.ipynb", ("error",))[0] == "error"  # if the linked folder was searched


def test_the_package_hash_covers_bytecode_and_kernels_write_none(tmp_path):
    from coursekit.grading.batch import sandbox

    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "mod.py").write_text("x = 1\n")
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"honest")
    before = sandbox.fingerprint(package)
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"crafted, same header as mod.py")
    (package / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"planted")
    assert sandbox.changed_files(before, sandbox.fingerprint(package)) == [
        "__pycache__/mod.cpython-311.pyc", "__pycache__/new.cpython-311.pyc"]
    folders = sandbox.Folders(tmp_path / "sandbox")
    assert folders.environment({})["PYTHONDONTWRITEBYTECODE"] == "1"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")
def test_a_submission_that_plants_bytecode_in_the_package_stops_the_batch_or_cannot(tmp_path):
    """Without namespaces the planted .pyc is seen and the batch stops; in them the write fails."""
    package = tmp_path / "installed"
    shutil.copytree(PACKAGE, package / "coursekit", ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "submissions"
    folder.mkdir()
    plant = ("import coursekit, pathlib, sys\n"  # a .pyc for a module the grader imports late: methods/byol.py
             "cache = pathlib.Path(coursekit.__file__).parent / 'methods' / '__pycache__'\n"
             "cache.mkdir(exist_ok=True)\n"
             "(cache / f'byol.{sys.implementation.cache_tag}.pyc').write_bytes(b'crafted')")
    (folder / "a_mallory_02_simclr.ipynb").write_text(_notebook_json([_code(plant)]))
    shutil.copy(FIXTURES / "raising_cell_02_simclr.ipynb", folder / "b_bob_02_simclr.ipynb")
    out = tmp_path / "grades.csv"
    env = {**os.environ, "PYTHONPATH": str(package)}
    command = [sys.executable, "-m", "coursekit", "grade", str(folder), "--out", str(out), "--timeout", "30"]
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if ISOLATED:
        assert finished.returncode == 0, finished.stdout + finished.stderr[-2000:]
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 2 and "OSError" in rows[0]["reason"], rows
        assert not [p for p in package.rglob("*.pyc") if "methods" in p.parts]
        return
    assert finished.returncode == 1, finished.stdout + finished.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["status"] == "error", rows
    assert "methods/__pycache__/byol." in rows[0]["reason"]
    written = [p for p in package.rglob("*.pyc") if "methods" in p.parts]
    assert [p.name for p in written] == [f"byol.{sys.implementation.cache_tag}.pyc"]  # no honest .pyc there


def test_an_inflated_progress_file_is_read_line_by_line_within_a_cap(tmp_path, monkeypatch):
    import tracemalloc

    from coursekit.grading.batch import results

    monkeypatch.setattr(results, "MAX_PROGRESS_LINE_BYTES", 2**20)
    progress = tmp_path / "grades.progress.jsonl"
    with open(progress, "w") as file:  # what a submission could append: a 64 MiB line, then a short one
        file.write('{"row": "' + "x" * 64 * 2**20 + '"}\n{"row": {}, "hmac": ""}\n')
    tracemalloc.start()
    assert results.read_progress(progress, secrets.token_bytes(32)) == ([], 2)
    assert tracemalloc.get_traced_memory()[1] < 8 * 2**20  # read in pieces of the cap, never whole
    tracemalloc.stop()
