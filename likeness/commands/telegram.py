"""`likeness telegram`: not built yet (issue 5)."""

from __future__ import annotations

import argparse

from likeness.commands._placeholder import no_arguments as add_arguments
from likeness.commands._placeholder import not_built

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    return not_built("telegram", "issue 5")
