"""The results of a batch: one row per submission, kept safe as soon as it exists.

Every graded submission is appended at once to a progress file (JSON lines, flushed and synced),
then the CSV, the JSON and the written answers are rewritten whole (to a temporary file, then
renamed), so a crash or an interrupt loses at most the submission being graded; ``--resume``
reads the progress file back and skips what it holds.

Each progress line is ``{"row": ..., "hmac": ...}``: the row signed (HMAC-SHA256 of its JSON with
sorted keys and no spaces) with a random key made for the batch and kept beside the progress file
(``OUT.progress.key``, mode 0600). ``--resume`` keeps only rows signed with that key: a row written
or altered by anyone who cannot read the key is refused and its submission graded again. A process
running as the instructor's account *can* read the key: that is not covered (see the README). File names that are not valid UTF-8 are
written with their undecodable bytes escaped (``\\xff``).
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..homework import HOMEWORK


MAX_PROGRESS_LINE_BYTES = 16 * 2**20  # one row; a notebook's source (answers included) is capped at 512 Ki characters


@dataclass
class SubmissionResult:
    """The grading of one submission (one CSV row)."""

    submission: str
    homework: str = ""
    status: str = "ok"
    reason: str = ""
    exercises: dict[str, dict] = field(default_factory=dict)  # exercise id -> GradeResult fields
    answers: list[dict] = field(default_factory=list)  # {"question": heading, "answer": text}

    @property
    def total(self) -> int:
        return sum(e["score"] for e in self.exercises.values())

    @property
    def max_score(self) -> int:
        return sum(e["max_score"] for e in self.exercises.values())

    def row(self) -> dict:
        return {**asdict(self), "total": self.total, "max": self.max_score}


def display_name(path: Path | str) -> str:
    """``path`` as text that any file format can hold: undecodable bytes become ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def progress_path(out: Path) -> Path:
    """The progress file that goes with the CSV ``out`` (grades.csv -> grades.progress.jsonl)."""
    return out.with_name(out.stem + ".progress.jsonl")


def answers_path(out: Path) -> Path:
    """The written answers that go with the CSV ``out`` (grades.csv -> grades.answers.md)."""
    return out.with_name(out.stem + ".answers.md")


def key_path(out: Path) -> Path:
    """The file of the key that signs the progress rows (grades.csv -> grades.progress.key)."""
    return out.with_name(out.stem + ".progress.key")


def new_key(path: Path) -> bytes:
    """A fresh random key for one batch, written to ``path`` readable by its owner only (0600)."""
    path.unlink(missing_ok=True)
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key.hex() + "\n")
    return key


def read_key(path: Path) -> bytes | None:
    """The batch's key, or None when the file is missing, a link, not this user's or readable by others."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor) as file:
        status = os.fstat(file.fileno())
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            return None
        try:
            return bytes.fromhex(file.read(200).strip())
        except ValueError:
            return None


def signature(key: bytes, row: dict) -> str:
    """HMAC-SHA256 of the row's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(row, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def read_progress(path: Path, key: bytes | None) -> tuple[list[SubmissionResult], int]:
    """The rows of a progress file signed with ``key``, the last one per submission, and how many
    lines were refused (unsigned, altered, signed with another key, or cut short by a crash)."""
    rows: dict[str, dict] = {}
    refused = 0
    if not path.exists():
        return [], 0
    for line in _lines(path):
        try:
            signed = json.loads(line)
            row, mark = signed["row"], signed["hmac"]
            valid = key is not None and isinstance(mark, str) and hmac.compare_digest(mark, signature(key, row))
        except (ValueError, KeyError, TypeError, RecursionError):
            valid = False
        if not valid:
            refused += 1
            continue
        rows[row["submission"]] = row
    results = [SubmissionResult(row["submission"], row["homework"], row["status"], row["reason"], row["exercises"],
                                row.get("answers", [])) for row in rows.values()]
    return results, refused


def _lines(path: Path):
    """The lines of ``path``; one longer than ``MAX_PROGRESS_LINE_BYTES`` (which the grader never
    writes) comes as an empty line, read in pieces, never whole."""
    with open(path, "rb") as file:
        while line := file.readline(MAX_PROGRESS_LINE_BYTES + 1):
            if len(line) > MAX_PROGRESS_LINE_BYTES:
                while line and not line.endswith(b"\n"):
                    line = file.readline(MAX_PROGRESS_LINE_BYTES)
                line = b""
            yield line


def append_progress(path: Path, result: SubmissionResult, key: bytes) -> None:
    """Append the row, signed with the batch's ``key``, flushed and synced."""
    row = result.row()
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps({"row": row, "hmac": signature(key, row)}) + "\n")
        file.flush()
        os.fsync(file.fileno())


def exercise_columns(results: list[SubmissionResult]) -> list[str]:
    """Exercise ids of all graded homework, in homework order."""
    homework = {r.homework for r in results}
    return [eid for hw, ids in HOMEWORK.items() if hw in homework for eid in ids]


def csv_text(results: list[SubmissionResult]) -> str:
    columns = exercise_columns(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["submission", "homework", "status", "reason", *columns, "total", "max", "answers"])
    for r in results:
        scores = [r.exercises[c]["score"] if c in r.exercises else "" for c in columns]
        answered = sum(1 for a in r.answers if a["answered"])
        writer.writerow([r.submission, r.homework, r.status, r.reason, *scores, r.total, r.max_score,
                         f"{answered}/{len(r.answers)}" if r.answers else ""])
    return buffer.getvalue()


def answers_text(results: list[SubmissionResult]) -> str:
    """Every written answer of every submission, in one Markdown file to read in one go."""
    lines = ["# Written answers", ""]
    for r in results:
        if not r.answers:
            continue
        lines += [f"## {r.submission}", ""]
        for answer in r.answers:
            lines += [f"### {answer['question']}", "", answer["answer"] or "*(no answer)*", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def gradescope_text(results: list[SubmissionResult]) -> str:
    """Gradescope's autograder ``results.json`` for one student whose notebooks are ``results``:
    one test per exercise (its feedback as output), the statuses and reasons as the overall output."""
    tests = []
    for r in results:
        for exercise_id, grade in r.exercises.items():
            tests.append({"name": f"{Path(r.submission).name}: {exercise_id}", "score": grade["score"],
                          "max_score": grade["max_score"], "output": "\n".join(grade["feedback"]) or "all checks passed",
                          "visibility": "visible"})
    summary = [f"{Path(r.submission).name}: {r.status}{': ' + r.reason if r.reason else ''}" for r in results]
    return json.dumps({"score": sum(r.total for r in results), "output": "\n".join(summary),
                       "visibility": "visible", "tests": tests}, indent=2)


def write_all(results: list[SubmissionResult], out: Path, json_path: Path | None, form: str = "csv") -> None:
    """The CSV (or Gradescope's results.json), the JSON (if asked for) and the written answers,
    each replaced whole."""
    write_atomically(out, csv_text(results) if form == "csv" else gradescope_text(results))
    if json_path is not None:
        write_atomically(json_path, json.dumps([r.row() for r in results], indent=2))
    write_atomically(answers_path(out), answers_text(results))
