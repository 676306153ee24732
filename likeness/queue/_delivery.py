"""Reliable delivery of finished jobs to bot frontends through one Redis stream per platform.

Workers append exactly one `Delivery` per job (`likeness:delivered:<job_id>` guards re-runs). Bots read
through the consumer group `bots`: each entry goes to one consumer, stays pending until `ack`, and a
consumer that died with entries pending has them reclaimed (XAUTOCLAIM) by a live replica after
`claim_idle_s`. A bot that was down when a job finished gets the entry when it starts again. Delivery is
at-least-once only in one case: a consumer that takes longer than `claim_idle_s` to send one message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeness.config import Settings
from likeness.errors import QueueUnavailable
from likeness.queue import _keys
from likeness.queue._models import Delivery, Platform
from likeness.queue._redis import outlasting_outage, timed_pool

__all__ = ["DeliveryConsumer", "append_delivery"]

log = logging.getLogger(__name__)

DELIVERY_STREAM_TTL_S = 30 * 24 * 3600
_MAX_ENTRIES = 10_000

# KEYS: delivered marker, stream, cancelled marker, then one entries index per owner.
# ARGV: delivery JSON, marker TTL s, stream TTL s, max entries, oldest entry id kept, index TTL s.
# One script so that "mark delivered" and "append" happen together or not at all, and never after a cancel;
# entries older than the results they carry are trimmed, and each entry is indexed for its users' `forget`.
_APPEND_ONCE = """
if redis.call('exists', KEYS[3]) == 1 then
  return false
end
if redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  local id = redis.call('xadd', KEYS[2], 'MINID', '~', ARGV[5], '*', 'd', ARGV[1])
  redis.call('xtrim', KEYS[2], 'MAXLEN', '~', ARGV[4])
  redis.call('expire', KEYS[2], ARGV[3])
  for i = 4, #KEYS do
    redis.call('sadd', KEYS[i], KEYS[2] .. ' ' .. id)
    redis.call('expire', KEYS[i], ARGV[6])
  end
  return id
