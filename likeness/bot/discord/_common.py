"""Small pieces every Discord handler shares: origins, attachment checks, presets autocomplete, answers."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Final

import discord

from likeness.bot._core import BotCore
from likeness.config import Settings
from likeness.errors import InvalidImage, UserError, echo
from likeness.images import format_size
from likeness.presets import PresetCatalog
from likeness.queue import Origin

__all__ = [
    "EXTRA_APP",
    "EXTRA_GUILD",
    "EXTRA_TOKEN",
    "EXTRA_TOKEN_AT",
    "PLATFORM",
    "THREAD_KEY",
    "TOKEN_LIFETIME_S",
    "answer",
    "check_attachment",
    "clip",
    "fail",
    "guild_extra",
    "interaction_origin",
    "is_nsfw",
    "preset_suggestions",
    "read_attachment",
    "token_alive",
]

log = logging.getLogger("likeness.bot.discord")

PLATFORM: Final = "discord"
# Discord's interaction tokens live 15 minutes; past 14 a result goes out as a channel message instead.
TOKEN_LIFETIME_S = 14 * 60
EXTRA_APP = "app_id"
EXTRA_TOKEN = "token"
EXTRA_TOKEN_AT = "token_at"
EXTRA_GUILD = "guild_id"
# Message-link key under which a request's thread points at its latest result (setting `discord_threads`).
THREAD_KEY = "thread"
MESSAGE_LIMIT = 2000
_IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/avif",
    "image/heic",
    "image/heif",
)


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Discord refuses message content over 2000 characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_nsfw(channel: object) -> bool:
    """The channel's age-restricted flag (threads inherit their parent's); False for DMs and unknowns."""
    check = getattr(channel, "is_nsfw", None)
    return bool(check()) if callable(check) else False


def interaction_origin(interaction: discord.Interaction, *, message_id: int | None) -> Origin:
    """Where a job started by `interaction` reports: its response message while the token lives."""
    assert interaction.channel_id is not None
    return Origin(
        platform=PLATFORM,
        chat_id=str(interaction.channel_id),
        user_id=str(interaction.user.id),
        message_id=None if message_id is None else str(message_id),
        progress_message_id=None if message_id is None else str(message_id),
        age_restricted=is_nsfw(interaction.channel),
        extra={
            EXTRA_APP: str(interaction.application_id),
            EXTRA_TOKEN: interaction.token,
            EXTRA_TOKEN_AT: f"{interaction.created_at.timestamp():.3f}",
            **guild_extra(interaction.guild_id),
        },
    )


def guild_extra(guild_id: int | None) -> dict[str, str]:
    """`Origin.extra` naming the server: the core applies allowlists and community settings per server."""
    return {} if guild_id is None else {EXTRA_GUILD: str(guild_id)}


def token_alive(origin: Origin, now: float | None = None) -> bool:
    """True while `origin`'s interaction token may still edit the response (with a minute to spare)."""
    if EXTRA_TOKEN not in origin.extra or EXTRA_APP not in origin.extra:
        return False
    try:
        created = float(origin.extra.get(EXTRA_TOKEN_AT, "0"))
    except ValueError:
        return False
    return (now if now is not None else time.time()) - created < TOKEN_LIFETIME_S


def check_attachment(attachment: discord.Attachment, settings: Settings) -> None:
    """Refuse from the attachment's metadata alone (no download): not an image, or too big."""
    limit = settings.max_upload_bytes
    if attachment.size > limit:
        raise InvalidImage(
            message=f"That file is {format_size(attachment.size)}; the limit is {format_size(limit)}. "
            "Please send a smaller photo."
        )
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type and content_type not in _IMAGE_TYPES:
        raise InvalidImage(
            message=f"“{echo(attachment.filename)}” isn't a photo ({echo(content_type)}). "
            "Please attach a JPEG, PNG, WebP, HEIC or AVIF selfie."
        )


async def read_attachment(attachment: discord.Attachment, settings: Settings) -> bytes:
    """Download an attachment after the metadata checks; its bytes are sniffed again by the queue."""
    check_attachment(attachment, settings)
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        raise UserError(message="I couldn't download that attachment. Please send it again.") from exc
    if len(data) > settings.max_upload_bytes:  # the metadata lied
        raise InvalidImage(message="That file is too large. Please send a smaller photo.")
    return data


def preset_suggestions(catalog: PresetCatalog, current: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, value) pairs for the preset option: names, and fusions once the text has a `+`.

    `ghib` → ghibli; `ghibli+` → ghibli+headshot, ghibli+anime, …; `ghibli:0.7+he` → ghibli:0.7+headshot.
    """
    text = current.strip().lower().replace(" ", "")
    head, plus, tail = text.rpartition("+")
    used = {part.split(":")[0] for part in head.split("+")} if plus else set()
    fragment = tail.split(":")[0]
    presets = [p for p in catalog if p.name not in used]
    ranked = [p for p in presets if p.name.startswith(fragment)]
    ranked += [p for p in presets if fragment and fragment in p.name and p not in ranked]
    out: list[tuple[str, str]] = []
    for preset in ranked[:limit]:
        if plus:
            value = f"{head}+{preset.name}"
            out.append((clip(f"{value} ({preset.title})", 100), value[:100]))
        else:
            out.append((clip(f"{preset.emoji} {preset.name} — {preset.description}", 100), preset.name))
    return out


async def answer(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Reply to an interaction whatever state its response is in (an ephemeral answer where possible)."""
    text = clip(text)
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=ephemeral)
        else:
            await interaction.followup.send(text, ephemeral=ephemeral)
    except discord.HTTPException as exc:
        log.warning("could not answer interaction %s: %s", interaction.id, exc)


async def fail(core: BotCore, interaction: discord.Interaction, exc: BaseException) -> None:
    """The adapter's error sink for interactions: the core's text, ephemeral; a public "thinking…" is removed."""
    text = core.error_message(exc)
    if interaction.response.is_done():
        with contextlib.suppress(discord.HTTPException):  # ephemeral, already gone, or never sent
            await interaction.delete_original_response()
    await answer(interaction, text)
