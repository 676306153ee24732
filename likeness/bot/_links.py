"""Which chat message shows which result, kept in Redis so every bot replica can answer any reply,
reaction or button, also after a restart. Links expire with the results they point to, and are indexed
under the result's users so that `forget` removes them."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from likeness.queue import keys, outlasting_outage, redis_errors

__all__ = ["MessageLinks"]


class MessageLinks:
    """`(platform, chat, message) → result id`, with the results' TTL."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def link(self, platform: str, chat_id: str, message_id: str, result_id: str, owners: Sequence[str]) -> None:
        """Record a sent message of the result owned by `owners`. The message is already out, so a short Redis
        outage is waited out rather than failing the delivery (which would send it again)."""
        key = keys.message_link(platform, chat_id, message_id)

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, result_id, ex=self._ttl_s)
                for owner in dict.fromkeys(owners):
                    pipe.sadd(keys.user_keys(owner), key)
                    pipe.expire(keys.user_keys(owner), self._ttl_s)
                await pipe.execute()

        await outlasting_outage(write)

    async def result_for(self, platform: str, chat_id: str, message_id: str) -> str | None:
        """The result shown by that message, or None when it is not one of ours (or expired)."""
        async with redis_errors():
            value = await self._redis.get(keys.message_link(platform, chat_id, message_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
