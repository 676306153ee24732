"""Smaller holes found by the trust-and-safety probe, each driven through the real Telegram bot:
a frozen Redis, preset names no one expects, bidi characters echoed back, downloads before refusals,
policy refusals hidden in fusion specs and edits, and the photo formats phones send as files."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from typing import Any

import pytest
from PIL import Image

from likeness.queue import QueueClient
from likeness.queue._abuse import AbuseLog
from likeness.redis_server import RedisServer
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.faces import astronaut
from tests.helpers.image_bytes import heic
from tests.helpers.telegram import (
    TOKEN,
    TelegramHarness,
    document_message,
    harness,
    photo_message,
    portrait_result,
    result_message,
    text_message,
    user,
)

pytest.importorskip("diffusers")
pytestmark = pytest.mark.timeout(120)

ALICE = user(101, "Alice")


async def _answer(tg: FakeTelegram, request: dict[str, Any], *, timeout: float = 15.0) -> str:
    """The bot's final text answer to `request`: a reply quoting it, or the last edit of its progress message."""

    def find() -> str | None:
        for call in tg.calls_of("sendMessage"):
            reply = call.params.get("reply_parameters")
            if not reply or int(reply["message_id"]) != request["message_id"]:
                continue
            text = str(call.params["text"])
            if not text.startswith("⏳"):
                return text
            edits = [
                str(e.params["text"])
                for e in tg.calls_of("editMessageText")
                if int(e.params["message_id"]) == call.result["message_id"]
            ]
            if edits and not edits[-1].startswith("⏳"):
                return edits[-1]
        return None

    return await tg.wait_for(find, timeout=timeout, what=f"an answer to {request['message_id']}")


async def test_a_frozen_redis_is_temporarily_unavailable_within_seconds(
    tg: FakeTelegram, make_settings: Any, tiny_engine: Any, tmp_path: Any
):
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        settings = make_settings(
            redis_url=server.url, telegram_token=TOKEN, telegram_api_url=tg.api_url, redis_timeout_s=1.5
        )
        async with harness(tg, settings, tiny_engine) as h:
            await h.start_bot()
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)  # frozen: connections open, nothing answers
            try:
                started = time.monotonic()
                request = await h.send(photo_message(tg, tg.chat(101), ALICE, caption="/portrait ghibli"))
                answer = await _answer(tg, request, timeout=20)
                waited = time.monotonic() - started
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert "temporarily unavailable" in answer and waited < 8, (answer, waited)
            back = await h.send(text_message(tg, tg.chat(101), ALICE, "/presets"))
            assert "ghibli" in await _answer(tg, back)


async def test_preset_names_no_one_expects_get_clear_answers(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    chat = tg.chat(101)
    long_name = await h.send(photo_message(tg, chat, ALICE, caption="/portrait " + "g" * 300))
    assert "too long" in await _answer(tg, long_name)
    fused = await h.send(photo_message(tg, chat, ALICE, caption="/portrait " + "+".join(["ghibli"] * 5)))
    assert "at most 4" in await _answer(tg, fused)
    long_format = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli format:" + "x" * 80))
    answer = await _answer(tg, long_format)
    assert "don't know the format" in answer and len(answer) < 400
    assert not [t for t in h.texts() if "went wrong on our side" in t]
    assert not tg.downloads, "nothing was downloaded for refused requests"


async def test_bidi_and_control_characters_never_come_back(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    evil = "gh\u202eilbi\u200b\u2066x\u0007" + "y" * 60
    request = await h.send(photo_message(tg, tg.chat(101), ALICE, caption=f"/portrait {evil}"))
    answer = await _answer(tg, request)
    assert "can't read" in answer or "don't know the preset" in answer
    assert not any(ch in answer for ch in "\u202e\u200b\u2066\u0007"), repr(answer)
    quoted = answer.split("“")[1].split("”")[0]
    assert len(quoted) <= 40 and quoted.endswith("…")


async def test_an_unknown_preset_is_refused_before_the_selfie_is_downloaded(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    request = await h.send(photo_message(tg, tg.chat(101), ALICE, caption="/portrait nosuchstyle"))
    assert "nosuchstyle" in await _answer(tg, request)
    assert tg.downloads == [] and not tg.calls_of("getFile")


async def test_fusion_specs_and_edits_are_screened_with_what_they_change(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    fused = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli:0.7+nude:0.3"))
    assert "against this community's rules" in await _answer(tg, fused)
    _, photo = await portrait_result(h, chat, ALICE, caption="/portrait ghibli wearing lingerie")
    edit = await h.send(text_message(tg, chat, ALICE, "make her look 14", reply_to=result_message(tg, photo)))
    assert "against this community's rules" in await _answer(tg, edit)
    async with QueueClient(h.settings) as queue:
        refusals = await AbuseLog(queue.redis, 30).recent("refusal")
    assert [e.detail.split(":")[0] for e in refusals][:2] == ["sexualised-minor", "explicit"]
    assert not tg.downloads[1:], "the refused fusion downloaded nothing"


@pytest.mark.parametrize(("mime", "encode"), [("image/heic", "heic"), ("image/avif", "avif")])
async def test_phone_formats_sent_as_files_make_portraits(h: TelegramHarness, tg: FakeTelegram, mime, encode):
    await h.start_bot()
    await h.start_worker()
    if encode == "heic":
        data = heic(astronaut())
    else:
        buf = io.BytesIO()
        astronaut().save(buf, "AVIF", quality=80)
        data = buf.getvalue()
    request = await h.send(
        document_message(
            tg, tg.chat(101), ALICE, data, mime_type=mime, file_name=f"IMG_0001.{encode}", caption="/portrait ghibli"
        )
    )
    photo = (await tg.wait_call("sendPhoto", timeout=40))[-1]
    assert int(photo.params["reply_parameters"]["message_id"]) == request["message_id"]
    assert Image.open(io.BytesIO(photo.files["photo"])).format == "PNG"
    await asyncio.sleep(0)
