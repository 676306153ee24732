"""The Discord frontend (discord.py 2.x): /portrait and friends, persistent result buttons, 🔄 reactions,
reply-to-edit, reliable delivery. A thin adapter over `likeness.bot.BotCore`; never imports torch.

    async with QueueClient(settings) as queue:
        await serve(settings, BotCore(settings, queue))     # until cancelled

`settings.discord_api_url` is the REST base (an API proxy, or a fake in tests); the gateway is whatever
`GET <api>/gateway/bot` names, so it follows the API base.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import discord
import discord.http

from likeness.bot._core import BotCore
from likeness.bot.discord._client import REROLL_EMOJI, LikenessClient
from likeness.bot.discord._commands import command_payload, sync_commands
from likeness.config import Settings
from likeness.errors import ConfigError

__all__ = ["REROLL_EMOJI", "LikenessClient", "build_client", "command_payload", "run_discord", "serve", "sync_commands"]


def build_client(
    settings: Settings, core: BotCore, *, force_sync: bool = False, consumer_name: str | None = None
) -> LikenessClient:
    """A client pointed at `settings.discord_api_url`.

    discord.py keeps the REST base in the class attribute `Route.BASE` (one per process): it is set here,
    before the client makes its first request.
    """
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    return LikenessClient(settings, core, force_sync=force_sync, consumer_name=consumer_name)


async def serve(settings: Settings, core: BotCore, *, force_sync: bool = False) -> None:
    """Run the Discord bot in the running event loop until cancelled (used by `likeness up`)."""
    if settings.discord_token is None:
        raise ConfigError(message="LIKENESS_DISCORD_TOKEN is not set: create a bot at discord.com/developers.")
    client = build_client(settings, core, force_sync=force_sync)
    async with client:
        await client.start(settings.discord_token.get_secret_value())


def run_discord(settings: Settings, *, force_sync: bool = False) -> int:
    """`likeness discord`: the bot on its own (a worker runs elsewhere); returns 0 on SIGINT/SIGTERM."""
    from likeness.queue import QueueClient

    async def main() -> None:
        main_task = asyncio.current_task()
        assert main_task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):  # a clean stop (Ctrl-C, docker stop, systemd)
            asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
        async with QueueClient(settings) as queue:
            await serve(settings, BotCore(settings, queue), force_sync=force_sync)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    except discord.LoginFailure:
        print("Discord refused the token in LIKENESS_DISCORD_TOKEN: copy it again from the Bot page.", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, discord.GatewayNotFound) as exc:
        print(f"Cannot reach Discord at {settings.discord_api_url}: {exc}", file=sys.stderr)
        return 1
    return 0
