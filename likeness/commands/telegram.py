"""`likeness telegram`: run the Telegram bot until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from likeness.logs import setup_logging

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replica",
        metavar="NAME",
        default=None,
        help="Stable name of this bot replica for result delivery (default: the host name)",
    )


def run(args: argparse.Namespace) -> int:

    from likeness.config import Settings

    settings = Settings()  # invalid values: answered by `likeness.cli`
    if settings.telegram_token is None:
        print(
            "LIKENESS_TELEGRAM_TOKEN is not set. Create a bot with @BotFather (/newbot) and export its token, "
            "e.g. LIKENESS_TELEGRAM_TOKEN=123456:ABC... likeness telegram",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings)
    from telegram.error import InvalidToken, NetworkError

    from likeness.errors import ConfigError

    try:
        asyncio.run(_serve(settings, getattr(args, "replica", None)))
    except ConfigError as exc:
        print(exc.user_message, file=sys.stderr)
        return 2
    except InvalidToken:
        print("Telegram refused LIKENESS_TELEGRAM_TOKEN. Check it with @BotFather (/token).", file=sys.stderr)
        return 2
    except NetworkError as exc:
        print(f"Cannot reach the Bot API at {settings.telegram_api_url}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: object, replica: str | None) -> None:
    from likeness.bot.telegram import run_telegram
    from likeness.config import Settings

    assert isinstance(settings, Settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_telegram(settings, stop=stop, consumer_name=replica)
