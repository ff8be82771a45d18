"""The ``coursekit`` command line (also ``python -m coursekit``).

Each subcommand's module (``coursekit/cli/<command>.py``, or the package that owns the work) provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is used, so ``coursekit --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "pretrain": ("coursekit.cli.pretrain", "self-supervised pretraining of a backbone (works under torchrun)"),
    "grade": ("coursekit.grading.batch", "grade a folder of submitted homework notebooks into CSV/JSON"),
    "exercises": ("coursekit.notebooks", "regenerate exercises/ from solutions/ (or --check that it is in sync)"),
    "profile": ("coursekit.cli.profile", "print the run profile that would be used"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])  # prints help, or the error for an unknown command
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    command_parser = argparse.ArgumentParser(prog=f"coursekit {argv[0]}", description=help_text)
    module.add_arguments(command_parser)
    return int(module.run(command_parser.parse_args(argv[1:])) or 0)
