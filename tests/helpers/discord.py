"""Builders for Discord tests: gateway payloads (interactions, reactions, messages) for `FakeDiscord`, and a
running bot (the real discord.py client from `likeness.bot.discord`) with its own queue client."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from likeness.bot import BotCore
from likeness.bot.discord import LikenessClient, build_client
from likeness.config import Settings
from likeness.queue import QueueClient
from likeness.worker import worker_in_loop
from tests.fakes.discord_api import (
    APP_ID,
    BOT_USER,
    GUILD_ID,
    PERMISSIONS_ALL,
    TEXT_CHANNEL_ID,
    FakeDiscord,
    snowflake,
)

USER = 5001
OTHER = 5002
ADMIN = 5003
TOKEN = "FAKE0000000000000000000000.Xxxxxx.yyyyyyyyyyyyyyyyyyyyyyyyyyy"


def user(user_id: int) -> dict[str, Any]:
    return {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0", "global_name": None, "avatar": None}


def member(user_id: int, permissions: str = PERMISSIONS_ALL) -> dict[str, Any]:
    return {
        "user": user(user_id),
        "roles": [],
        "joined_at": datetime.now(UTC).isoformat(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "permissions": permissions,
    }


def png(color: str = "peachpuff", size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def _command_id(fake: FakeDiscord, name: str) -> str:
    return next((c["id"] for c in fake.commands if c["name"] == name), str(snowflake()))


def interaction(
    fake: FakeDiscord,
    kind: int,
    data: dict[str, Any],
    *,
    user_id: int = USER,
    channel_id: int = TEXT_CHANNEL_ID,
    message: dict[str, Any] | None = None,
    created_at: float | None = None,
    permissions: str = PERMISSIONS_ALL,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload, registered with the fake so its callback and webhook routes work."""
    interaction_id = snowflake(created_at)
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(APP_ID),
        "type": kind,
        "token": f"itoken-{interaction_id}",
        "version": 1,
        "guild_id": str(GUILD_ID),
        "channel_id": str(channel_id),
        "channel": fake.channels[channel_id],
        "member": member(user_id, permissions),
        "app_permissions": PERMISSIONS_ALL,
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)},
        "context": 0,
        "attachment_size_limit": 10 * 1024 * 1024,
        "data": data,
    }
    if message is not None:
        payload["message"] = message
    fake.register_interaction(payload)
    return payload


