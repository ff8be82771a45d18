"""``coursekit prepare``: run every pretraining the lessons would run live, the night before class.

    coursekit prepare --profile demo                 # every lesson in notebooks/
    coursekit prepare notebooks/04_byol.ipynb        # one lesson

Each lesson runs up to its last cell tagged ``pretraining`` (``coursekit.notebooks.prepare``), in a
kernel with this shell's environment, so the runs land in the same checkpoint cache the lessons read
(``COURSEKIT_CACHE``, else ``~/.cache/coursekit``). In class those cells then load in seconds.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from coursekit.cli import UsageError
from coursekit.cli.publish import check_notebook_paths
from coursekit.notebooks import REPO_ROOT, prepare
from coursekit.profile import cache_dir, get_profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path,
                        help="lesson notebooks (default: every notebooks/*.ipynb of this checkout)")
    parser.add_argument("--profile", default="demo", help="the profile the class will use (default: demo)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default: 3600)")


def run(args: argparse.Namespace) -> int:
    paths = args.paths or sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        raise UsageError(f"no lessons in {REPO_ROOT / 'notebooks'}: give the .ipynb paths of the lessons to prepare "
                         "(they come with a clone of the course repository)")
    check_notebook_paths(paths)
    get_profile(args.profile, device="cpu")  # an unknown profile fails here, not after the first lesson
    print(f"preparing {len(paths)} lesson(s) under the {args.profile!r} profile; checkpoints go to {cache_dir()}",
          flush=True)
    start = time.perf_counter()
    for path in paths:
        seconds = prepare(path, args.profile, args.timeout)
        print(f"  {path}: " + ("pretrains nothing" if seconds is None else f"ready in {seconds:.0f} s"), flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0
