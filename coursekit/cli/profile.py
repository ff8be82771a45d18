"""``coursekit profile``: print the profile banner that notebooks print."""
from __future__ import annotations

import argparse

from coursekit.profile import PROFILE_NAMES, get_profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", choices=PROFILE_NAMES, help="force a profile instead of COURSEKIT_PROFILE")


def run(args: argparse.Namespace) -> int:
    print(get_profile(args.name).banner())
    return 0