end
return false
"""


async def append_delivery(
    redis: Redis, delivery: Delivery, *, marker_ttl_s: int, owners: Sequence[str] = ()
) -> str | None:
    """Append `delivery` to its platform's stream unless this job was delivered before or cancelled; the
    entry id, or None when nothing was appended.

    Entries older than `marker_ttl_s` (the results' TTL: what they point to is gone) are trimmed as new ones
    arrive. The entry is indexed for `forget` under the requester and every user in `owners`.
    """
    users = list(dict.fromkeys((delivery.origin.user_id, *owners)))
    oldest = max(0, int(time.time() * 1000) - marker_ttl_s * 1000)
    entry = await redis.eval(  # type: ignore[misc]
        _APPEND_ONCE,
        3 + len(users),
        _keys.delivered(delivery.job_id),
        _keys.deliveries(delivery.origin.platform),
        _keys.cancelled(delivery.job_id),
        *(_keys.user_entries(user) for user in users),
        delivery.model_dump_json(),
        str(marker_ttl_s),
        str(DELIVERY_STREAM_TTL_S),
        str(_MAX_ENTRIES),
        f"{oldest}-0",
        str(marker_ttl_s),
    )
    return None if entry is None else (entry.decode() if isinstance(entry, bytes) else str(entry))


class DeliveryConsumer:
    """Async iterator over the deliveries of one platform for one bot replica.

        async with DeliveryConsumer(settings, "telegram", "bot-1") as deliveries:
            async for delivery in deliveries:
                await send(delivery)            # raise -> not acked -> delivered again later
                await deliveries.ack(delivery)

    `consumer_name` must be stable per replica (e.g. the host name): after a restart the same name gets
    its own un-acked entries first. Entries idle for `claim_idle_s` at a dead consumer are taken over.
    Redis outages are waited out (logged), so the iterator only ends when `close()` is called.
    """

    def __init__(
        self,
        source: Settings | Redis,
        platform: Platform,
        consumer_name: str,
        *,
        claim_idle_s: float = 60.0,
        block_s: float = 1.0,
        batch: int = 10,
    ) -> None:
        if isinstance(source, Settings):
            # Retried on a fresh connection after a Redis restart, so an `ack` right after one still lands.
            pool = timed_pool(
                source.redis_dsn, reply_timeout_s=source.redis_timeout_s + block_s, retries=5, backoff_cap_s=1.0
            )  # XREADGROUP blocks up to `block_s` before its reply
            self.redis: Redis = Redis.from_pool(pool)
            self._owns_redis = True
        else:
            self.redis = source
            self._owns_redis = False
        self.platform = platform
        self.stream = _keys.deliveries(platform)
        self.consumer = consumer_name
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.block_ms = max(1, int(block_s * 1000))
        self.batch = batch
        self._closed = False
        self._own_backlog_done = False
        self._group_ready = False

    async def __aenter__(self) -> DeliveryConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._owns_redis:
            await self.redis.aclose()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def ack(self, delivery: Delivery) -> bool:
        """Mark `delivery` sent; False if it was already acked (e.g. reclaimed and sent by a replica).

        The chat message is already out: an ack lost to a short Redis outage (a restart) would send it again,
        so the ack is retried for a few seconds before `QueueUnavailable`.
        """
        acked = await outlasting_outage(
            lambda: self.redis.xack(self.stream, _keys.DELIVERY_GROUP, delivery.delivery_id)
        )
        return bool(acked)

    async def ack_sent(self, delivery: Delivery) -> None:
        """`ack` for a message that is already out: a failure is logged, not raised (the send stands)."""
        try:
            await self.ack(delivery)
        except QueueUnavailable as exc:
            log.warning("delivery %s sent but not acked (%s); it may be sent again", delivery.job_id, exc)

    async def pending(self) -> int:
        """Entries handed out but not acked yet (all consumers)."""
        await self._ensure_group()
        info = await self.redis.xpending(self.stream, _keys.DELIVERY_GROUP)
        return int(info["pending"])

    async def _iterate(self) -> AsyncIterator[Delivery]:
        backoff = 0.1
        while not self._closed:
            try:
                entries = await self._next_entries()
                backoff = 0.1
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):  # the stream expired with its group: create both again
                    raise
                self._group_ready = False
                continue
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("delivery stream %s: Redis unavailable (%s); retrying", self.stream, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for entry_id, fields in entries:
                delivery = self._parse(entry_id, fields)
                if delivery is None:
                    log.error("delivery %s on %s is malformed; dropping it", entry_id, self.stream)
                    await self.redis.xack(self.stream, _keys.DELIVERY_GROUP, entry_id)
                else:
                    yield delivery

    async def _next_entries(self) -> list[tuple[Any, dict[Any, Any]]]:
        await self._ensure_group()
        if not self._own_backlog_done:
            # After a restart, first our own entries that were handed out but never acked.
            own = await self.redis.xreadgroup(_keys.DELIVERY_GROUP, self.consumer, {self.stream: "0"}, count=self.batch)
            entries = own[0][1] if own else []
            if entries:
                # Entries deleted while pending (`forget`, trimmed by age) come back without fields: ack them.
                gone = [entry_id for entry_id, fields in entries if not fields]
                if gone:
                    await self.redis.xack(self.stream, _keys.DELIVERY_GROUP, *gone)
                return [e for e in entries if e[1]]
            self._own_backlog_done = True
        claimed = await self.redis.xautoclaim(
            self.stream, _keys.DELIVERY_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        if claimed[1]:
            return [e for e in claimed[1] if e[1]]
        fresh = await self.redis.xreadgroup(
            _keys.DELIVERY_GROUP, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms
        )
        return fresh[0][1] if fresh else []

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, _keys.DELIVERY_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            await self.redis.expire(self.stream, DELIVERY_STREAM_TTL_S)
        self._group_ready = True

    def _parse(self, entry_id: Any, fields: dict[Any, Any]) -> Delivery | None:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"d") or fields.get("d")
        if raw is None:
            return None
        try:
            return Delivery.model_validate_json(raw).model_copy(update={"delivery_id": entry})
        except ValueError:
            return None
