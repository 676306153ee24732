"""The core is the one gate for images and changes, on Telegram: callback data is hostile input.

A user client can send any callback data from any chat. These tests forge it (another user's result id, a
result withheld by the NSFW guard, a chat outside the allowlist, a collaborative group reaching for another
chat's result) and check that nothing leaves the bot: no document, no photo, no job.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from likeness.bot._community import CommunitySettings
from likeness.queue import QueueClient, keys
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.telegram import (
    TelegramHarness,
    button_data,
    callback_query,
    portrait_result,
    result_message,
    user,
)

pytest.importorskip("diffusers")
pytestmark = pytest.mark.timeout(90)

ALICE = user(101, "Alice")
MALLORY = user(666, "Mallory")


def _result_id(call: Any) -> str:
    return button_data(call)[0].split(":")[2]


async def _press(tg: FakeTelegram, who: dict[str, Any], message: dict[str, Any], data: str) -> str:
    """Send a (possibly forged) button press under `message`; the alert text the presser gets."""
    before = len(tg.calls_of("answerCallbackQuery"))
    await tg.inject("callback_query", callback_query(who, message, data))
    answers = await tg.wait_call("answerCallbackQuery", count=before + 1)
    return str(answers[-1].params.get("text", ""))


async def _jobs(settings: Any) -> int:
    async with aioredis.Redis.from_url(settings.redis_dsn) as redis:
        return int(await redis.zcard(keys.ARQ_QUEUE))


async def test_forged_callback_data_for_another_users_result_gets_nothing(h: TelegramHarness, tg: FakeTelegram):
    await h.start_bot()
    await h.start_worker()
    _, photo = await portrait_result(h, tg.chat(101), ALICE)
    result_id = _result_id(photo)
    await h.stop_worker()  # a job sneaking through would stay queued, where the test sees it

    # Mallory's own private chat with the bot: a message of hers, with Alice's result id in forged data
    own = result_message(tg, photo) | {"chat": tg.chat(666), "message_id": tg.new_message_id(666)}
    for action in ("full", "reroll", "vary", "edit"):
        alert = await _press(tg, MALLORY, own, f"lk:{action}:{result_id}")
        assert "only the person who asked" in alert.lower(), (action, alert)
    assert not tg.calls_of("sendDocument"), "no full-size file left the bot"
    assert len(tg.calls_of("sendPhoto")) == 1 and await _jobs(h.settings) == 0
    # Alice herself gets the file
    await _press(tg, ALICE, result_message(tg, photo), f"lk:full:{result_id}")
    (document,) = await tg.wait_call("sendDocument")
    assert document.files["document"][:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_withheld_result_is_not_handed_out_as_a_file(h: TelegramHarness, tg: FakeTelegram, tg_settings):
    await h.start_bot()
    await h.start_worker()
    _, photo = await portrait_result(h, tg.chat(101), ALICE)
    result_id = _result_id(photo)
    async with QueueClient(tg_settings) as queue:  # the guard flagged it after all (as a flagged job would be)
        record = await queue.get_result(result_id)
        flagged = record.model_copy(update={"metadata": record.metadata.model_copy(update={"nsfw_scores": (0.99,)})})
        await queue.redis.set(keys.result(result_id), flagged.model_dump_json(), keepttl=True)

    alert = await _press(tg, ALICE, result_message(tg, photo), f"lk:full:{result_id}")
    assert "safety check" in alert and not tg.calls_of("sendDocument")


async def test_buttons_from_a_chat_outside_the_allowlist_are_refused(tg: FakeTelegram, tg_settings, tiny_engine):
    from tests.helpers.telegram import harness

    allowed = tg_settings.model_copy(update={"allowed_chats": ["101"]})
    async with harness(tg, allowed, tiny_engine) as h:
        await h.start_bot()
        await h.start_worker()
        _, photo = await portrait_result(h, tg.chat(101), ALICE)
        result_id = _result_id(photo)
        # Alice herself, pressing forged buttons from a group the operator did not allow
        outside = result_message(tg, photo) | {"chat": tg.chat(-4242, "group"), "message_id": 7}
        for action in ("full", "reroll"):
            alert = await _press(tg, ALICE, outside, f"lk:{action}:{result_id}")
            assert "private" in alert.lower(), (action, alert)
        assert not tg.calls_of("sendDocument") and len(tg.calls_of("sendPhoto")) == 1


async def test_collaboration_opens_a_groups_own_results_only(h: TelegramHarness, tg: FakeTelegram, tg_settings):
    await h.start_bot()
    await h.start_worker()
    group, elsewhere = tg.chat(-100, "supergroup"), tg.chat(101)
    _, in_group = await portrait_result(h, group, ALICE)
    _, private = await portrait_result(h, elsewhere, ALICE)
    async with QueueClient(tg_settings) as queue:
        await CommunitySettings(queue.redis).update("telegram", group["id"], collaborate=True)

    # Mallory, a member of the collaborative group, may remix the group's result...
    await _press(tg, MALLORY, result_message(tg, in_group), f"lk:reroll:{_result_id(in_group)}")
    await tg.wait_call("sendPhoto", count=3, timeout=30)
    # ...but not Alice's private result, even with its id forged into a button of the group
    alert = await _press(tg, MALLORY, result_message(tg, in_group), f"lk:full:{_result_id(private)}")
    assert "only the person who asked" in alert.lower()
    assert not tg.calls_of("sendDocument")
