"""Redis failures become `QueueUnavailable`, translated once at the queue's edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from likeness.errors import QueueUnavailable

__all__ = ["redis_errors"]


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """`async with redis_errors():` around Redis calls whose failure the user should see as "unavailable"."""
    try:
        yield
    except RedisError as exc:
        raise QueueUnavailable() from exc
