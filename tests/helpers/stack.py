"""The whole product on the test's event loop: a worker on a real engine, a queue client, the bot core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from likeness.bot import BotCore
from likeness.config import Settings
from likeness.queue import QueueClient
from likeness.worker import worker_in_loop


class Borrowed:
    """An engine shared by several tests: the worker's shutdown must not close it."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def close(self) -> None:
        """Left open for the next test; the fixture that built the engine closes it."""


@asynccontextmanager
async def serving_worker(settings: Settings, **factories: Any) -> AsyncIterator[None]:
    """An arq worker on this loop (`factories`: see `worker_settings`; default: `load_engine(settings)`)."""
    async with worker_in_loop(settings, **factories):
        yield


@asynccontextmanager
async def running_stack(settings: Settings, engine: Any) -> AsyncIterator[BotCore]:
    """A worker serving `engine` plus an open `BotCore`; everything is stopped on exit."""
    borrowed = Borrowed(engine)
    async with serving_worker(settings, engine_factory=lambda _s: borrowed), QueueClient(settings) as queue:
        yield BotCore(settings, queue)
