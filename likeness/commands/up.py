"""`likeness up`: the whole product on one machine, in one process.

A private Redis (when no `LIKENESS_REDIS_URL` is set and `redis-server` is installed), a worker with the
configured model, the web playground on loopback, and the Telegram/Discord bots whose tokens are set.
Ctrl-C (or SIGTERM) stops everything, the private Redis included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import shutil
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from likeness.config import Settings
from likeness.errors import ConfigError, ModelUnavailable
from likeness.redis_server import INSTALL_HINT, RedisServer

__all__ = ["add_arguments", "run"]

log = logging.getLogger("likeness.up")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="playground address (default: LIKENESS_PLAYGROUND_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="playground port (default: LIKENESS_PLAYGROUND_PORT, 8080)")
    parser.add_argument("--no-playground", action="store_true", help="run only the worker and the bots")


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["playground_host"] = args.host
    if args.port:
        overrides["playground_port"] = args.port
    settings = settings.model_copy(update=overrides)
    from likeness.logs import setup_logging

    setup_logging(settings)
    try:
        return asyncio.run(_up(settings, playground=not args.no_playground))
    except KeyboardInterrupt:
        return 0


async def _up(settings: Settings, *, playground: bool) -> int:
    redis_server: RedisServer | None = None
    if settings.redis_url is None:
        if shutil.which("redis-server") is None:
            print(INSTALL_HINT, file=sys.stderr)
            return 1
        try:
            redis_server = RedisServer(settings.data_dir / "redis", appendonly=True, maxmemory="1gb").start()
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        settings = settings.model_copy(update={"redis_url": redis_server.url})
    try:
        return await _serve(settings, playground=playground, private_redis=redis_server is not None)
    finally:
        if redis_server is not None:
            redis_server.stop()


async def _serve(settings: Settings, *, playground: bool, private_redis: bool) -> int:
    from likeness.generation import Engine
    from likeness.queue._worker import LikenessWorker, worker_settings

    print(f"Loading model “{settings.model}”…", flush=True)
    loop = asyncio.get_running_loop()
    try:
        engine = await loop.run_in_executor(None, Engine.load, settings)
    except ModelUnavailable as exc:
        print(
            f"{exc.user_message}\nTo try Likeness without weights, run: LIKENESS_MODEL=tiny likeness up",
            file=sys.stderr,
        )
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1

    from likeness.bot import BotCore
    from likeness.queue import QueueClient

    worker = LikenessWorker(**worker_settings(settings, engine_factory=lambda _settings: engine), handle_signals=False)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with QueueClient(settings) as queue:
        core = BotCore(settings, queue)
        services: list[Coroutine[Any, Any, Any]] = [worker.async_run()]
        runner = None
        if playground:
            runner, url = await _start_playground(core, settings)
            services.append(_playground_deliveries(core))
            print(f"Playground: {url}", flush=True)
        services += _bots(settings, core)
        where = "a private Redis" if private_redis else settings.redis_dsn.split("@")[-1]
        print(f"Likeness is up (model {settings.model}, {where}). Press Ctrl-C to stop.", flush=True)
        tasks = [asyncio.create_task(service) for service in services]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception() is not None]
        for task in tasks:
            task.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
        if runner is not None:
            await runner.cleanup()
        for task in failed:
            log.error("service stopped with an error", exc_info=task.exception())
        print("Stopped.", flush=True)
        return 1 if failed else 0


async def _start_playground(core: Any, settings: Settings) -> tuple[Any, str]:
    from aiohttp import web

    from likeness.bot.playground import build_app

    host = settings.playground_host
    if not _is_loopback(host):
        log.warning("the playground listens on %s: anyone who can reach it can use your GPU", host)
    runner = web.AppRunner(build_app(core), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, settings.playground_port).start()
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{settings.playground_port}"


async def _playground_deliveries(core: Any) -> None:
    from likeness.bot.playground import consume_deliveries

    await consume_deliveries(core)


def _bots(settings: Settings, core: Any) -> list[Coroutine[Any, Any, Any]]:
    """The chat frontends whose tokens are set, sharing this process's core and queue."""
    bots: list[Coroutine[Any, Any, Any]] = []
    if settings.telegram_token is not None:
        from likeness.bot.telegram import serve as serve_telegram

        bots.append(serve_telegram(settings, core))
        print("Telegram bot: on", flush=True)
    if settings.discord_token is not None:
        from likeness.bot.discord import serve as serve_discord

        bots.append(serve_discord(settings, core))
        print("Discord bot: on", flush=True)
    if not bots:
        print("Chat bots: off (set LIKENESS_TELEGRAM_TOKEN / LIKENESS_DISCORD_TOKEN to start them)", flush=True)
    return bots


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
