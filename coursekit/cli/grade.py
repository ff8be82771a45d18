"""``coursekit grade``: grade a folder of submitted homework notebooks into CSV/JSON
(the work is ``coursekit.grading.batch.grade_batch``).

    coursekit grade submissions/ --out grades.csv --json grades.json [--timeout 300] [--homework 02_simclr]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from coursekit.cli import UsageError
from coursekit.grading.batch import DEFAULT_TIMEOUT, grade_batch, sandbox
from coursekit.grading.homework import HOMEWORK


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
                        help="keep the rows of the progress file signed with the batch's key (OUT.progress.key) "
                             "and grade the submissions it lacks; unsigned or altered rows are graded again")
    parser.add_argument("--memory-limit", type=int, default=defaults.memory_mb,
                        help=f"MiB of address space per process of a submission (default {defaults.memory_mb})")
    parser.add_argument("--cpu-limit", type=int, default=defaults.cpu_seconds,
                        help=f"CPU seconds per process of a submission (default {defaults.cpu_seconds})")
    parser.add_argument("--process-limit", type=int, default=defaults.processes,
                        help=f"processes and threads a submission may add (default {defaults.processes})")


def run(args: argparse.Namespace) -> int:
    for name in ("memory_limit", "cpu_limit", "process_limit"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for output in filter(None, [args.out, args.json]):
        if not output.parent.is_dir():
            raise UsageError(f"the folder of {output} does not exist: create it first")
    if args.homework and args.homework not in HOMEWORK:
        raise UsageError(f"unknown homework {args.homework!r}; known: {', '.join(HOMEWORK)}")
    return grade_batch(args.submissions, args.out, json_path=args.json, fmt=args.format, timeout=args.timeout,
                       homework=args.homework, resume=args.resume,
                       limits=sandbox.Limits(args.memory_limit, args.cpu_limit, args.process_limit))
