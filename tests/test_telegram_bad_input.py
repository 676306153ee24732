"""Bad input on Telegram: each case gets a clear text answer, no job is lost, and the bot keeps serving."""

from __future__ import annotations

import io

import pytest
import redis.asyncio as aioredis
from PIL import Image

from likeness.bot._texts import HELP
from likeness.errors import NoFace
from likeness.redis_server import RedisServer
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.faces import coffee
from tests.helpers.telegram import (
    assert_no_unexpected_errors,
    document_message,
    harness,
    image_bytes,
    photo_message,
    shared_tiny_engine,
    text_message,
    user,
)

pytestmark = pytest.mark.timeout(90)

TOKEN = "654321:TEST-bad-input-token"
ALICE = user(101, "Alice")
BOB = user(202, "Bob")


@pytest.fixture
async def tg():
    async with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture
def tg_settings(make_settings, redis_url, tg):
    return make_settings(redis_url=redis_url, telegram_token=TOKEN, telegram_api_url=tg.api_url, job_timeout_s=60)


@pytest.fixture
async def h(tg, tg_settings, shared_data_dir, caplog):
    async with harness(tg, tg_settings, shared_tiny_engine(shared_data_dir)) as running:
        yield running
    assert_no_unexpected_errors(caplog)


async def _answer(h, request: dict, *, timeout: float = 15.0) -> str:
    """The bot's text reply to `request` (the first message quoting it)."""
    tg = h.tg

    def find():
        for call in tg.calls_of("sendMessage", "editMessageText"):
            reply = call.params.get("reply_parameters")
            if call.method == "sendMessage" and reply and int(reply["message_id"]) == request["message_id"]:
                if call.params["text"].startswith("⏳"):  # a progress message: its final edit is the answer
                    edits = [
                        e.params["text"]
                        for e in tg.calls_of("editMessageText")
                        if int(e.params["message_id"]) == call.result["message_id"]
                    ]
                    return edits[-1] if edits and edits[-1].startswith("⚠️") else None
                return call.params["text"]
        return None

    return await tg.wait_for(find, timeout=timeout, what=f"an answer to message {request['message_id']}")


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 megapixels in a few kB
    return buf.getvalue()


async def _queue_depth(settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        return int(await client.zcard("arq:queue"))
    finally:
        await client.aclose()


async def test_each_bad_request_gets_a_clear_answer_and_the_bot_keeps_serving(h, tg, tg_settings):
    await h.start_bot()
    chat = tg.chat(101)
    send = h.send

    no_photo = await send(text_message(tg, chat, ALICE, "/portrait ghibli"))
    assert "photo" in (await _answer(h, no_photo)).lower() and "selfie" in (await _answer(h, no_photo)).lower()
    bare = await send(text_message(tg, chat, ALICE, "/portrait"))
    assert "photo" in (await _answer(h, bare)).lower()

    unknown = await send(photo_message(tg, chat, ALICE, caption="/portrait nosuchstyle"))
    text = await _answer(h, unknown)
    assert "nosuchstyle" in text and "ghibli" in text

    not_image = await send(
        document_message(
            tg, chat, ALICE, b"hello", mime_type="text/plain", file_name="a.txt", caption="/portrait ghibli"
        )
    )
    assert "isn't an image" in await _answer(h, not_image)
    disguised = await send(document_message(tg, chat, ALICE, b"\\x00garbage" * 50, caption="/portrait ghibli"))
    assert "isn't an image" in await _answer(h, disguised)

    huge = await send(
        document_message(tg, chat, ALICE, image_bytes(fmt="PNG"), caption="/portrait ghibli", size=25 * 1024 * 1024)
    )
    assert "too large" in await _answer(h, huge)
    assert huge["document"]["file_id"] not in tg.downloads  # refused before downloading

    bomb = await send(document_message(tg, chat, ALICE, _bomb_png(), caption="/portrait ghibli"))
    assert "too many pixels" in await _answer(h, bomb)

    long_prompt = await send(photo_message(tg, chat, ALICE, caption="/portrait ghibli " + "very " * 100))
    assert "keep it under 400" in await _answer(h, long_prompt)

    bad_format = await send(photo_message(tg, chat, ALICE, caption="/portrait ghibli format:poster"))
    assert "poster" in await _answer(h, bad_format)

    assert await _queue_depth(tg_settings) == 0
    # Every answer quotes its request, and none is a crash report.
    assert not [t for t in h.texts() if "went wrong on our side" in t]
    served = await send(text_message(tg, chat, ALICE, "/help"))
    assert await _answer(h, served) == HELP


async def test_per_user_limit_and_full_queue_are_explained_and_keep_queued_jobs(h, tg, tg_settings):
    limited = tg_settings.model_copy(update={"max_active_jobs_per_user": 1, "queue_cap": 1})
    await h.stop_bot()
    h.settings = limited
    await h.start_bot(limited)
    chat = tg.chat(101)
    first = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    await tg.wait_for(lambda: [t for t in h.texts() if "in the queue" in t or "Starting" in t], what="ticket")
    second = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    assert "in progress (limit 1)" in await _answer(h, second)
    other = await h.send(photo_message(tg, tg.chat(202), BOB, caption="/portrait ghibli"))
    assert "busy right now" in await _answer(h, other)
    # the queued job was not lost: a worker delivers it
    await h.start_worker()
    photo = (await tg.wait_call("sendPhoto", timeout=30))[-1]
    assert int(photo.params["reply_parameters"]["message_id"]) == first["message_id"]
    assert len(tg.calls_of("sendPhoto")) == 1


async def test_a_failed_job_from_the_worker_is_answered_with_its_reason(h, tg, tg_settings):
    """No face found: the worker fails the job; the bot shows its text, replying to the request."""
    await h.start_worker()
    await h.start_bot()
    chat = tg.chat(101)
    buf = io.BytesIO()
    coffee().save(buf, "JPEG")
    request = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli", image=buf.getvalue()))
    answer = await tg.wait_for(
        lambda: [c for c in tg.calls_of("sendMessage") if "find a face" in c.params["text"]], timeout=60
    )
    assert answer[0].params["text"] == f"⚠️ {NoFace().user_message}"
    assert int(answer[0].params["reply_parameters"]["message_id"]) == request["message_id"]
    progress = tg.calls_of("sendMessage")[0]
    await tg.wait_for(
        lambda: [
            c for c in tg.calls_of("deleteMessage") if int(c.params["message_id"]) == progress.result["message_id"]
        ]
    )
    assert not tg.calls_of("sendPhoto")


async def test_redis_down_is_temporarily_unavailable_and_the_bot_recovers(
    tg, make_settings, shared_data_dir, tmp_path, caplog
):
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        settings = make_settings(redis_url=server.url, telegram_token=TOKEN, telegram_api_url=tg.api_url)
        async with harness(tg, settings, shared_tiny_engine(shared_data_dir)) as h:
            await h.start_bot()
            chat = tg.chat(101)
            server.stop()
            down = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
            assert "temporarily unavailable" in await _answer(h, down, timeout=20)
            server.start()
            await h.start_worker()
            back = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
            photo = (await tg.wait_call("sendPhoto", timeout=40))[-1]
            assert int(photo.params["reply_parameters"]["message_id"]) == back["message_id"]
    assert not [r for r in caplog.records if r.name.startswith("telegram") and r.levelname == "ERROR"]
