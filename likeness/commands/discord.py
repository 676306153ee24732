"""`likeness discord`: run the Discord bot until SIGINT/SIGTERM (a worker serves the queue elsewhere)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sync",
        action="store_true",
        help="upload the slash commands even if unchanged (normally only when their definition changed)",
    )


def run(args: argparse.Namespace) -> int:

    from likeness.config import Settings
    from likeness.errors import ConfigError
    from likeness.logs import setup_logging

    settings = Settings()  # invalid values: answered by `likeness.cli`
    if settings.discord_token is None:
        print(
            "LIKENESS_DISCORD_TOKEN is not set. Create an application at https://discord.com/developers/applications,\n"
            "add a bot, copy its token into LIKENESS_DISCORD_TOKEN and run `likeness discord` again (docs/discord.md).",
            file=sys.stderr,
        )
        return 2
    try:
        setup_logging(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from likeness.bot.discord import run_discord

    return run_discord(settings, force_sync=args.sync)
