"""The Telegram bot end to end: real PTB application ↔ fake Bot API over HTTP, real Redis, tiny-engine worker."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from likeness.bot._community import CommunitySettings
from likeness.bot._texts import EDIT_HOWTO, HELP
from likeness.bot.telegram import ALLOWED_UPDATES
from tests.helpers.telegram import (
    TOKEN,
    button_data,
    callback_query,
    document_message,
    edit_answer,
    image_bytes,
    photo_message,
    portrait_result,
    reaction,
    reply_id,
    result_message,
    text_message,
    user,
)

pytest.importorskip("diffusers")
pytestmark = pytest.mark.timeout(90)

ALICE = user(101, "Alice")
BOB = user(202, "Bob")
CAROL = user(303, "Carol")


def _seed(caption: str) -> int:
    match = re.search(r"seed (\d+)", caption)
    assert match, caption
    return int(match.group(1))


async def test_captioned_photo_gets_progress_then_a_result_withbutton_data(h, tg, caplog):
    caplog.set_level(logging.DEBUG)
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    request = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli wearing a red scarf"))
    photo = (await tg.wait_call("sendPhoto", timeout=30))[-1]

    progress = tg.calls_of("sendMessage", chat_id=101)[0]
    assert progress.params["text"].startswith("⏳") and reply_id(progress) == request["message_id"]
    assert progress.at < photo.at
    assert reply_id(photo) == request["message_id"]
    assert "seed" in photo.params["caption"] and "Likeness" in photo.params["caption"]
    assert photo.files["photo"][:8] == b"\x89PNG\r\n\x1a\n"
    actions = [b.split(":")[1] for b in button_data(photo)]
    assert actions == ["reroll", "edit", "vary", "full"]
    # the progress message is cleaned up once the result is there
    deleted = await tg.wait_call("deleteMessage")
    assert int(deleted[0].params["message_id"]) == progress.result["message_id"] and deleted[0].at > photo.at
    # the largest photo size was downloaded, not the thumbnail
    assert tg.downloads == [request["photo"][-1]["file_id"]]
    assert set(ALLOWED_UPDATES) <= set(tg.allowed_updates_seen[0]) and "message_reaction" in ALLOWED_UPDATES
    assert tg.calls_of("setMyCommands")
    assert TOKEN.split(":")[1] not in caplog.text


async def test_reply_to_a_photo_and_an_image_file_both_make_portraits(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(-1001, "supergroup")
    photo = await h.send(photo_message(tg, chat, ALICE))
    request = await h.send(text_message(tg, chat, ALICE, "/portrait ghibli", reply_to=photo))
    first = (await tg.wait_call("sendPhoto", timeout=30))[-1]
    assert reply_id(first) == request["message_id"]
    assert tg.downloads == [photo["photo"][-1]["file_id"]]

    doc = await h.send(document_message(tg, chat, ALICE, image_bytes(fmt="PNG"), caption="/portrait ghibli"))
    second = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    assert reply_id(second) == doc["message_id"]
    assert tg.downloads[-1] == doc["document"]["file_id"]
    # a photo without the command, or with a command for another bot, is not for us
    await h.send(photo_message(tg, chat, ALICE, caption="holiday"))
    await h.send(photo_message(tg, chat, ALICE, caption="/portrait@other_bot ghibli"))
    await h.send(text_message(tg, chat, ALICE, "/help"))
    await tg.wait_for(lambda: HELP in h.texts(), what="help")
    assert len(tg.calls_of("sendPhoto")) == 2
    await h.send(photo_message(tg, chat, ALICE, caption="/portrait@likeness_test_bot ghibli"))
    await tg.wait_call("sendPhoto", count=3, timeout=30)


async def test_help_start_and_presets(h, tg):
    await h.start_bot()
    chat = tg.chat(101)
    for command in ("/start", "/help", "/presets"):
        await h.send(text_message(tg, chat, ALICE, command))
    await tg.wait_call("sendMessage", count=3)
    texts = h.texts()
    assert texts.count(HELP) == 2
    presets = next(t for t in texts if t != HELP)
    assert "ghibli" in presets and "🎨" in presets and "format" in presets.lower()
    # a photo without a caption in private: a hint, not silence
    await h.send(photo_message(tg, chat, ALICE))
    hint = await tg.wait_for(lambda: [t for t in h.texts() if "/portrait" in t and "photo" in t.lower()])
    assert "caption" in hint[0]


async def test_buttons_reroll_edit_variations_full_size(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    _, photo = await portrait_result(h, chat, ALICE)
    result = result_message(tg, photo)
    ids = dict(b.split(":")[1:] for b in button_data(photo))
    result_id = ids["reroll"]

    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:reroll:{result_id}"))
    rerolled = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    assert reply_id(rerolled) == result["message_id"]
    assert _seed(rerolled.params["caption"]) != _seed(photo.params["caption"])
    assert rerolled.files["photo"] != photo.files["photo"]
    new_id = dict(b.split(":")[1:] for b in button_data(rerolled))["reroll"]
    assert new_id != result_id

    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:edit:{result_id}"))
    howto = await tg.wait_for(lambda: [c for c in tg.calls_of("sendMessage") if c.params["text"] == EDIT_HOWTO])
    assert reply_id(howto[0]) == result["message_id"]

    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:vary:{result_id}"))
    album = (await tg.wait_call("sendMediaGroup", timeout=40))[-1]
    assert len(album.params["media"]) == 4 and len(album.files) == 4
    assert len({album.files[m["media"].removeprefix("attach://")] for m in album.params["media"]}) == 4
    keyboard = await tg.wait_for(lambda: [c for c in tg.calls_of("sendMessage") if button_data(c)])
    assert [b.split(":")[1] for b in button_data(keyboard[0])] == ["reroll", "edit", "vary", "full"]
    # every photo of the album is linked to the result: a reply to the third one is an edit of it
    await tg.wait_call("deleteMessage", count=3)  # the progress message goes once all links are stored
    third = tg.messages[(101, album.result[2]["message_id"])]
    edit = await h.send(text_message(tg, chat, ALICE, "add sunglasses", reply_to=third))
    await tg.wait_for(lambda: edit_answer(tg, edit), timeout=30, what="the edit's answer")

    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:full:{result_id}"))
    document = (await tg.wait_call("sendDocument"))[-1]
    assert document.files["document"] == photo.files["photo"]  # the original PNG, not a recompressed copy
    assert reply_id(document) == result["message_id"]
    answered = tg.calls_of("answerCallbackQuery")
    assert len(answered) == 4 and not any(c.params.get("show_alert") for c in answered)


async def test_thumbs_down_reaction_rerolls_only_for_the_requester(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(-1002, "supergroup")
    _, photo = await portrait_result(h, chat, ALICE)
    result = result_message(tg, photo)

    await tg.inject("message_reaction", reaction(chat, result["message_id"], BOB, ["👎"]))
    await tg.inject("message_reaction", reaction(chat, result["message_id"], ALICE, ["👍"]))
    await tg.inject("message_reaction", reaction(chat, result["message_id"], ALICE, ["👎"], old=["👍"]))
    rerolled = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    assert reply_id(rerolled) == result["message_id"]
    assert _seed(rerolled.params["caption"]) != _seed(photo.params["caption"])
    await h.send(text_message(tg, chat, ALICE, "/help"))
    await tg.wait_for(lambda: HELP in h.texts())
    assert len(tg.calls_of("sendPhoto")) == 2  # Bob's 👎 and Alice's 👍 started nothing
    assert not [t for t in h.texts() if "Only the person" in t]


async def test_non_requester_gets_a_short_alert_unless_admins_let_the_chat_collaborate(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(-1003, "supergroup")
    _, photo = await portrait_result(h, chat, ALICE)
    result = result_message(tg, photo)
    result_id = button_data(photo)[0].split(":")[2]
    messages_before = len(tg.calls_of("sendMessage"))

    await tg.inject("callback_query", callback_query(BOB, result, f"lk:reroll:{result_id}"))
    alert = (await tg.wait_call("answerCallbackQuery"))[-1]
    assert alert.params.get("show_alert") is True and "Only the person who asked" in alert.params["text"]
    assert len(alert.params["text"]) <= 200
    assert len(tg.calls_of("sendMessage")) == messages_before  # no progress message for a refusal
    bobs_edit = await h.send(text_message(tg, chat, BOB, "make it blue", reply_to=result))
    refusal = await tg.wait_for(
        lambda: [c for c in tg.calls_of("sendMessage") if reply_id(c) == bobs_edit["message_id"]]
    )
    assert "Only the person who asked" in refusal[0].params["text"] and len(refusal) == 1

    # Bob (a member) may not open the chat up; its admin may
    tg.admins[chat["id"]] = {CAROL["id"]}
    refused = await h.send(text_message(tg, chat, BOB, "/settings collaborate on"))
    await tg.wait_for(
        lambda: [
            c
            for c in tg.calls_of("sendMessage")
            if reply_id(c) == refused["message_id"] and "Only this chat's admins" in c.params["text"]
        ]
    )
    usage = await h.send(text_message(tg, chat, CAROL, "/settings collaborate maybe"))
    await tg.wait_for(
        lambda: [
            c for c in tg.calls_of("sendMessage") if reply_id(c) == usage["message_id"] and "on|off" in c.params["text"]
        ]
    )
    await h.send(text_message(tg, chat, CAROL, "/settings collaborate on"))
    await tg.wait_for(lambda: [t for t in h.texts() if "• collaborate: on" in t])
    private = await h.send(text_message(tg, tg.chat(202), BOB, "/settings"))
    await tg.wait_for(
        lambda: [
            c
            for c in tg.calls_of("sendMessage")
            if reply_id(c) == private["message_id"] and "per group" in c.params["text"]
        ]
    )
    await tg.inject("callback_query", callback_query(BOB, result, f"lk:reroll:{result_id}"))
    rerolled = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    assert reply_id(rerolled) == result["message_id"]


async def test_text_reply_to_a_result_is_an_edit_request(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    _, photo = await portrait_result(h, chat, ALICE)
    result = result_message(tg, photo)
    edit = await h.send(text_message(tg, chat, ALICE, "make the hair blue", reply_to=result))
    # The edited image replies to the edit request (until the engine can edit, the worker says so clearly).
    answer = await tg.wait_for(lambda: edit_answer(tg, edit), timeout=30, what="the edit's answer")
    assert reply_id(answer) == edit["message_id"]
    progress = next(c for c in tg.calls_of("sendMessage") if reply_id(c) == edit["message_id"])
    assert progress.params["text"].startswith("⏳")
    # a reply to some other message is ordinary conversation: no answer
    other = await h.send(text_message(tg, chat, ALICE, "hello"))
    await h.send(text_message(tg, chat, ALICE, "thanks", reply_to=other))
    await h.send(text_message(tg, chat, ALICE, "/help"))
    await tg.wait_for(lambda: HELP in h.texts())
    assert not [c for c in tg.calls_of("sendMessage") if reply_id(c) == other["message_id"] + 1]


async def test_forum_topic_is_kept_for_progress_result_andbutton_data(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(-1004, "supergroup", is_forum=True)
    _, photo = await portrait_result(h, chat, ALICE, thread_id=42)
    assert int(photo.params["message_thread_id"]) == 42
    progress = tg.calls_of("sendMessage", chat_id=-1004)[0]
    assert int(progress.params["message_thread_id"]) == 42
    result = result_message(tg, photo)
    result_id = button_data(photo)[0].split(":")[2]
    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:reroll:{result_id}"))
    await tg.inject("message_reaction", reaction(chat, result["message_id"], ALICE, ["👎"]))
    # under an old result Telegram sends an inaccessible message (date 0: chat and id, no topic)
    old = {"chat": chat, "message_id": result["message_id"], "date": 0}
    await tg.inject("callback_query", callback_query(ALICE, old, f"lk:reroll:{result_id}"))
    calls = await tg.wait_call("sendPhoto", count=4, timeout=40)
    assert [c.params.get("message_thread_id") for c in calls] == ["42"] * 4
    assert all(int(c.params["reply_parameters"]["message_id"]) == result["message_id"] for c in calls[1:])
    assert all(int(c.params["message_thread_id"]) == 42 for c in tg.calls_of("sendMessage"))


async def test_cancel_forget_and_stats(h, tg, tg_settings):
    await h.start_bot()  # no worker: the job stays queued
    chat = tg.chat(101)
    await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    await tg.wait_for(lambda: [t for t in h.texts() if "in the queue" in t or "Starting" in t], what="ticket")
    await h.send(text_message(tg, chat, ALICE, "/cancel"))
    await tg.wait_for(lambda: [t for t in h.texts() if "Cancelled 1" in t], what="cancel answer")
    await h.send(text_message(tg, chat, ALICE, "/cancel"))
    await tg.wait_for(lambda: [t for t in h.texts() if "Nothing of yours" in t], what="second cancel")
    await h.send(text_message(tg, chat, ALICE, "/forget"))
    await tg.wait_for(lambda: [t for t in h.texts() if "deleted everything" in t], what="forget")
    await h.send(text_message(tg, chat, ALICE, "/stats"))
    await tg.wait_for(lambda: [t for t in h.texts() if "for this bot's admins" in t], what="stats refusal")
    assert not [t for t in h.texts() if t.startswith("📊")]

    await h.stop_bot()
    admin = tg_settings.model_copy(update={"admins": [str(ALICE["id"])]})
    await h.start_bot(admin)
    await h.send(text_message(tg, chat, ALICE, "/stats"))
    stats = await tg.wait_for(lambda: [t for t in h.texts() if t.startswith("📊")], what="stats")
    assert "queued" in stats[0] and "jobs today: 1" in stats[0]


async def test_allowlist_refuses_politely_and_enqueues_nothing(h, tg, tg_settings):
    private = tg_settings.model_copy(update={"allowed_chats": ["-5000"]})
    await h.start_bot(private)
    chat = tg.chat(101)
    await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    refusal = await tg.wait_for(lambda: [t for t in h.texts() if "private" in t])
    assert refusal[0].startswith("⚠️")
    assert tg.downloads == [] and not tg.calls_of("getFile")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(tg_settings.redis_dsn)
    try:
        assert await client.zcard("arq:queue") == 0
    finally:
        await client.aclose()
    # the listed group is served
    group = tg.chat(-5000, "supergroup")
    await h.send(photo_message(tg, group, ALICE, caption="/portrait ghibli"))
    await tg.wait_for(lambda: [t for t in h.texts(-5000) if "queue" in t or "Starting" in t], what="ticket")


class CommunitySettingsClient:
    """`CommunitySettings` with its own Redis connection, for a test to change a chat's settings."""

    def __init__(self, settings: Any) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(settings.redis_dsn)
        self._community = CommunitySettings(self._redis, settings)

    async def __aenter__(self) -> CommunitySettings:
        return self._community

    async def __aexit__(self, *exc: object) -> None:
        await self._redis.aclose()


