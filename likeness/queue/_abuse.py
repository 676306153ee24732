"""Abuse review: an append-only audit log of who asked what, where, with which job, plus user bans.

The log is the Redis stream `likeness:audit`. Entry ids are Redis' millisecond timestamps, so retention is
exact and cheap: every `XADD` carries `MINID <now - retention>`, dropping older entries as new ones arrive,
and the stream expires whole a retention after its last entry (nothing is ever edited; `forget` deletes a
user's entries). Bans live in the hash `likeness:bans` (`<platform>:<user_id>` → JSON), so a banned
user is refused by the bot core before any GPU time is spent. Nothing here raises `Banned`: the caller does.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import redis.asyncio as aioredis

from likeness.queue._keys import AUDIT_STREAM, BANS_KEY
from likeness.queue._redis import redis_errors

__all__ = ["AUDIT_STREAM", "BANS_KEY", "SAFETY_RULES", "AbuseLog", "AuditEvent", "BanInfo", "EventKind"]

# Refusals under these prompt-policy rules are safety records, kept by `forget` like bans: moderators need
# them to act on attempts to sexualise minors.
SAFETY_RULES = frozenset({"sexualised-minor"})
EventKind = Literal["request", "refusal", "flag", "ban", "unban"]
_KINDS = frozenset(get_args(EventKind))
_MAX_DETAIL = 1000
_PAGE = 500
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class AuditEvent:
    """One audit record. `at` is when it was written (UTC), taken from the stream id."""

    id: str
    kind: str
    user_id: str
    platform: str
    chat_id: str
    job_id: str
    detail: str
    at: datetime


@dataclass(frozen=True)
class BanInfo:
    user_id: str
    platform: str
    reason: str
    by: str
    at: datetime


class AbuseLog:
    """Audit records with time-based retention, counts for `/stats`, and bans.

    `retention_days` is `settings.abuse_retention_days`. Redis failures become `QueueUnavailable`.
    """

    def __init__(self, redis: aioredis.Redis, retention_days: int, *, stream: str = AUDIT_STREAM) -> None:
        if retention_days < 1:
            raise ValueError(f"abuse_retention_days must be at least 1, got {retention_days}")
        self._redis = redis
        self._retention_ms = retention_days * _DAY_MS
        self._stream = stream

    async def record(
        self,
        kind: EventKind,
        user_id: str | int,
        platform: str,
        chat_id: str | int | None = None,
        job_id: str | None = None,
        detail: str = "",
    ) -> str:
        """Append one event (e.g. `detail` = the prompt, or the refusal rule and prompt); returns its id."""
        if kind not in _KINDS:
            raise ValueError(f"unknown audit event kind {kind!r}; use one of {sorted(_KINDS)}")
        fields = {
            "kind": kind,
            "user_id": str(user_id),
            "platform": platform,
            "chat_id": "" if chat_id is None else str(chat_id),
            "job_id": job_id or "",
            "detail": detail[:_MAX_DETAIL],
        }
        oldest = max(0, int(time.time() * 1000) - self._retention_ms)
        async with redis_errors(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._stream, fields, minid=f"{oldest}-0", approximate=False)  # type: ignore[arg-type]
            pipe.pexpire(self._stream, self._retention_ms)  # a log nobody writes to any more ages out whole
            entry_id, _ = await pipe.execute()
        return _text(entry_id)

    async def expire(self) -> int:
        """Drop entries older than the retention now (also done on every `record`); returns how many."""
        oldest = max(0, int(time.time() * 1000) - self._retention_ms)
        async with redis_errors():
            return int(await self._redis.xtrim(self._stream, minid=f"{oldest}-0", approximate=False))

    async def recent(self, kind: EventKind | None = None, limit: int = 20) -> list[AuditEvent]:
        """The newest events first, optionally of one kind."""
        found: list[AuditEvent] = []
        upper = "+"
        async with redis_errors():
            while len(found) < limit:
                page = await self._redis.xrevrange(self._stream, max=upper, min="-", count=_PAGE)
                for entry_id, fields in page:
                    event = _event(entry_id, fields)
                    if kind is None or event.kind == kind:
                        found.append(event)
                        if len(found) == limit:
                            break
                if len(page) < _PAGE:
                    break
                upper = "(" + _text(page[-1][0])
        return found

    async def counts(self, since: datetime | None = None) -> dict[str, int]:
        """Events per kind since `since` (default: the whole retention window), every kind present."""
        lower = "-" if since is None else str(int(since.timestamp() * 1000))
        tally: Counter[str] = Counter(dict.fromkeys(_KINDS, 0))
        async with redis_errors():
            while True:
                page = await self._redis.xrange(self._stream, min=lower, max="+", count=_PAGE)
                tally.update(_event(entry_id, fields).kind for entry_id, fields in page)
                if len(page) < _PAGE:
                    break
                lower = "(" + _text(page[-1][0])
        return dict(tally)

    async def forget(self, user_id: str | int, platform: str) -> tuple[int, int]:
        """Delete the user's events (their prompts) except bans and safety refusals (`SAFETY_RULES`);
        returns (deleted, kept)."""
        user, deleted, kept, lower = str(user_id), 0, 0, "-"
        async with redis_errors():
            while True:
                page = await self._redis.xrange(self._stream, min=lower, max="+", count=_PAGE)
                doomed = []
                for entry_id, fields in page:
                    event = _event(entry_id, fields)
                    if event.user_id != user or event.platform != platform:
                        continue
                    if _is_safety_record(event):
                        kept += 1
                    else:
                        doomed.append(entry_id)
                if doomed:
                    deleted += int(await self._redis.xdel(self._stream, *doomed))
                if len(page) < _PAGE:
                    return deleted, kept
                lower = "(" + _text(page[-1][0])

    async def ban(self, user_id: str | int, platform: str, *, reason: str, by: str | int) -> None:
        """Ban a user on one platform (recorded in the log too); their requests are refused before enqueue."""
        info = {"reason": reason[:_MAX_DETAIL], "by": str(by), "at": time.time()}
        async with redis_errors():
            await self._redis.hset(BANS_KEY, _ban_field(user_id, platform), json.dumps(info))  # type: ignore[misc]
        await self.record("ban", user_id, platform, detail=f"by {by}: {reason}")

    async def unban(self, user_id: str | int, platform: str, *, by: str | int) -> bool:
        """Lift a ban; False if the user was not banned."""
        async with redis_errors():
            removed = await self._redis.hdel(BANS_KEY, _ban_field(user_id, platform))  # type: ignore[misc]
        if removed:
            await self.record("unban", user_id, platform, detail=f"by {by}")
        return bool(removed)

    async def is_banned(self, user_id: str | int, platform: str) -> bool:
        async with redis_errors():
            return bool(await self._redis.hexists(BANS_KEY, _ban_field(user_id, platform)))  # type: ignore[misc]

    async def bans(self) -> list[BanInfo]:
        """Every current ban, oldest first."""
        async with redis_errors():
            raw = await self._redis.hgetall(BANS_KEY)  # type: ignore[misc]
        result = []
        for key, value in raw.items():
            platform, user_id = _text(key).split(":", 1)
            info: dict[str, Any] = json.loads(value)
            at = datetime.fromtimestamp(float(info["at"]), UTC)
            result.append(BanInfo(user_id, platform, str(info["reason"]), str(info["by"]), at))
        return sorted(result, key=lambda ban: ban.at)


def _is_safety_record(event: AuditEvent) -> bool:
    if event.kind in ("ban", "unban"):
        return True
    return event.kind == "refusal" and event.detail.split(":", 1)[0] in SAFETY_RULES


def _ban_field(user_id: str | int, platform: str) -> str:
    if not platform or ":" in platform:
        raise ValueError(f"invalid platform name {platform!r}")
    return f"{platform}:{user_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event(entry_id: bytes | str, fields: dict[Any, Any]) -> AuditEvent:
    data = {_text(k): _text(v) for k, v in fields.items()}
    ident = _text(entry_id)
    at = datetime.fromtimestamp(int(ident.split("-", 1)[0]) / 1000, UTC)
    return AuditEvent(
        id=ident,
        kind=data.get("kind", ""),
        user_id=data.get("user_id", ""),
        platform=data.get("platform", ""),
        chat_id=data.get("chat_id", ""),
        job_id=data.get("job_id", ""),
        detail=data.get("detail", ""),
        at=at,
    )
