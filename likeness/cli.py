"""`likeness` command line: one sub-command per entrypoint, each in `likeness/commands/<name>.py`.

Sub-command modules are imported only when chosen, so `likeness --help` and the bots stay fast and
never import torch unless the command needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (help text, module under likeness.commands)
COMMANDS: dict[str, str] = {
    "generate": "Generate portraits from a selfie on this machine (no Redis, no bots)",
    "presets": "List the available presets",
    "worker": "Run a GPU worker that serves the queue",
    "telegram": "Run the Telegram bot",
    "discord": "Run the Discord bot",
    "up": "Run everything on one machine: Redis, a worker, the playground and the bots with tokens",
    "doctor": "Check the configuration and print fixes",
    "models": "Manage model weights (`likeness models pull`)",
    "moderate": "Ban or unban users and read the abuse log",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen command, return its exit code."""
    parser = argparse.ArgumentParser(
        prog="likeness", description="Identity-preserving AI portraits for Discord and Telegram."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"likeness.commands.{name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        modules[name] = module
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from pydantic import ValidationError

    from likeness.config import Settings, describe_invalid

    try:
        return int(modules[args.command].run(args) or 0)
    except ValidationError as exc:  # every command reads `Settings()` from the environment and .env
        if exc.title != Settings.__name__:
            raise
        print(
            f"likeness {args.command}: invalid configuration: {describe_invalid(exc)}\n"
            "Fix these values in the environment or .env (see .env.example); `likeness doctor` checks the rest.",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
