"""Shared body of sub-commands that are not built yet: say so plainly, exit non-zero."""

from __future__ import annotations

import argparse
import sys


def not_built(name: str, issue: str) -> int:
    print(f"`likeness {name}` is not built yet ({issue}).", file=sys.stderr)
    return 2


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """Placeholder commands take no arguments."""
