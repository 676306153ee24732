"""`likeness up`: the whole product on one machine, in one process.

A private Redis (when no `LIKENESS_REDIS_URL` is set and `redis-server` is installed), a worker with the
configured model, the web playground on loopback, and the Telegram/Discord bots whose tokens are set.
Ctrl-C (or SIGTERM) stops everything, the private Redis included.

A chat bot never takes the rest down: each runs under `_supervise`, which restarts it with backoff while its
API is unreachable and leaves it off, said once, when its token is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import random
import shutil
import signal
import sys
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
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
    from likeness.generation import load_engine
    from likeness.worker import LikenessWorker, worker_settings

    print(f"Loading model “{settings.model}”…", flush=True)
    loop = asyncio.get_running_loop()
    try:
        engine = await loop.run_in_executor(None, load_engine, settings)
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
        bots = _bots(settings, core)
        where = "a private Redis" if private_redis else settings.redis_dsn.split("@")[-1]
        print(f"Likeness is up (model {settings.model}, {where}). Press Ctrl-C to stop.", flush=True)
        tasks = [asyncio.create_task(service) for service in services]
        # Bots are supervised and never stop the rest: one left off (a refused token) just ends its task.
        bot_tasks = [asyncio.create_task(bot) for bot in bots]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        done |= {t for t in bot_tasks if t.done()}
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception() is not None]
        tasks += bot_tasks
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


def _bots(settings: Settings, core: Any) -> list[Coroutine[Any, Any, None]]:
    """The chat frontends whose tokens are set, sharing this process's core and queue, each supervised."""
    bots: list[Coroutine[Any, Any, None]] = []
    if settings.telegram_token is not None:
        from likeness.bot.telegram import serve as serve_telegram

        bots.append(
            _supervise("Telegram bot", partial(serve_telegram, settings, core), partial(_telegram_failure, settings))
        )
        print("Telegram bot: on", flush=True)
    if settings.discord_token is not None:
        from likeness.bot.discord import serve as serve_discord

        bots.append(
            _supervise("Discord bot", partial(serve_discord, settings, core), partial(_discord_failure, settings))
        )
        print("Discord bot: on", flush=True)
    if not bots:
        print("Chat bots: off (set LIKENESS_TELEGRAM_TOKEN / LIKENESS_DISCORD_TOKEN to start them)", flush=True)
    return bots


@dataclass(frozen=True)
class _Failure:
    """Why a supervised service stopped, as the supervisor needs it.

    `reason` is one line for the log (never a token); `retry=False` for what only the operator can fix (a
    refused token, invalid settings); `wait_s` is the least time to wait first (an API's "retry after").
    """

    reason: str
    retry: bool = True
    wait_s: float = 0.0


async def _supervise(
    name: str,
    serve: Callable[[], Awaitable[object]],
    explain: Callable[[Exception], _Failure | None],
    *,
    first_delay_s: float = 1.0,
    max_delay_s: float = 60.0,
    healthy_after_s: float = 60.0,
) -> None:
    """Run `serve()` until cancelled; when it fails, log why and start it again after a growing delay.

    `name` starts each log line ("Telegram bot"). `explain` turns the exception into a `_Failure`, or `None`
    for one nobody expected (logged with its traceback, once while it repeats, then retried). The delay doubles
    from `first_delay_s` up to `max_delay_s`, ±10 % jitter so that several bots don't retry in step, and starts
    over once a run lasted `healthy_after_s`: a bot that ran for an hour and lost its network comes back after
    a second (the log says "stopped" then, "could not start" after a shorter run). A failure with `retry=False`
    is logged once and ends the supervision (returns). A return from `serve()` itself counts as a failure: here
    a bot only stops when asked. Cancelling (Ctrl-C) stops `serve()` or the wait at once.
    """
    loop = asyncio.get_running_loop()
    delay = first_delay_s
    previous = ""
    while True:
        started = loop.time()
        failure: _Failure | None
        try:
            await serve()
        except Exception as exc:
            error: Exception | None = exc
            failure = explain(exc)
        else:
            error, failure = None, _Failure("it ended without being asked to stop")
        if loop.time() - started >= healthy_after_s:
            delay, what = first_delay_s, "stopped"
        else:
            what = "could not start"
        if failure is None:
            assert error is not None
            reason = f"{type(error).__name__}: {error}"
            unexpected = reason != previous
            failure = _Failure(reason)
        else:
            reason, unexpected = failure.reason, False
        previous = reason
        if not failure.retry:
            log.error("%s %s: %s. It stays off; the rest of Likeness keeps running.", name, what, reason)
            return
        wait = max(min(delay * random.uniform(0.9, 1.1), max_delay_s), failure.wait_s)
        shown = f"{wait:.1f}".removesuffix(".0")
        log.warning("%s %s: %s; retrying in %s s", name, what, reason, shown, exc_info=error if unexpected else None)
        await asyncio.sleep(wait)
        delay = min(delay * 2, max_delay_s)


