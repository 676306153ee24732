"""Redis connections and failures, for both sides of the queue: one place for every retry policy.

- **Pools** (`timed_pool`) whose replies time out, so a frozen or partitioned Redis fails within seconds. Not
  redis-py's `socket_timeout`: with it set, every command's write goes through `asyncio.wait_for`, which on
  Python 3.11 can swallow a cancellation that arrives as the write completes (CPython gh-86296); a cancelled
  delivery loop then ran on forever (found in the Discord restart test). Only the reply is bounded here, with
  `asyncio.timeout`, which keeps a concurrent cancellation. A refused or dropped connection (a Redis restart)
  is retried on a fresh one; a timeout is not (a frozen Redis would multiply the wait).
- **Translation**: Redis failures reach the bots as `QueueUnavailable` (`redis_errors`, `translated`), once, at
  the queue's edge; Redis at `maxmemory` (it never evicts) as `QueueFull`.
- **Riding out an outage** (`outlasting_outage`): writes that must not fail once something irrevocable
  happened (a job queued, a message sent) are tried again for a few seconds, the length of a Redis restart.

The worker's arq pool rides out longer outages (`WORKER_RETRY`, `WORKER_CONNECT_RETRIES`): a worker waits for
Redis, a user does not.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeness.errors import QueueFull, QueueUnavailable

__all__ = [
    "OUTAGE_RETRIES_S",
    "REDIS_DOWN",
    "outlasting_outage",
    "redis_errors",
    "timed_pool",
    "translated",
    "worker_retry",
]

OUTAGE_RETRIES_S = (0.1, 0.3, 1.0, 2.0, 4.0)
"""Pauses between tries of a write that must outlast a Redis restart (~7 s in all)."""

# WatchError: arq's enqueue_job WATCHes the job key and handles a real conflict itself; one that escapes is
# redis-py reporting a connection lost while watching (Redis restarting).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, WatchError, ConnectionError, OSError)
"""What a Redis that is down, restarting or frozen raises."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _TimedReplies:
    """Mixin for redis-py connections: a reply that takes longer than `reply_timeout` s raises redis-py's
    `TimeoutError` (and redis-py drops the connection: the late reply would answer the next command)."""

    def __init__(self, *, reply_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reply_timeout = reply_timeout

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.reply_timeout):
                return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except TimeoutError as exc:  # the builtin one: our deadline, not redis-py's own TimeoutError
            raise RedisTimeoutError(f"Redis did not answer within {self.reply_timeout:g} s") from exc


class _TimedConnection(_TimedReplies, Connection):
    pass


class _TimedSSLConnection(_TimedReplies, SSLConnection):
    pass


class _TimedUnixConnection(_TimedReplies, UnixDomainSocketConnection):
    pass


_CLASSES: dict[str, type[Any]] = {"rediss": _TimedSSLConnection, "unix": _TimedUnixConnection}


def timed_pool(dsn: str, *, reply_timeout_s: float, retries: int = 2, backoff_cap_s: float = 0.5) -> ConnectionPool:
    """A pool for `dsn` whose replies time out after `reply_timeout_s` (raise it above any BLOCK a command
    asks for); a refused or dropped connection is retried `retries` times on a fresh one."""
    return ConnectionPool.from_url(
        dsn,
        connection_class=_CLASSES.get(urlsplit(dsn).scheme, _TimedConnection),
        retry=Retry(ExponentialBackoff(cap=backoff_cap_s, base=0.05), retries),
        retry_on_error=[RedisConnectionError],
        socket_connect_timeout=reply_timeout_s,
        reply_timeout=reply_timeout_s,
    )


def worker_retry() -> dict[str, Any]:
    """arq `RedisSettings` fields for a worker: ride out a Redis restart (~30 s) instead of crashing."""
    return {
        "retry": Retry(ExponentialBackoff(cap=3.0, base=0.1), 12),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "conn_retries": 30,
    }


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """`async with redis_errors():` around Redis calls whose failure the user should see as "unavailable"."""
    try:
        yield
    except OutOfMemoryError as exc:  # Redis at `maxmemory` (noeviction): refuse new work, keep what is queued
        raise QueueFull(retry_after=60) from exc
    except (RedisError, *REDIS_DOWN) as exc:
        raise QueueUnavailable() from exc


def translated(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Decorator: `redis_errors` around a whole coroutine function (the queue client's public calls)."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with redis_errors():
            return await fn(*args, **kwargs)

    return wrapper


async def outlasting_outage(call: Callable[[], Awaitable[_T]], delays: Sequence[float] | None = None) -> _T:
    """`await call()`, tried again after each delay while Redis fails (a restart takes a second or two), for
    writes that must not fail once something irrevocable happened (a message sent, a job queued); the last
    failure raises `QueueUnavailable`. `delays` default to `OUTAGE_RETRIES_S`."""
    for delay in OUTAGE_RETRIES_S if delays is None else delays:
        try:
            return await call()
        except (*REDIS_DOWN, QueueUnavailable):
            await asyncio.sleep(delay)
    async with redis_errors():
        return await call()
