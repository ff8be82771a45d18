"""``coursekit publish``: run lessons top to bottom under a profile and keep their outputs, stamped
with the profile, device, date and the sha256 of their code (``coursekit.notebooks.publish``).

    coursekit publish notebooks/02_simclr.ipynb --profile demo
"""
from __future__ import annotations

import argparse
from pathlib import Path

from coursekit.cli import UsageError
from coursekit.notebooks import publish


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="lesson notebooks to run and publish")
    parser.add_argument("--profile", default="demo", help="run profile of the published outputs (default: demo)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default: 3600)")


def run(args: argparse.Namespace) -> int:
    check_notebook_paths(args.paths)
    for path in args.paths:
        print(f"publishing {path} ({args.profile} profile)", flush=True)
        stamp = publish(path, args.profile, args.timeout)
        print(f"  {stamp['date']} on {stamp['device']}, source {stamp['source_sha256'][:12]}", flush=True)
    return 0


def check_notebook_paths(paths: list[Path]) -> None:
    """Every path first: a typo must not surface after an hour of running."""
    for path in paths:
        if Path(path).suffix != ".ipynb" or not Path(path).is_file():
            raise UsageError(f"{path} is not a notebook file: give the .ipynb path of a lesson "
                             "(e.g. notebooks/02_simclr.ipynb)")