def _telegram_failure(settings: Settings, exc: Exception) -> _Failure | None:
    """`_supervise`'s reading of what stopped the Telegram bot (PTB maps HTTP answers to these classes)."""
    from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError

    api = settings.telegram_api_url.rstrip("/")
    if isinstance(exc, InvalidToken):  # 401, or 404 for a malformed token; PTB's message quotes the token
        reason = f"the Bot API at {api} refused LIKENESS_TELEGRAM_TOKEN; check it with @BotFather (/token)"
        return _Failure(reason, retry=False)
    if isinstance(exc, RetryAfter):
        with warnings.catch_warnings():  # PTB warns that `retry_after` will become a timedelta
            warnings.simplefilter("ignore", DeprecationWarning)
            value = exc.retry_after
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        return _Failure(f"the Bot API at {api} asks to wait {seconds:g} s", wait_s=seconds)
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):  # TimedOut included
        return _Failure(f"cannot reach the Bot API at {api} ({exc.message})")
    if isinstance(exc, TelegramError):  # Conflict (another instance polling), BadRequest, Forbidden
        return _Failure(f"the Bot API at {api} answered: {exc.message}")
    return _common_failure(exc)


# Gateway close codes that a reconnect can't fix: authentication failed, invalid shard, sharding required,
# invalid API version, invalid intents, disallowed intents (discord.dev/topics/opcodes-and-status-codes).
_DISCORD_FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})


def _discord_failure(settings: Settings, exc: Exception) -> _Failure | None:
    """`_supervise`'s reading of what stopped the Discord bot."""
    import aiohttp
    import discord

    api = settings.discord_api_url.rstrip("/")
    if isinstance(exc, discord.LoginFailure):
        reason = "Discord refused LIKENESS_DISCORD_TOKEN; copy it again from your application's Bot page"
        return _Failure(reason, retry=False)
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return _Failure("Discord refused the intents the bot asks for (see the Bot page)", retry=False)
    if isinstance(exc, discord.ConnectionClosed) and exc.code in _DISCORD_FATAL_CLOSE_CODES:
        return _Failure(f"the Discord gateway closed the connection with code {exc.code}", retry=False)
    if isinstance(exc, discord.RateLimited):
        return _Failure(f"Discord at {api} asks to wait {exc.retry_after:g} s", wait_s=exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        return _Failure(f"Discord at {api} answered {exc.status}: {exc.text}")
    if isinstance(exc, TimeoutError):  # an OSError too, with an empty message
        return _Failure(f"cannot reach Discord at {api} (timed out)")
    if isinstance(exc, aiohttp.ClientError | OSError | discord.GatewayNotFound | discord.ConnectionClosed):
        return _Failure(f"cannot reach Discord at {api} ({type(exc).__name__}: {exc})")
    return _common_failure(exc)


def _common_failure(exc: Exception) -> _Failure | None:
    """What stops either bot the same way: invalid settings (for good) and the queue's Redis (for a while)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from likeness.errors import QueueUnavailable

    if isinstance(exc, ConfigError):
        return _Failure(exc.user_message, retry=False)
    if isinstance(exc, QueueUnavailable | RedisConnectionError | RedisTimeoutError):
        return _Failure("cannot reach Redis")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
