"""Redis connection pools whose replies time out, so a frozen or partitioned Redis fails within seconds.

Not redis-py's `socket_timeout`: with it set, every command's write goes through `asyncio.wait_for`, which on
Python 3.11 can swallow a cancellation that arrives as the write completes (CPython gh-86296). A cancelled
delivery loop then ran on forever (found in the Discord restart test). Here only the reply is bounded, with
`asyncio.timeout`, which keeps a concurrent cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["timed_pool"]


class _TimedReplies:
    """Mixin for redis-py connections: a reply that takes longer than `reply_timeout` s raises `TimeoutError`
    (redis-py's) and drops the connection (its reply may still come, and would answer the next command)."""

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


_CLASSES: dict[str, type[Connection] | type[UnixDomainSocketConnection]] = {
    "rediss": _TimedSSLConnection,
    "unix": _TimedUnixConnection,
}


def timed_pool(dsn: str, *, reply_timeout_s: float, retries: int = 2, backoff_cap_s: float = 0.5) -> ConnectionPool:
    """A pool for `dsn` whose replies time out after `reply_timeout_s` (raise it above any BLOCK a command
    asks for). A refused or dropped connection (a Redis restart) is retried `retries` times on a fresh one; a
    timeout is not (a frozen Redis would multiply the wait)."""
    connection_class = _CLASSES.get(urlsplit(dsn).scheme, _TimedConnection)
    pool = ConnectionPool.from_url(
        dsn,
        connection_class=connection_class,
        retry=Retry(ExponentialBackoff(cap=backoff_cap_s, base=0.05), retries),
        retry_on_error=[RedisConnectionError],
        socket_connect_timeout=reply_timeout_s,
        reply_timeout=reply_timeout_s,
    )
    return pool
