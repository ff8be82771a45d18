"""The ``coursekit`` command line (also ``python -m coursekit``).

Each subcommand's module (``coursekit/cli/<command>.py``, the only place that parses arguments) provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is used, so ``coursekit --help`` stays fast.

A mistake of the user (a bad option, a folder that cannot be written, a dataset that is missing or
damaged, a checkpoint that does not fit the run) is printed as one line
``coursekit: error: ...`` and the command exits with status 2. Tracebacks are for bugs; ``--debug``
shows them for user errors too.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "pretrain": ("coursekit.cli.pretrain", "self-supervised pretraining of a backbone (works under torchrun)"),
    "grade": ("coursekit.cli.grade", "grade a folder of submitted homework notebooks into CSV/JSON"),
    "exercises": ("coursekit.cli.exercises", "regenerate exercises/ from solutions/ (or --check that it is in sync)"),
    "profile": ("coursekit.cli.profile", "print the run profile that would be used"),
    "export": ("coursekit.cli.export", "write a pretrained backbone as a YOLO .pt (ultralytics) or a state_dict"),
    "publish": ("coursekit.cli.publish", "run lessons under a profile and keep their stamped outputs"),
    "prepare": ("coursekit.cli.prepare", "run the lessons' pretrainings ahead of class, so the lessons load them"),
    "store-outputs": ("coursekit.cli.store_outputs", "run notebooks under smoke, keep only the outputs nbval compares"),
}
USER_ERROR_STATUS = 2


class UsageError(Exception):
    """A mistake in what the user asked for, found before any work is lost: the message says what is
    wrong, where, and what to do."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors, so that they print as every other user error."""

    def error(self, message: str):
        raise UsageError(f"{message} (see: {self.prog} --help)")


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake or an environment problem, not a bug."""
    from coursekit.data import DatasetUnavailableError
    from coursekit.engine.checkpoint import CheckpointError
    from coursekit.profile import ProfileError

    return UsageError, CheckpointError, DatasetUnavailableError, ProfileError, OSError


def one_line(message: str) -> str:
    """A multi-line message on one line: lines after a ':' or '.' follow with a space, others with '; '."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines[1:]:
        text += (" " if text.endswith((":", ".")) else "; ") + line
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = False
    try:
        parser = CommandParser(prog="coursekit", description=__doc__.splitlines()[0])
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
        if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
            parser.parse_args(argv or ["--help"])  # prints help, or the error for an unknown command
            return USER_ERROR_STATUS
        module_name, help_text = COMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        command_parser = CommandParser(prog=f"coursekit {argv[0]}", description=help_text)
        command_parser.add_argument("--debug", action="store_true",
                                    help="show the Python traceback of an error (for bug reports)")
        module.add_arguments(command_parser)
        args = command_parser.parse_args(argv[1:])
        debug = args.debug
        return int(module.run(args) or 0)
    except Exception as error:
        if debug or not isinstance(error, user_error_types()):
            raise
        print(f"coursekit: error: {one_line(str(error))}", file=sys.stderr)
        return USER_ERROR_STATUS
