"""``coursekit exercises``: regenerate ``exercises/`` from ``solutions/`` (or ``--check`` that it is
in sync); the work is ``coursekit.notebooks.generate_exercises``.

    coursekit exercises [--check]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from coursekit.cli import UsageError
from coursekit.notebooks import REPO_ROOT, generate_exercises


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only check that exercises/ is in sync; exit 1 if not")
    parser.add_argument("--solutions", type=Path, default=REPO_ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=REPO_ROOT / "exercises")


def run(args: argparse.Namespace) -> int:
    if not any(args.solutions.glob("*.ipynb")):  # else every exercise would be deleted as stale
        raise UsageError(f"--solutions {args.solutions} holds no notebooks: give the folder of the solution notebooks")
    stale = generate_exercises(args.solutions, args.exercises, check_only=args.check)
    if args.check and stale:
        print(f"exercises/ is out of date for: {', '.join(stale)}. Run `coursekit exercises` to regenerate.")
        return 1
    print(f"{'stale' if args.check else 'regenerated'}: {', '.join(stale) or 'none'}")
    return 0
