"""``coursekit publish``: run lessons top to bottom under a profile, with an empty checkpoint cache, and
keep their outputs, stamped with the profile, device, date, seconds, and the fingerprints of their code,
their text and the coursekit values they read (``coursekit.notebooks.publish``).

    coursekit publish notebooks/02_simclr.ipynb --profile demo
    coursekit publish notebooks/02_simclr.ipynb --markdown-only   # after editing the text to match the outputs
    coursekit publish notebooks/*.ipynb --times                    # the README's table of lesson times
"""
from __future__ import annotations

import argparse
from pathlib import Path

from coursekit.cli import UsageError
from coursekit.notebooks import publish, restamp_markdown, times_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="lesson notebooks to run and publish")
    parser.add_argument("--profile", default="demo", help="run profile of the published outputs (default: demo)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default: 3600)")
    parser.add_argument("--cache", type=Path,
                        help="checkpoint cache to run with and keep (default: a fresh empty one, removed after)")
    parser.add_argument("--times", action="store_true",
                        help="do not run: print the README's table of the lessons' published times")
    parser.add_argument("--markdown-only", action="store_true",
                        help="do not run: stamp the edited text of a lesson whose code and values are unchanged")


def run(args: argparse.Namespace) -> int:
    check_notebook_paths(args.paths)
    if args.times:
        print(times_table(args.paths), end="")
        return 0
    for path in args.paths:
        if args.markdown_only:
            try:
                stamp = restamp_markdown(path)
            except ValueError as error:
                raise UsageError(str(error)) from None
            print(f"{path}: text stamped; the outputs of the run of {stamp['date']} stay", flush=True)
            continue
        print(f"publishing {path} ({args.profile} profile, checkpoint cache {args.cache or 'empty'})", flush=True)
        stamp = publish(path, args.profile, args.timeout, cache=args.cache)
        print(f"  {stamp['date']} on {stamp['device']}: {stamp['seconds']} s, checkpoint cache {stamp['cache']} (load "
              f"average {stamp['load_average']} at the start), {len(stamp['values'])} coursekit values read", flush=True)
    return 0


def check_notebook_paths(paths: list[Path]) -> None:
    """Every path first: a typo must not surface after an hour of running."""
    for path in paths:
        if Path(path).suffix != ".ipynb" or not Path(path).is_file():
            raise UsageError(f"{path} is not a notebook file: give the .ipynb path of a lesson "
                             "(e.g. notebooks/02_simclr.ipynb)")
