"""Which chat message shows which result, kept in Redis so every bot replica can answer any reply,
reaction or button, also after a restart. Links expire with the results they point to."""

from __future__ import annotations

from redis.asyncio import Redis

from likeness.queue._errors import outlasting_outage, redis_errors

__all__ = ["MessageLinks"]


class MessageLinks:
    """`(platform, chat, message) → result id`, with the results' TTL."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def _key(platform: str, chat_id: str, message_id: str) -> str:
        return f"likeness:msg:{platform}:{chat_id}:{message_id}"

    async def link(self, platform: str, chat_id: str, message_id: str, result_id: str) -> None:
        """Record a sent message. The message is already out, so a short Redis outage is waited out rather
        than failing the delivery (which would send it again)."""
        key = self._key(platform, chat_id, message_id)
        await outlasting_outage(lambda: self._redis.set(key, result_id, ex=self._ttl_s))

    async def result_for(self, platform: str, chat_id: str, message_id: str) -> str | None:
        """The result shown by that message, or None when it is not one of ours (or expired)."""
        async with redis_errors():
            value = await self._redis.get(self._key(platform, chat_id, message_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
