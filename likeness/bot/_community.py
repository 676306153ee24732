"""Per-community settings (a Discord server or a Telegram chat), kept in Redis and changed by its admins.

Each community is one hash `likeness:community:<platform>:<chat_id>`; only the fields an admin changed are
stored, so operator defaults still apply to the rest.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from likeness.config import Settings
from likeness.errors import UserError
from likeness.queue import keys as _keys
from likeness.queue import redis_errors

__all__ = ["ChatSettings", "CommunitySettings"]

MAX_EXTRA_WORDS = 200
MAX_WORD_CHARS = 64


class ChatSettings(BaseModel):
    """What one community's admins may change.

    `allow_nsfw` only has an effect in age-restricted places and when the operator allows it globally
    (`settings.allow_nsfw_age_restricted`); `likeness.bot._safety.decide` applies all three.
    `age_restricted` is the Telegram admins' declaration that the chat is 18+ (Discord uses the channel flag).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    collaborate: bool = False
    allow_nsfw: bool = False
    age_restricted: bool = False
    extra_blocked_words: list[str] = Field(default_factory=list, max_length=MAX_EXTRA_WORDS)

    @field_validator("extra_blocked_words")
    @classmethod
    def _clean_words(cls, words: list[str]) -> list[str]:
        cleaned: list[str] = []
        for word in words:
            word = " ".join(word.split()).lower()
            if not word:
                continue
            if len(word) > MAX_WORD_CHARS:
                raise ValueError(f"blocked words are at most {MAX_WORD_CHARS} characters long")
            if word not in cleaned:
                cleaned.append(word)
        return cleaned


class CommunitySettings:
    """Read and change `ChatSettings` per (platform, chat id). Redis failures become `QueueUnavailable`."""

    def __init__(self, redis: aioredis.Redis, settings: Settings | None = None) -> None:
        self._redis = redis
        self._defaults = {"collaborate": settings.collaborate} if settings is not None else {}

    async def get(self, platform: str, chat_id: str | int) -> ChatSettings:
        """The community's settings: stored changes over operator defaults."""
        async with redis_errors():
            stored = await self._redis.hgetall(_keys.community(platform, chat_id))  # type: ignore[misc]
        values: dict[str, Any] = dict(self._defaults)
        for name, raw in stored.items():
            name = name.decode() if isinstance(name, bytes) else name
            if name in ChatSettings.model_fields:
                values[name] = json.loads(raw)
        return ChatSettings.model_validate(values)

    async def update(self, platform: str, chat_id: str | int, **changes: Any) -> ChatSettings:
        """Validate and store `changes`; raises `UserError` naming the bad setting. Returns the new settings."""
        unknown = sorted(set(changes) - ChatSettings.model_fields.keys())
        if unknown:
            valid = ", ".join(ChatSettings.model_fields)
            raise UserError(message=f"Unknown setting {unknown[0]!r}. Settings: {valid}.")
        current = await self.get(platform, chat_id)
        try:
            updated = ChatSettings.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UserError(message=f"Invalid value for {where}: {err['msg']}.") from exc
        fields = {name: json.dumps(getattr(updated, name)) for name in changes}
        if fields:
            async with redis_errors():
                await self._redis.hset(_keys.community(platform, chat_id), mapping=fields)  # type: ignore[misc]
        return updated

    async def reset(self, platform: str, chat_id: str | int) -> None:
        """Forget every change: the community is back on operator defaults."""
        async with redis_errors():
            await self._redis.delete(_keys.community(platform, chat_id))
