"""The Discord bot end to end: the real discord.py client against a fake Discord on 127.0.0.1, a real Redis
and a worker (the tiny model where pixels matter, the queue's fake engine where timing or failures matter)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from likeness.config import Settings
from tests.fakes.discord_api import FakeDiscord
from tests.helpers.discord import ADMIN, TOKEN, running_bot


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str, fake: FakeDiscord) -> Settings:
    return make_settings(redis_url=redis_url, discord_api_url=fake.api_url, discord_token=TOKEN, admins=[str(ADMIN)])


async def test_commands_are_registered_once_and_resynced_on_demand(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake):
        pass
    assert fake.command_puts == 1
    by_name = {c["name"]: c for c in fake.commands}
    assert set(by_name) == {"portrait", "presets", "cancel", "forget", "stats", "Reroll", "Edit image"}
    options = {o["name"]: o for o in by_name["portrait"]["options"]}
    assert list(options) == ["preset", "selfie", "prompt", "format"]
    assert options["preset"]["type"] == 3 and options["preset"]["autocomplete"] and options["preset"]["required"]
    assert options["selfie"]["type"] == 11 and options["selfie"]["required"]
    assert not options["prompt"].get("required") and not options["format"].get("required")
    assert {c["value"] for c in options["format"]["choices"]} >= {"square", "story", "instagram"}
    assert by_name["Reroll"]["type"] == 3 and by_name["Edit image"]["type"] == 3
    # The gateway was found through the API base, and no privileged intent was asked for.
    assert fake.calls("GET", "/gateway/bot")
    assert fake.identifies and fake.identifies[0]["shard"] == [0, 1]
    intents = fake.identifies[0]["intents"]
    assert intents & (1 << 15) == 0  # message content
    assert intents & (1 << 0) and intents & (1 << 9) and intents & (1 << 10) and intents & (1 << 12)

    async with running_bot(settings, fake):
        pass
    assert fake.command_puts == 1, "same definitions: no second upload"

    async with running_bot(settings, fake, force_sync=True):
        pass
    assert fake.command_puts == 2
    await asyncio.sleep(0)