async def test_buttons_on_a_forgotten_result_say_it_expired(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    _, photo = await portrait_result(h, chat, ALICE)
    result = result_message(tg, photo)
    result_id = button_data(photo)[0].split(":")[2]
    await h.send(text_message(tg, chat, ALICE, "/forget"))
    await tg.wait_for(lambda: [t for t in h.texts() if "deleted everything" in t])

    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:reroll:{result_id}"))
    alert = (await tg.wait_call("answerCallbackQuery"))[-1]
    assert alert.params.get("show_alert") is True and "expired" in alert.params["text"]
    # Full size is checked before the press is answered: the expiry is its alert too
    await tg.inject("callback_query", callback_query(ALICE, result, f"lk:full:{result_id}"))
    alerts = await tg.wait_call("answerCallbackQuery", count=2)
    assert alerts[-1].params.get("show_alert") is True and "expired" in alerts[-1].params["text"]
    assert not tg.calls_of("sendDocument") and len(tg.calls_of("sendPhoto")) == 1


async def test_flagged_images_are_withheld_or_spoilered_as_the_chat_allows(h, tg, tg_settings):
    """The NSFW decision reaches Telegram: withheld (a notice, no photo) by default, a spoiler where allowed."""
    from likeness.queue import Delivery, QueueClient, append_delivery

    operator_allows = tg_settings.model_copy(update={"allow_nsfw_age_restricted": True})
    h.settings = operator_allows
    await h.start_bot(operator_allows)
    await h.start_worker()
    group = tg.chat(-1005, "supergroup")
    request, photo = await portrait_result(h, group, ALICE)
    assert not photo.params.get("has_spoiler")
    async with QueueClient(tg_settings) as queue:
        record = await queue.get_result(button_data(photo)[0].split(":")[2])
        flagged = record.model_copy(update={"metadata": record.metadata.model_copy(update={"nsfw_scores": (0.99,)})})

        await append_delivery(
            queue.redis,
            Delivery(job_id="flagged-1", kind="portrait", origin=record.origin, result=flagged),
            marker_ttl_s=60,
        )
        notice = await tg.wait_for(
            lambda: [c for c in tg.calls_of("sendMessage") if "safety check" in c.params["text"]]
        )
        assert reply_id(notice[0]) == request["message_id"] and "won't post it here" in notice[0].params["text"]
        assert len(tg.calls_of("sendPhoto")) == 1

        async with CommunitySettingsClient(tg_settings) as community:
            await community.update("telegram", group["id"], age_restricted=True, allow_nsfw=True)
        await append_delivery(
            queue.redis,
            Delivery(job_id="flagged-2", kind="portrait", origin=record.origin, result=flagged),
            marker_ttl_s=60,
        )
        spoilered = (await tg.wait_call("sendPhoto", count=2))[-1]
    assert spoilered.params.get("has_spoiler") is True and "hidden behind a spoiler" in spoilered.params["caption"]
    assert reply_id(spoilered) == request["message_id"]
