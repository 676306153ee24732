"""Building and running the Telegram application: PTB `Application`, long polling or webhook, delivery loop.

All resources (Redis through `QueueClient`, the PTB application, the delivery consumer, background tasks)
are opened and closed in `run_telegram`; handlers reach them through `bot_data`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from datetime import timedelta
from urllib.parse import urlsplit

from telegram import BotCommand
from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from likeness.bot._core import BotCore
from likeness.bot._tasks import cancel_and_wait
from likeness.bot.telegram._common import BotState, bot_state, install_state
from likeness.bot.telegram._delivery import DeliverySender
from likeness.bot.telegram._files import download_limit
from likeness.bot.telegram._handlers import register_handlers
from likeness.bot.telegram._progress import ProgressTracker
from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.logs import RedactingFilter, configured_secrets
from likeness.queue import DeliveryConsumer, QueueClient

__all__ = ["ALLOWED_UPDATES", "build_application", "run_telegram", "serve"]

log = logging.getLogger("likeness.bot.telegram")

# Telegram sends only what is asked for: without message_reaction, 👎 rerolls never arrive.
ALLOWED_UPDATES = ["message", "callback_query", "message_reaction"]
COMMANDS = [
    BotCommand("portrait", "Make a portrait: send a selfie with /portrait <style>"),
    BotCommand("presets", "List the styles"),
    BotCommand("help", "How it works"),
    BotCommand("cancel", "Stop your running portrait"),
    BotCommand("forget", "Delete everything stored about you"),
]
# Loggers that print request URLs, which carry the token.
_URL_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram.Bot",
    "telegram.ext.ExtBot",
    "telegram.ext.Updater",
    "telegram.ext.Application",
)
# Handlers, progress edits and deliveries call the API concurrently; a small pool makes them time out.
_POOL_SIZE = 64


def build_application(settings: Settings, core: BotCore) -> Application:  # type: ignore[type-arg]
    """The PTB application for `settings` (token, API server), with every handler and `core` injected."""
    token = _token(settings)
    api = settings.telegram_api_url.rstrip("/")
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .connection_pool_size(_POOL_SIZE)
        .pool_timeout(10.0)
        .get_updates_connection_pool_size(2)
        .rate_limiter(AIORateLimiter(max_retries=2))
        .concurrent_updates(True)
        .build()
    )
    progress = ProgressTracker(app.bot, core, idle_timeout_s=settings.job_timeout_s * 4)
    install_state(app.bot_data, BotState(settings, core, progress, download_limit(settings)))
    register_handlers(app)
    return app


async def run_telegram(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    consumer_name: str | None = None,
    poll_timeout_s: float = 10.0,
    claim_idle_s: float = 60.0,
) -> None:
    """Run the bot with its own queue client until `stop` is set (the command sets it on SIGINT/SIGTERM)."""
    _token(settings)
    async with QueueClient(settings) as queue:
        await serve(
            settings,
            BotCore(settings, queue),
            stop=stop,
            consumer_name=consumer_name,
            poll_timeout_s=poll_timeout_s,
            claim_idle_s=claim_idle_s,
        )


async def serve(
    settings: Settings,
    core: BotCore,
    *,
    stop: asyncio.Event | None = None,
    consumer_name: str | None = None,
    poll_timeout_s: float = 10.0,
    claim_idle_s: float = 60.0,
) -> None:
    """Run the bot on an existing core (e.g. shared with other frontends) until `stop` is set or cancelled.

    `consumer_name` must be stable per replica (default: the host name): after a restart the replica
    first gets the deliveries it had taken but not sent. Stopping lets the delivery in flight finish.
    """
    _token(settings)  # refuse clearly before anything starts
    redact = RedactingFilter(configured_secrets(settings))
    for name in _URL_LOGGERS:
        logging.getLogger(name).addFilter(redact)
    app = build_application(settings, core)
    progress = bot_state(app.bot_data).progress
    name = consumer_name or socket.gethostname()
    try:
        async with app, DeliveryConsumer(core.queue.redis, "telegram", name, claim_idle_s=claim_idle_s) as consumer:
            try:
                await app.bot.set_my_commands(COMMANDS)
            except TelegramError as exc:  # only the command menu is missing; the bot works
                log.warning("could not set the command menu: %s", exc)
            await app.start()
            deliveries = DeliverySender(app.bot, core, progress)
            sender = asyncio.create_task(deliveries.run(consumer), name="telegram-deliveries")
            try:
                await _start_updates(app, settings, poll_timeout_s)
                log.info(
                    "Telegram bot @%s is running (%s)",
                    app.bot.username,
                    "webhook" if settings.telegram_webhook_url else "long polling",
                )
                await (stop or asyncio.Event()).wait()
            finally:
                log.info("Telegram bot stopping")
                await cancel_and_wait(sender)
                await deliveries.drain()
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await app.stop()
                await progress.close()
    finally:
        for name in _URL_LOGGERS:
            logging.getLogger(name).removeFilter(redact)


async def _start_updates(app: Application, settings: Settings, poll_timeout_s: float) -> None:  # type: ignore[type-arg]
    assert app.updater is not None
    if settings.telegram_webhook_url:
        await _start_webhook(app, settings)
    else:
        await app.updater.start_polling(timeout=timedelta(seconds=poll_timeout_s), allowed_updates=ALLOWED_UPDATES)


async def _start_webhook(app: Application, settings: Settings) -> None:  # type: ignore[type-arg]
    """Telegram POSTs updates to the public URL; a reverse proxy forwards them to listen:port, same path.

    The secret token (derived from the bot token, never the token itself) proves a request came from Telegram.
    """
    assert app.updater is not None and settings.telegram_webhook_url
    url = settings.telegram_webhook_url
    secret = hashlib.sha256(b"likeness-webhook:" + _token(settings).encode()).hexdigest()[:48]
    await app.updater.start_webhook(
        listen=settings.telegram_webhook_listen,
        port=settings.telegram_webhook_port,
        url_path=urlsplit(url).path.strip("/"),
        webhook_url=url,
        secret_token=secret,
        allowed_updates=ALLOWED_UPDATES,
    )


def _token(settings: Settings) -> str:
    if settings.telegram_token is None or not settings.telegram_token.get_secret_value().strip():
        raise ConfigError(
            message="LIKENESS_TELEGRAM_TOKEN is not set. Create a bot with @BotFather and put its token there."
        )
    return settings.telegram_token.get_secret_value().strip()
