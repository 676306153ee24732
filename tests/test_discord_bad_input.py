"""Bad input and refusals on Discord: each gets a clear answer (privately where Discord allows), never a job
it should not start, and the bot keeps serving afterwards."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from likeness.config import Settings
from likeness.queue import Delivery, append_delivery
from tests.fakes.discord_api import TEXT_CHANNEL_ID, FakeDiscord
from tests.helpers.discord import (
    USER,
    buttons,
    ephemeral_texts,
    png,
    portrait,
    reaction,
    request_portrait,
    running_bot,
    slash,
    wait_text,
)
from tests.helpers.image_bytes import png_claiming_size
from tests.helpers.queue import running_worker


async def _private_answer(fake: FakeDiscord, payload: dict[str, Any]) -> str:
    await fake.dispatch("INTERACTION_CREATE", payload)
    texts = await fake.wait_for(lambda: ephemeral_texts(fake, payload["token"]), timeout=10)
    return str(texts[0])


async def _queued_jobs(settings: Settings) -> int:
    from redis.asyncio import Redis

    async with Redis.from_url(settings.redis_dsn) as redis:
        return int(await redis.zcard("arq:queue"))


async def test_attachments_refused_from_their_metadata_are_never_downloaded(
    make: Callable[..., Settings], fake: FakeDiscord
) -> None:
    settings = make(max_upload_bytes=1024 * 1024)
    async with running_bot(settings, fake):
        text_file = fake.add_attachment(b"hello", filename="notes.txt", content_type="text/plain")
        answer = await _private_answer(fake, portrait(fake, text_file))
        assert "isn't a photo" in answer and "notes.txt" in answer
        huge = fake.add_attachment(png(), size=5 * 1024 * 1024)
        answer = await _private_answer(fake, portrait(fake, huge))
        assert "5 MiB" in answer and "limit is 1 MiB" in answer  # the real (binary) limit, not "1.0 MB"
    assert fake.downloads == [], "nothing was downloaded"
    assert await _queued_jobs(settings) == 0


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"%PDF-1.7 not an image", "isn't an image"), (png_claiming_size(30000, 30000), "too many pixels")],
    ids=["lying-content-type", "decompression-bomb"],
)
async def test_bad_image_bytes_get_a_private_answer(
    make: Callable[..., Settings], fake: FakeDiscord, data: bytes, needle: str
) -> None:
    settings = make()
    async with running_bot(settings, fake):
        payload = portrait(fake, fake.add_attachment(data, content_type="image/png"))
        answer = await _private_answer(fake, payload)
        assert needle in answer
        original = fake.interactions[payload["token"]]["original"]
        assert original not in fake.messages, "the public 'thinking…' was removed"
    assert await _queued_jobs(settings) == 0


async def test_unknown_preset_and_long_prompt_are_refused_before_anything_public(
    make: Callable[..., Settings], fake: FakeDiscord
) -> None:
    settings = make(max_prompt_chars=50)
    async with running_bot(settings, fake):
        unknown = portrait(fake, fake.add_attachment(png()), preset="ghilbi")
        answer = await _private_answer(fake, unknown)
        assert "ghilbi" in answer and "ghibli" in answer, "names the valid presets"
        long = portrait(fake, fake.add_attachment(png()), prompt="x" * 60)
        answer = await _private_answer(fake, long)
        assert "60 characters" in answer and "50" in answer
        for payload in (unknown, long):
            assert fake.interactions[payload["token"]]["responses"][0]["type"] == 4, "no public thinking"
    assert fake.downloads == []


async def test_no_face_comes_back_as_a_clear_answer(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    settings = make()
    async with running_bot(settings, fake), running_worker(settings):
        payload = portrait(fake, fake.add_attachment(png()), prompt="noface")
        await fake.dispatch("INTERACTION_CREATE", payload)
        record = fake.interactions[payload["token"]]
        await fake.wait_for(lambda: record["original"], timeout=5)
        message = await wait_text(fake, record["original"], "couldn't find a face")
        assert not message["attachments"] and not message["components"]


async def test_queue_full_and_per_user_limit(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    async with running_bot(make(queue_cap=0), fake):
        answer = await _private_answer(fake, portrait(fake, fake.add_attachment(png())))
        assert "busy" in answer
    settings = make(max_active_jobs_per_user=1)
    async with running_bot(settings, fake), running_worker(settings):
        first = portrait(fake, fake.add_attachment(png()), prompt="sleep=5")
        await fake.dispatch("INTERACTION_CREATE", first)
        await fake.wait_for(lambda: fake.interactions[first["token"]]["edits"], timeout=5)
        answer = await _private_answer(fake, portrait(fake, fake.add_attachment(png())))
        assert "already have 1 portraits in progress" in answer


async def test_redis_unreachable_says_temporarily_unavailable(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    settings = make(redis_url=dead)
    async with running_bot(settings, fake):
        answer = await _private_answer(fake, portrait(fake, fake.add_attachment(png())))
        assert "temporarily unavailable" in answer
        answer = await _private_answer(fake, slash(fake, "cancel"))
        assert "temporarily unavailable" in answer


async def test_allowlist_refuses_politely_without_a_job(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    settings = make(allowed_chats=["123456"])
    async with running_bot(settings, fake):
        answer = await _private_answer(fake, portrait(fake, fake.add_attachment(png())))
        assert "private" in answer
    assert fake.downloads == [] and await _queued_jobs(settings) == 0


async def test_missing_permissions_in_the_channel_sends_the_result_by_dm(
    make: Callable[..., Settings], fake: FakeDiscord
) -> None:
    settings = make()
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        fake.forbidden_channels.add(TEXT_CHANNEL_ID)
        await fake.dispatch("MESSAGE_REACTION_ADD", reaction(result, "🔄", user_id=USER))
        dm_id = USER + 1  # the fake's DM channel id for a user
        dms = await fake.wait_for(lambda: [m for m in fake.channel_messages(dm_id) if m["attachments"]], timeout=20)
        assert "missing permissions" in dms[0]["content"] and f"<#{TEXT_CHANNEL_ID}>" in dms[0]["content"]
        assert buttons(dms[0]), "the DM has working buttons too"
        # The bot keeps serving.
        answer = await _private_answer(fake, slash(fake, "presets"))
        assert "ghibli" in answer


async def test_a_result_for_a_deleted_channel_goes_by_dm(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    settings = make()
    async with running_bot(settings, fake) as client, running_worker(settings):
        _, message = await request_portrait(fake)
        record = await client.core.queue.get_result(buttons(message)["reroll"].split(":")[2])
        gone = record.origin.model_copy(update={"chat_id": "424242", "extra": {}, "progress_message_id": None})
        delivery = Delivery(job_id="orphan-job", kind="portrait", origin=gone, result=record)
        await append_delivery(client.core.queue.redis, delivery, marker_ttl_s=60)
        dms = await fake.wait_for(lambda: [m for m in fake.channel_messages(USER + 1) if m["attachments"]], timeout=20)
        assert "is gone" in dms[0]["content"]


async def test_odd_preset_names_and_bidi_text_get_clean_private_answers(
    make: Callable[..., Settings], fake: FakeDiscord
) -> None:
    async with running_bot(make(), fake):
        too_long = await _private_answer(fake, portrait(fake, fake.add_attachment(png()), preset="g" * 300))
        assert "too long" in too_long
        bidi = await _private_answer(fake, portrait(fake, fake.add_attachment(png()), preset="evil\u202egnp.exe"))
        assert "\u202e" not in bidi and "evilgnp.exe" in bidi
        named = fake.add_attachment(b"hello", filename="x\u202etxt.jpg", content_type="text/plain")
        assert "\u202e" not in await _private_answer(fake, portrait(fake, named))
    assert fake.downloads == []


@pytest.mark.parametrize("content_type", ["image/heic", "image/avif"])
async def test_phone_formats_are_accepted(make: Callable[..., Settings], fake: FakeDiscord, content_type: str) -> None:
    from tests.helpers.faces import astronaut
    from tests.helpers.image_bytes import heic, save

    data = heic(astronaut()) if content_type == "image/heic" else save(astronaut(), "AVIF")
    settings = make()
    async with running_bot(settings, fake):
        payload = portrait(fake, fake.add_attachment(data, filename="IMG_0001", content_type=content_type))
        await fake.dispatch("INTERACTION_CREATE", payload)
        record = fake.interactions[payload["token"]]
        await fake.wait_for(lambda: record["original"] and "in the queue" in str(fake.messages), timeout=10)
    assert await _queued_jobs(settings) == 1
