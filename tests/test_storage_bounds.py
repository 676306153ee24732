"""Uploads cannot grow Redis without bound: what is stored is the prepared selfie, never the upload, within a
per-user budget, and the limits users read are the real (binary) ones."""

from __future__ import annotations

import io

import pytest
import redis.asyncio as aioredis
from PIL import Image

from likeness.queue import keys
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.faces import astronaut
from tests.helpers.telegram import TelegramHarness, document_message, harness, user

pytestmark = pytest.mark.timeout(180)

ALICE = user(101, "Alice")
MIB = 1024 * 1024


def _padded_selfie(total: int) -> bytes:
    """A valid 3000×3000 JPEG selfie followed by junk up to `total` bytes (what an attacker would send)."""
    buf = io.BytesIO()
    astronaut().resize((3000, 3000), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    photo = buf.getvalue()
    return photo + b"\0junk" * ((total - len(photo)) // 5)


async def _used_memory(url: str) -> int:
    async with aioredis.Redis.from_url(url) as redis:
        await redis.execute_command("MEMORY", "PURGE")
        return int((await redis.info("memory"))["used_memory"])


async def _texts(h: TelegramHarness, count: int) -> list[str]:
    def finals() -> list[str] | None:
        texts = [str(c.params["text"]) for c in h.tg.calls_of("editMessageText")]
        texts += [str(c.params["text"]) for c in h.tg.calls_of("sendMessage") if not c.params["text"].startswith("⏳")]
        return texts if len(texts) >= count else None

    return await h.tg.wait_for(finals, timeout=120, what=f"{count} answers")


async def test_twenty_padded_uploads_from_one_user_stay_small(tg: FakeTelegram, tg_settings, tiny_engine):
    settings = tg_settings.model_copy(update={"max_active_jobs_per_user": 20})
    upload = _padded_selfie(19 * 1000 * 1000)
    before = await _used_memory(settings.redis_dsn)
    async with harness(tg, settings, tiny_engine) as h:
        await h.start_bot()  # no worker: every selfie stays stored
        for _ in range(20):
            await h.send(
                document_message(tg, tg.chat(101), ALICE, upload, mime_type="image/jpeg", caption="/portrait ghibli")
            )
        answers = await _texts(h, 20)
    assert sum(a.startswith("⏳ You're #") for a in answers) == 20, answers
    grown = await _used_memory(settings.redis_dsn) - before
    assert grown < 60 * MIB, f"Redis grew by {grown / MIB:.0f} MiB for 20 uploads of 19 MB"
    async with aioredis.Redis.from_url(settings.redis_dsn) as redis:
        selfies = [k async for k in redis.scan_iter(match=keys.blob("s-*"))]
        assert len(selfies) == 20
        stored = await redis.get(selfies[0])
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and max(image.size) == 2048 and len(stored) < 2 * MIB
    assert not image.getexif() and b"junk" not in stored


async def test_the_per_user_budget_refuses_more_uploads_with_a_clear_text(tg: FakeTelegram, tg_settings, tiny_engine):
    settings = tg_settings.model_copy(update={"max_active_jobs_per_user": 20, "upload_budget_bytes": 2 * MIB})
    upload = _padded_selfie(2 * MIB)
    async with harness(tg, settings, tiny_engine) as h:
        await h.start_bot()
        for _ in range(4):
            await h.send(
                document_message(tg, tg.chat(101), ALICE, upload, mime_type="image/jpeg", caption="/portrait ghibli")
            )
        answers = await _texts(h, 4)
    full = [a for a in answers if "space I keep for your uploads (2 MiB) is full" in a]
    assert full and sum(a.startswith("⏳ You're #") for a in answers) == 4 - len(full), answers


async def test_size_limits_are_shown_as_they_are_set(tg: FakeTelegram, tg_settings, tiny_engine):
    async with harness(tg, tg_settings, tiny_engine) as h:
        await h.start_bot()
        big = document_message(
            tg, tg.chat(101), ALICE, b"x", mime_type="image/jpeg", caption="/portrait ghibli", size=25 * MIB
        )
        await h.send(big)
        (answer,) = await _texts(h, 1)
    assert "the limit is 20 MiB" in answer and "25 MiB" in answer and "MB" not in answer.replace("MiB", "")
