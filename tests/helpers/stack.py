"""The whole product on the test's event loop: a worker on a real engine, a queue client, the bot core."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from likeness.bot import BotCore
from likeness.config import Settings
from likeness.queue import QueueClient
from likeness.queue._worker import LikenessWorker, worker_settings


class Borrowed:
    """An engine shared by several tests: the worker's shutdown must not close it."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def close(self) -> None:
        """Left open for the next test; the fixture that built the engine closes it."""


@asynccontextmanager
async def running_stack(settings: Settings, engine: Any) -> AsyncIterator[BotCore]:
    """A worker serving `engine` plus an open `BotCore`; everything is stopped on exit."""
    borrowed = Borrowed(engine)
    worker = LikenessWorker(**worker_settings(settings, engine_factory=lambda _s: borrowed), handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        async with QueueClient(settings) as queue:
            yield BotCore(settings, queue)
    finally:
        worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        await worker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
