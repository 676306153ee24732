"""Redis failures become `QueueUnavailable`, translated once at the queue's edge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeness.errors import QueueUnavailable

__all__ = ["OUTAGE_RETRIES_S", "outlasting_outage", "redis_errors"]

OUTAGE_RETRIES_S = (0.1, 0.3, 1.0, 2.0, 4.0)

_T = TypeVar("_T")


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """`async with redis_errors():` around Redis calls whose failure the user should see as "unavailable"."""
    try:
        yield
    except RedisError as exc:
        raise QueueUnavailable() from exc


async def outlasting_outage(call: Callable[[], Awaitable[_T]], delays: Sequence[float] | None = None) -> _T:
    """`await call()`, tried again after each delay while Redis fails (a restart takes a second or two), for
    writes that must not fail once something irrevocable happened (a message sent, a job queued); the last
    failure raises `QueueUnavailable`. `delays` default to `OUTAGE_RETRIES_S`."""
    for delay in OUTAGE_RETRIES_S if delays is None else delays:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError, QueueUnavailable):
            await asyncio.sleep(delay)
    async with redis_errors():
        return await call()
