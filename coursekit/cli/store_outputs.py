"""``coursekit store-outputs``: run notebooks under the smoke profile and keep only the outputs of
the cells nbval compares (``coursekit.notebooks.store_outputs``).

    coursekit store-outputs solutions/02_simclr.ipynb
"""
from __future__ import annotations

import argparse
from pathlib import Path

from coursekit.cli.publish import check_notebook_paths
from coursekit.notebooks import store_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks to run under smoke")


def run(args: argparse.Namespace) -> int:
    check_notebook_paths(args.paths)
    for path in args.paths:
        print(f"executing {path} (smoke profile)", flush=True)
        store_outputs(path)
    return 0
