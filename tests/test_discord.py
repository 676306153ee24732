"""The Discord bot end to end: the real discord.py client against a fake Discord on 127.0.0.1, a real Redis
and a worker (the tiny model where pixels matter, the queue's fake engine where timing or failures matter)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable

import pytest
from PIL import Image

from likeness.bot.discord import LikenessClient
from likeness.config import Settings
from tests.fakes.discord_api import TEXT_CHANNEL_ID, FakeDiscord
from tests.helpers.discord import ADMIN, TOKEN, png, portrait, real_worker, running_bot


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


async def test_portrait_happy_path_with_the_tiny_model(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake) as client, real_worker(settings):
        selfie = fake.add_attachment(png("peachpuff"))
        payload = portrait(fake, selfie, preset="ghibli", prompt="smiling")
        record = fake.interactions[payload["token"]]
        sent_at = time.monotonic()
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: record["responses"], timeout=5)
        assert record["responses"][0]["type"] == 5, "a public 'thinking…' first"
        assert record["responses"][0]["at"] - sent_at < 3.0
        original = record["original"]
        await fake.wait_for(lambda: fake.message(original)["attachments"], timeout=120)
        message = fake.message(original)
        # Progress came first, as edits of the same response.
        texts = [e["body"].get("content", "") for e in record["edits"] if e["body"]]
        assert any("queue" in t or "Starting" in t or "Painting" in t for t in texts[:-1]), texts
        # The result: one PNG, caption with preset, seed and likeness, the four buttons.
        assert len(fake.files[original]) == 1
        image = Image.open(io.BytesIO(fake.files[original][0]))
        assert image.format == "PNG" and image.width >= 64
        result_id = await client.core.result_for_message("discord", str(TEXT_CHANNEL_ID), str(original))
        assert result_id is not None, "the result message is linked to its result"
        result = await client.core.queue.get_result(result_id)
        assert f"seed {result.seeds[0]}" in message["content"] and "Likeness" in message["content"]
        buttons = [b for row in message["components"] for b in row["components"]]
        assert [b["custom_id"] for b in buttons] == [f"lk:{a}:{result_id}" for a in ("reroll", "edit", "vary", "full")]
        assert [b["label"] for b in buttons] == ["🔄 Reroll", "✏️ Edit", "✨ Variations", "📥 Full size"]
        assert await _pending(client) == 0, "the delivery was acked"


async def _pending(client: LikenessClient) -> int:
    info = await client.core.queue.redis.xpending("likeness:deliveries:discord", "bots")
    return int(info["pending"])
