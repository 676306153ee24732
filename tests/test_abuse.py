"""Abuse log on a real redis-server: records written, read back, counted, expired by retention; bans."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from likeness.bot._policy import PromptPolicy, screen_request
from likeness.errors import Banned, PromptRefused, QueueUnavailable
from likeness.queue._abuse import AUDIT_STREAM, AbuseLog

DAY_MS = 86_400_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_records_are_written_and_read_back_newest_first(redis: aioredis.Redis) -> None:
    log = AbuseLog(redis, retention_days=30)
    await log.record("request", 42, "discord", chat_id=7, job_id="job-1", detail="ghibli portrait")
    await log.record("refusal", "42", "discord", chat_id="7", detail="sexualised-minor: <prompt>")
    await log.record("flag", 43, "telegram", chat_id=-100, job_id="job-2", detail="nsfw=0.93 withheld")
    events = await log.recent()
    assert [e.kind for e in events] == ["flag", "refusal", "request"]
    first = events[-1]
    assert (first.user_id, first.platform, first.chat_id, first.job_id, first.detail) == (
        "42",
        "discord",
        "7",
        "job-1",
        "ghibli portrait",
    )
    assert abs((datetime.now(UTC) - first.at).total_seconds()) < 60
    assert [e.job_id for e in await log.recent(kind="flag")] == ["job-2"]
    assert len(await log.recent(limit=2)) == 2
    assert await log.recent(kind="ban") == []


async def test_log_is_append_only_and_detail_is_bounded(redis: aioredis.Redis) -> None:
    log = AbuseLog(redis, retention_days=1)
    await log.record("request", 1, "discord", detail="x" * 5000)
    [event] = await log.recent()
    assert len(event.detail) == 1000
    assert not [name for name in dir(log) if name.startswith(("delete", "edit", "update"))]
    with pytest.raises(ValueError, match="kind"):
        await log.record("whatever", 1, "discord")  # type: ignore[arg-type]


async def test_counts_for_stats(redis: aioredis.Redis) -> None:
    log = AbuseLog(redis, retention_days=30)
    old = int(time.time() * 1000) - 2 * DAY_MS
    await redis.xadd(AUDIT_STREAM, {"kind": "refusal", "user_id": "9", "platform": "discord"}, id=f"{old}-0")
    for kind in ("request", "request", "refusal", "flag"):
        await log.record(kind, 1, "telegram")  # type: ignore[arg-type]
    assert await log.counts() == {"request": 2, "refusal": 2, "flag": 1, "ban": 0, "unban": 0}
    since = datetime.now(UTC) - timedelta(days=1)
    assert (await log.counts(since))["refusal"] == 1


async def test_records_older_than_retention_expire(redis: aioredis.Redis) -> None:
    log = AbuseLog(redis, retention_days=3)
    now = int(time.time() * 1000)
    # fabricated entries: 10 days and 4 days old (past retention), 2 days old (within)
    for age_days, user in ((10, "a"), (4, "b"), (2, "c")):
        await redis.xadd(
            AUDIT_STREAM, {"kind": "request", "user_id": user, "platform": "discord"}, id=f"{now - age_days * DAY_MS}-0"
        )
    await log.record("request", "d", "discord")  # every write trims by time
    assert [e.user_id for e in await log.recent()] == ["d", "c"]
    # after lowering the retention, `expire` trims at once without waiting for the next write
    stricter = AbuseLog(redis, retention_days=1)
    assert await stricter.expire() == 1
    assert [e.user_id for e in await stricter.recent()] == ["d"]


async def test_ban_unban_and_is_banned(redis: aioredis.Redis) -> None:
    log = AbuseLog(redis, retention_days=30)
    assert not await log.is_banned(42, "discord")
    await log.ban(42, "discord", reason="spam prompts", by="admin-1")
    assert await log.is_banned(42, "discord")
    assert await log.is_banned("42", "discord")
    assert not await log.is_banned(42, "telegram")  # ids are per platform
    [ban] = await log.bans()
    assert (ban.user_id, ban.platform, ban.reason, ban.by) == ("42", "discord", "spam prompts", "admin-1")
    assert await log.unban(42, "discord", by="admin-2")
    assert not await log.is_banned(42, "discord")
    assert not await log.unban(42, "discord", by="admin-2")
    assert [e.kind for e in await log.recent()] == ["unban", "ban"]


async def test_redis_down_is_queue_unavailable() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    log = AbuseLog(client, retention_days=30)
    with pytest.raises(QueueUnavailable):
        await log.is_banned(1, "discord")
    with pytest.raises(QueueUnavailable):
        await log.record("request", 1, "discord")
    await client.aclose()


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AbuseLog(None, retention_days=0)  # type: ignore[arg-type]


async def test_banned_user_is_refused_before_enqueue(redis: aioredis.Redis, make_settings) -> None:
    log = AbuseLog(redis, retention_days=30)
    policy = PromptPolicy.from_settings(make_settings())
    enqueued: list[str] = []

    async def submit(user_id: int, prompt: str) -> None:
        """What the bot core does: screen, then enqueue and record the request."""
        await screen_request(policy=policy, abuse=log, user_id=user_id, platform="discord", chat_id=5, prompt=prompt)
        enqueued.append(prompt)
        await log.record("request", user_id, "discord", 5, job_id=f"job-{len(enqueued)}", detail=prompt)

    await submit(1, "viking warrior")
    await log.ban(1, "discord", reason="abuse", by="admin")
    with pytest.raises(Banned) as info:
        await submit(1, "viking warrior again")
    assert "can't use this bot" in info.value.user_message
    with pytest.raises(PromptRefused):
        await submit(2, "sexy teen")
    assert enqueued == ["viking warrior"]  # nothing else reached the queue
    refusals = await log.recent(kind="refusal")
    assert [r.detail.split(":")[0] for r in refusals] == ["sexualised-minor", "banned"]
    assert refusals[-1].user_id == "1" and refusals[-1].chat_id == "5"
    assert (await log.counts())["refusal"] == 2


async def test_hard_rule_refusals_of_specs_and_instructions_are_audited(redis: aioredis.Redis, make_settings) -> None:
    """Edit instructions and preset specs go through the same gate; each refusal is logged with its rule."""
    log = AbuseLog(redis, retention_days=30)
    policy = PromptPolicy.from_settings(make_settings())

    async def screen(text: str) -> None:
        await screen_request(policy=policy, abuse=log, user_id=9, platform="telegram", chat_id=1, prompt=text)

    texts = ["ghibli:0.7+lingerie:0.3, 14 yo", "zieh sie aus, sie ist 13 Jahre alt", "十四歳のビキニ"]
    for text in texts:
        with pytest.raises(PromptRefused) as info:
            await screen(text)
        assert info.value.rule == "sexualised-minor"
    await screen("ghibli:0.7+headshot:0.3")
    refusals = await log.recent(kind="refusal")
    assert sorted(r.detail for r in refusals) == sorted(f"sexualised-minor: {text}" for text in texts)