def slash(fake: FakeDiscord, name: str, options: list[dict[str, Any]] | None = None, **kwargs: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": _command_id(fake, name), "name": name, "type": 1}
    if options:
        data["options"] = options
    return interaction(fake, 2, data, **kwargs)


def portrait(
    fake: FakeDiscord,
    attachment: dict[str, Any],
    preset: str = "ghibli",
    prompt: str | None = None,
    fmt: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """/portrait with a resolved attachment (see `FakeDiscord.add_attachment`)."""
    options: list[dict[str, Any]] = [
        {"name": "preset", "type": 3, "value": preset},
        {"name": "selfie", "type": 11, "value": attachment["id"]},
    ]
    if prompt is not None:
        options.append({"name": "prompt", "type": 3, "value": prompt})
    if fmt is not None:
        options.append({"name": "format", "type": 3, "value": fmt})
    payload = slash(fake, "portrait", options, **kwargs)
    payload["data"]["resolved"] = {"attachments": {attachment["id"]: attachment}}
    return payload


def autocomplete(fake: FakeDiscord, current: str, **kwargs: Any) -> dict[str, Any]:
    data = {
        "id": _command_id(fake, "portrait"),
        "name": "portrait",
        "type": 1,
        "options": [{"name": "preset", "type": 3, "value": current, "focused": True}],
    }
    return interaction(fake, 4, data, **kwargs)


def button(fake: FakeDiscord, message_id: int, custom_id: str, **kwargs: Any) -> dict[str, Any]:
    """A press of a button on a message the bot sent (the message carries its components, as on Discord)."""
    message = fake.message(message_id)
    data = {"custom_id": custom_id, "component_type": 2}
    return interaction(fake, 3, data, message=message, channel_id=int(message["channel_id"]), **kwargs)


def modal_submit(fake: FakeDiscord, custom_id: str, value: str, **kwargs: Any) -> dict[str, Any]:
    data = {
        "custom_id": custom_id,
        "components": [{"type": 1, "components": [{"type": 4, "custom_id": "instruction", "value": value}]}],
    }
    return interaction(fake, 5, data, **kwargs)


def context_menu(fake: FakeDiscord, name: str, message_id: int, **kwargs: Any) -> dict[str, Any]:
    message = fake.message(message_id)
    data = {
        "id": _command_id(fake, name),
        "name": name,
        "type": 3,
        "target_id": str(message_id),
        "resolved": {"messages": {str(message_id): message}},
    }
    return interaction(fake, 2, data, channel_id=int(message["channel_id"]), **kwargs)


def reaction(message: dict[str, Any], emoji: str, user_id: int = USER) -> dict[str, Any]:
    return {
        "user_id": str(user_id),
        "channel_id": message["channel_id"],
        "message_id": message["id"],
        "guild_id": str(GUILD_ID),
        "emoji": {"id": None, "name": emoji},
        "member": member(user_id),
        "burst": False,
        "type": 0,
    }


def reply(
    fake: FakeDiscord, message: dict[str, Any], content: str, user_id: int = USER, *, mention: bool = True
) -> dict[str, Any]:
    """A user's reply to `message` ("@Likeness make the hair blue"), as MESSAGE_CREATE sends it."""
    return user_message(fake, int(message["channel_id"]), content, user_id, mention=mention, reference=message)


def user_message(
    fake: FakeDiscord,
    channel_id: int,
    content: str,
    user_id: int = USER,
    *,
    mention: bool = True,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A user's message in a channel (optionally a reply), as MESSAGE_CREATE sends it."""
    message_id = snowflake()
    author_member = member(user_id)
    del author_member["user"]
    payload: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "guild_id": str(GUILD_ID),
        "author": user(user_id),
        "member": author_member,
        "content": (f"<@{APP_ID}> " if mention else "") + content,
        "timestamp": datetime.now(UTC).isoformat(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [BOT_USER] if mention else [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "components": [],
    }
    if reference is not None:
        payload["type"] = 19
        payload["message_reference"] = {
            "message_id": reference["id"],
            "channel_id": reference["channel_id"],
            "guild_id": str(GUILD_ID),
        }
        payload["referenced_message"] = reference
    fake.messages[message_id] = {k: v for k, v in payload.items() if k not in ("member", "referenced_message")}
    return payload


@asynccontextmanager
async def running_bot(
    settings: Settings, fake: FakeDiscord, *, force_sync: bool = False, consumer: str = "test-bot"
) -> AsyncIterator[LikenessClient]:
    """The real client connected to `fake` (gateway up, guild cached), with its own queue client and core."""
    async with QueueClient(settings) as queue:
        client = build_client(settings, BotCore(settings, queue), force_sync=force_sync, consumer_name=consumer)
        client._connection.guild_ready_timeout = 0.05  # the fake sends every guild at once
        task = asyncio.create_task(client.start(TOKEN))
        try:
            for _ in range(200):
                if client.get_channel(TEXT_CHANNEL_ID) is not None or task.done():
                    break
                await asyncio.sleep(0.05)
            if task.done():
                task.result()
            assert client.get_channel(TEXT_CHANNEL_ID) is not None, "the bot never joined the fake gateway"
            yield client
        finally:
            await client.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@asynccontextmanager
async def real_worker(settings: Settings) -> AsyncIterator[None]:
    """An arq worker on this loop with the real engine on the tiny model."""
    async with worker_in_loop(settings):
        yield


async def wait_result(fake: FakeDiscord, message_id: int, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the bot's message `message_id` shows images (a delivered result)."""
    await fake.wait_for(lambda: fake.messages.get(message_id, {}).get("attachments"), timeout=timeout)
    return fake.message(message_id)


async def wait_text(fake: FakeDiscord, message_id: int, needle: str, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the bot's message `message_id` contains `needle`."""
    await fake.wait_for(lambda: needle in fake.messages.get(message_id, {}).get("content", ""), timeout=timeout)
    return fake.message(message_id)


async def request_portrait(
    fake: FakeDiscord, *, preset: str = "ghibli", prompt: str | None = None, user_id: int = USER, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run /portrait through the gateway; returns (interaction payload, its result message)."""
    payload = portrait(fake, fake.add_attachment(png()), preset=preset, prompt=prompt, user_id=user_id, **kwargs)
    record = fake.interactions[payload["token"]]
    await fake.dispatch("INTERACTION_CREATE", payload)
    await fake.wait_for(lambda: record["original"], timeout=5)
    return payload, await wait_result(fake, record["original"])


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """action → custom id of the buttons under a message."""
    return {b["custom_id"].split(":")[1]: b["custom_id"] for row in message["components"] for b in row["components"]}


def ephemeral_texts(fake: FakeDiscord, token: str) -> list[str]:
    """Texts the bot answered privately to one interaction (initial response or follow-ups)."""
    record = fake.interactions[token]
    texts = [r["data"].get("content", "") for r in record["responses"] if int(r["data"].get("flags", 0)) & 64]
    texts += [fake.messages[m]["content"] for m in record["followups"] if fake.messages[m]["flags"] & 64]
    return texts


async def new_image_message(fake: FakeDiscord, before: set[int], timeout: float = 20.0) -> dict[str, Any]:
    """The first message with images that was not in `before` (a set of message ids), once it exists."""
    found = await fake.wait_for(
        lambda: [m for m in set(fake.messages) - before if fake.messages[m]["attachments"]], timeout=timeout
    )
    return fake.message(found[0])
