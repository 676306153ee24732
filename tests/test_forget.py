"""`/forget` really forgets, and every key the project writes is declared in one registry.

A full flow runs through the real Telegram bot in a collaborative group (portrait, reroll, edit, and a
variation of Alice's result by another member); then Alice sends /forget, and a scan of every Redis key
and value shows that nothing with her id, her prompt or her images remains, the remix of her face included.
"""

from __future__ import annotations

import fnmatch
import io
from typing import Any

import pytest
import redis.asyncio as aioredis

from likeness.bot._community import CommunitySettings
from likeness.queue import QueueClient, keys
from likeness.queue._abuse import AbuseLog
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.faces import grace_hopper
from tests.helpers.telegram import (
    TelegramHarness,
    button_data,
    callback_query,
    portrait_result,
    result_message,
    text_message,
    user,
)

pytest.importorskip("diffusers")
pytestmark = pytest.mark.timeout(150)

ALICE = user(7770001, "Alice")
BOB = user(8880002, "Bob")
PROMPT = "wearing a xyzzyscarf"


async def _dump(redis: aioredis.Redis) -> dict[str, bytes]:
    """Every key with all it holds, as bytes (strings, hashes, lists, sets, sorted sets, streams)."""
    found: dict[str, bytes] = {}
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts: list[Any] = [await redis.get(key)]
        elif kind == "hash":
            parts = [x for pair in (await redis.hgetall(key)).items() for x in pair]
        elif kind == "list":
            parts = await redis.lrange(key, 0, -1)
        elif kind == "set":
            parts = list(await redis.smembers(key))
        elif kind == "zset":
            parts = [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts = [x for _, fields in await redis.xrange(key) for pair in fields.items() for x in pair]
        else:
            parts = []
        found[key] = key.encode() + b"\n" + b"\n".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return found


async def _full_flow(h: TelegramHarness, tg: FakeTelegram) -> tuple[dict[str, Any], list[str]]:
    """Alice's portrait, reroll and edit, Bob's variation of her result and his own portrait, in a collaborative
    group; returns (the group, Alice's and Bob's-remix result ids)."""
    group = tg.chat(-1009, "supergroup")
    async with QueueClient(h.settings) as queue:
        await CommunitySettings(queue.redis).update("telegram", group["id"], collaborate=True)
    _, first = await portrait_result(h, group, ALICE, caption=f"/portrait ghibli {PROMPT}")
    result_id = button_data(first)[0].split(":")[2]
    shown = result_message(tg, first)

    await tg.inject("callback_query", callback_query(ALICE, shown, f"lk:reroll:{result_id}"))
    rerolled = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    await h.send(text_message(tg, group, ALICE, "make the hair blue", reply_to=shown))
    edited = (await tg.wait_call("sendPhoto", count=3, timeout=30))[-1]
    await tg.inject("callback_query", callback_query(BOB, shown, f"lk:vary:{result_id}"))
    await tg.wait_for(lambda: tg.calls_of("sendMediaGroup"), timeout=30)  # Bob's variations: an album
    _, bobs_own = await portrait_result(h, group, BOB, image=_jpeg(grace_hopper()))  # his own face
    ids = [result_id, *(button_data(c)[0].split(":")[2] for c in (rerolled, edited))]
    album_buttons = [c for c in tg.calls_of("sendMessage") if button_data(c)]
    ids.append(button_data(album_buttons[-1])[0].split(":")[2])  # the buttons under Bob's remix album
    return {"group": group, "bobs_own": button_data(bobs_own)[0].split(":")[2]}, ids


async def test_forget_leaves_nothing_of_the_user_and_keeps_others_data(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    await h.start_worker()
    context, alices = await _full_flow(h, tg)
    async with QueueClient(h.settings) as queue:
        records = [await queue.get_result(r) for r in alices]
        images = [await queue.get_image(b) for r in records for b in r.image_blob_ids]
        selfie = await queue.get_image(records[0].request.selfie_blob_id)  # type: ignore[arg-type]
        assert records[-1].owner_user_id == str(BOB["id"]) and records[-1].request.subject == str(ALICE["id"])
        before = await _dump(queue.redis)
        assert any(PROMPT.encode() in v for v in before.values()) and any(selfie in v for v in before.values())

        await h.send(text_message(tg, context["group"], ALICE, "/forget"))
        answer = await tg.wait_for(
            lambda: [c for c in tg.calls_of("sendMessage") if "deleted everything" in c.params["text"]]
        )
        assert "ban" not in answer[0].params["text"]
        after = await _dump(queue.redis)

        leftovers = {
            key: needle
            for key, value in after.items()
            for needle in (str(ALICE["id"]).encode(), PROMPT.encode(), selfie, *images)
            if needle in value
        }
        assert leftovers == {}, sorted(leftovers)
        for record in records:  # Bob's remix of Alice's face went with her data
            assert not await queue.redis.exists(keys.result(record.result_id))
        bobs = await queue.get_result(context["bobs_own"])  # Bob's own portrait stays
        assert await queue.get_image(bobs.image_blob_ids[0])
        assert any(str(BOB["id"]).encode() in v for v in after.values())


async def test_a_ban_record_survives_forget_and_the_answer_says_so(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    await h.start_worker()
    await portrait_result(h, tg.chat(7770001), ALICE, caption=f"/portrait ghibli {PROMPT}")
    async with QueueClient(h.settings) as queue:
        abuse = AbuseLog(queue.redis, 30)
        await abuse.ban(ALICE["id"], "telegram", reason="spam", by="admin")
        await h.send(text_message(tg, tg.chat(7770001), ALICE, "/forget"))
        answer = await tg.wait_for(
            lambda: [c for c in tg.calls_of("sendMessage") if "deleted everything" in c.params["text"]]
        )
        assert "kept the record of your ban" in answer[0].params["text"]
        assert await abuse.is_banned(ALICE["id"], "telegram")
        assert [e.kind for e in await abuse.recent() if e.user_id == str(ALICE["id"])] == ["ban"]
        after = await _dump(queue.redis)
    assert not any(PROMPT.encode() in v for v in after.values())


async def test_every_key_written_is_registered_and_expires_where_it_says(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    await h.start_worker()
    await _full_flow(h, tg)
    async with QueueClient(h.settings) as queue:
        found = [k.decode() async for k in queue.redis.scan_iter(count=1000)]
        unregistered = [k for k in found if not k.startswith("arq:") and not _spec(k)]
        assert unregistered == []
        immortal = [k for k in found if (spec := _spec(k)) and spec.expires and await queue.redis.ttl(k) < 0]
        assert immortal == []
        assert {s.pattern for k in found if (s := _spec(k))} >= {
            "likeness:job:*", "likeness:blob:*", "likeness:result:*", "likeness:msg:*", "likeness:deliveries:*",
            "likeness:user:*:entries", "likeness:user:*:uploads", "likeness:idem:*", "likeness:audit",
        }  # fmt: skip


def _jpeg(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    return buf.getvalue()


def _spec(key: str) -> keys.KeySpec | None:
    return next((spec for spec in keys.KEYS if fnmatch.fnmatchcase(key, spec.pattern)), None)
