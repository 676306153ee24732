"""Limits are atomic: truly concurrent submissions never get past the per-user limit or the queue cap.

Check and reserve are one Lua step (`likeness.queue._admission`). Before, 8 photos sent at once by one user
were all accepted (limit 3), and 15 users were all accepted with the cap at 5.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from likeness.config import Settings
from likeness.errors import QueueFull, RateLimited, TooManyActiveJobs
from likeness.queue import Origin, QueueClient, keys
from likeness.requests import PortraitSpec
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.queue import selfie as png_selfie
from tests.helpers.telegram import TelegramHarness, harness, photo_message, user

pytestmark = pytest.mark.timeout(120)


def _origin(user_id: str) -> Origin:
    return Origin(platform="telegram", chat_id=user_id, user_id=user_id)


async def _answers(tg: FakeTelegram, count: int) -> list[str]:
    """The final text of each of `count` progress messages (accepted: the queue place; refused: why)."""

    def settled() -> list[str] | None:
        finals = {}
        for call in tg.calls_of("editMessageText"):
            finals[(call.params["chat_id"], call.params["message_id"])] = str(call.params["text"])
        return list(finals.values()) if len(finals) >= count else None

    return await tg.wait_for(settled, timeout=60, what=f"{count} answers")


async def test_eight_photos_at_once_from_one_user_make_exactly_three_jobs(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()  # no worker: every accepted job stays unfinished
    chat, alice = tg.chat(101), user(101, "Alice")
    messages = [photo_message(tg, chat, alice, caption="/portrait ghibli") for _ in range(8)]
    await asyncio.gather(*(h.send(m) for m in messages))
    answers = await _answers(tg, 8)
    accepted = [a for a in answers if a.startswith("⏳ You're #")]
    refused = [a for a in answers if "already have 3 portraits in progress" in a]
    assert (len(accepted), len(refused)) == (3, 5), answers
    async with QueueClient(h.settings) as queue:
        assert await queue.redis.zcard(keys.ARQ_QUEUE) == 3


async def test_fifteen_users_against_a_cap_of_five_make_exactly_five_jobs(
    tg: FakeTelegram, tg_settings: Settings, tiny_engine: Any
):
    capped = tg_settings.model_copy(update={"queue_cap": 5})
    async with harness(tg, capped, tiny_engine) as h:
        await h.start_bot()
        messages = [photo_message(tg, tg.chat(1000 + i), user(1000 + i), caption="/portrait ghibli") for i in range(15)]
        await asyncio.gather(*(h.send(m) for m in messages))
        answers = await _answers(tg, 15)
    accepted = [a for a in answers if a.startswith("⏳ You're #")]
    busy = [a for a in answers if "busy right now" in a]
    assert (len(accepted), len(busy)) == (5, 10), answers


async def test_concurrent_submits_reserve_exactly_the_limits(make_settings: Callable[..., Settings], redis_url: str):
    settings = make_settings(redis_url=redis_url, max_active_jobs_per_user=3, queue_cap=5, rate_limit="100/minute")
    selfie = png_selfie()
    async with QueueClient(settings) as queue:
        one_user = await asyncio.gather(
            *(queue.submit_portrait(_origin("u1"), selfie, PortraitSpec(preset="ghibli")) for _ in range(8)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, Exception) for r in one_user) == 3
        assert all(isinstance(r, TooManyActiveJobs) for r in one_user if isinstance(r, Exception))
        many = await asyncio.gather(
            *(queue.submit_portrait(_origin(f"v{i}"), selfie, PortraitSpec(preset="ghibli")) for i in range(6)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, Exception) for r in many) == 2  # 3 + 2 = the cap of 5
        assert all(isinstance(r, QueueFull) for r in many if isinstance(r, Exception))
        # a cancelled job gives its slot back at once
        await queue.cancel("u1")
        assert (await queue.submit_portrait(_origin("w"), selfie, PortraitSpec(preset="ghibli"))).position >= 1


async def test_a_refusal_after_the_reservation_gives_the_slot_back(
    make_settings: Callable[..., Settings], redis_url: str
):
    """A rate-limit hit (or a bad upload) after the slot was taken must not hold the slot or the request key."""
    settings = make_settings(redis_url=redis_url, max_active_jobs_per_user=5, rate_limit="1/minute")
    selfie = png_selfie()
    async with QueueClient(settings) as queue:
        await queue.submit_portrait(_origin("u1"), selfie, PortraitSpec(preset="ghibli"), idempotency_key="m1")
        with pytest.raises(RateLimited):
            await queue.submit_portrait(_origin("u1"), selfie, PortraitSpec(preset="ghibli"), idempotency_key="m2")
        assert await queue.redis.zcard(keys.active("u1")) == 1
        assert await queue.redis.zcard(keys.RESERVED) == 1
        assert not await queue.redis.exists(keys.idem("telegram", "u1", "m2"))
        again = await queue.submit_portrait(_origin("u1"), selfie, PortraitSpec(preset="ghibli"), idempotency_key="m1")
        assert again.duplicate
