"""The core is the one gate for images on Discord too: custom ids are hostile input (a client can send any)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from likeness.config import Settings
from likeness.queue import QueueClient, keys
from tests.fakes.discord_api import FakeDiscord
from tests.helpers.discord import OTHER, USER, button, buttons, ephemeral_texts, request_portrait, running_bot
from tests.helpers.queue import running_worker

pytestmark = pytest.mark.timeout(60)


async def _private_answer(fake: FakeDiscord, payload: dict[str, Any], needle: str) -> str:
    """Dispatch an interaction; the bot's ephemeral text containing `needle`."""
    await fake.dispatch("INTERACTION_CREATE", payload)
    found = await fake.wait_for(
        lambda: [t for t in ephemeral_texts(fake, payload["token"]) if needle in t.lower()], timeout=10
    )
    return str(found[0])


def _files_sent(fake: FakeDiscord, payload: dict[str, Any]) -> int:
    record = fake.interactions[payload["token"]]
    return sum(len(fake.files.get(int(m), [])) for m in record["followups"])


async def test_forged_full_size_ids_get_nothing(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    settings = make()
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        full = buttons(result)["full"]
        # another member presses (or forges) the 📥 of someone else's result
        stranger = button(fake, int(result["id"]), full, user_id=OTHER)
        assert "only the person who asked" in (await _private_answer(fake, stranger, "only the person")).lower()
        assert _files_sent(fake, stranger) == 0


async def test_a_withheld_result_is_not_sent_as_a_file(make: Callable[..., Settings], fake: FakeDiscord) -> None:
    settings = make()
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        result_id = buttons(result)["full"].split(":")[2]
        async with QueueClient(settings) as queue:  # the NSFW guard flagged it after all
            record = await queue.get_result(result_id)
            flagged = record.model_copy(
                update={"metadata": record.metadata.model_copy(update={"nsfw_scores": (0.99,)})}
            )
            await queue.redis.set(keys.result(result_id), flagged.model_dump_json(), keepttl=True)
        press = button(fake, int(result["id"]), buttons(result)["full"], user_id=USER)
        assert "safety check" in await _private_answer(fake, press, "safety check")
        assert _files_sent(fake, press) == 0


async def test_buttons_in_a_server_outside_the_allowlist_are_refused(
    make: Callable[..., Settings], fake: FakeDiscord
) -> None:
    open_bot = make()
    async with running_bot(open_bot, fake), running_worker(open_bot):
        _, result = await request_portrait(fake)
    closed = make(allowed_chats=["1234567890"])  # the operator since allowed another server only
    async with running_bot(closed, fake):
        for action in ("full", "reroll"):
            press = button(fake, int(result["id"]), buttons(result)[action], user_id=USER)
            assert "private" in await _private_answer(fake, press, "private")
            assert _files_sent(fake, press) == 0
