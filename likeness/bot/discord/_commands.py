"""Slash commands and message context menus, and syncing them only when their definition changed.

Discord limits how many commands an application may create per day, so the bot never re-syncs blindly:
it hashes the JSON it would upload and keeps the hash in Redis (`likeness:discord:commands:<app id>`);
a boot with the same definitions makes no request. `likeness discord --sync` forces an upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Protocol

import discord
from discord import app_commands
from redis.exceptions import RedisError

from likeness.bot._core import BotCore
from likeness.bot.discord._common import preset_suggestions
from likeness.queue import keys
from likeness.requests import FORMATS, SEED_LIMIT, PortraitArgs


class CommandHost(Protocol):
    """The client that answers the commands (`LikenessClient`): its core, command tree and handlers."""

    core: BotCore
    tree: app_commands.CommandTree[Any]

    @property
    def application_id(self) -> int | None: ...

    async def portrait(
        self, interaction: discord.Interaction, args: PortraitArgs, selfie: discord.Attachment
    ) -> None: ...
    async def presets(self, interaction: discord.Interaction) -> None: ...
    async def cancel(self, interaction: discord.Interaction) -> None: ...
    async def forget(self, interaction: discord.Interaction) -> None: ...
    async def stats(self, interaction: discord.Interaction) -> None: ...
    async def server_settings(self, interaction: discord.Interaction, changes: dict[str, bool]) -> None: ...
    async def message_menu(self, interaction: discord.Interaction, message: discord.Message, *, edit: bool) -> None: ...


__all__ = ["CommandHost", "add_commands", "command_payload", "sync_commands"]

log = logging.getLogger("likeness.bot.discord")


def add_commands(tree: app_commands.CommandTree[Any], client: CommandHost) -> None:
    """/portrait, /presets, /cancel, /forget, /stats, /settings and the "Reroll" / "Edit image" message menus."""
    catalog = client.core.presets

    @tree.command(name="portrait", description="Turn a selfie into a portrait that still looks like you")
    @app_commands.describe(
        preset="Style, or a mix like ghibli+headshot (see /presets)",
        selfie="A clear, front-facing photo of you",
        prompt="Your own words, e.g. standing on a cliff at dawn",
        format="Shape of the picture (default: the style's own)",
        seed="The seed a caption shows, to make that picture again",
    )
    @app_commands.choices(format=[app_commands.Choice(name=name, value=name) for name in FORMATS])
    async def portrait(
        interaction: discord.Interaction,
        preset: str,
        selfie: discord.Attachment,
        prompt: str | None = None,
        format: app_commands.Choice[str] | None = None,
        seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None,
    ) -> None:
        args = PortraitArgs(
            preset=preset.strip(),
            prompt=(prompt or "").strip(),
            format=format.value if format else None,
            seed=seed,
        )
        await client.portrait(interaction, args, selfie)

    @portrait.autocomplete("preset")
    async def preset_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=label, value=value) for label, value in preset_suggestions(catalog, current)]

    @tree.command(name="presets", description="List the styles")
    async def presets(interaction: discord.Interaction) -> None:
        await client.presets(interaction)

    @tree.command(name="cancel", description="Stop your running portraits")
    async def cancel(interaction: discord.Interaction) -> None:
        await client.cancel(interaction)

    @tree.command(name="forget", description="Delete everything stored about you")
    async def forget(interaction: discord.Interaction) -> None:
        await client.forget(interaction)

    @tree.command(name="stats", description="Queue and safety numbers (bot admins only)")
    async def stats(interaction: discord.Interaction) -> None:
        await client.stats(interaction)

    @tree.command(name="settings", description="This server's Likeness settings (Manage Server)")
    @app_commands.describe(
        collaborate="Let everyone reroll and edit anyone's portraits",
        allow_nsfw="Allow flagged images behind a spoiler in age-restricted channels (if the operator allows it)",
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def settings(
        interaction: discord.Interaction, collaborate: bool | None = None, allow_nsfw: bool | None = None
    ) -> None:
        changes = {k: v for k, v in {"collaborate": collaborate, "allow_nsfw": allow_nsfw}.items() if v is not None}
        await client.server_settings(interaction, changes)

    async def reroll_menu(interaction: discord.Interaction, message: discord.Message) -> None:
        await client.message_menu(interaction, message, edit=False)

    async def edit_menu(interaction: discord.Interaction, message: discord.Message) -> None:
        await client.message_menu(interaction, message, edit=True)

    tree.add_command(app_commands.ContextMenu(name="Reroll", callback=reroll_menu))
    tree.add_command(app_commands.ContextMenu(name="Edit image", callback=edit_menu))


def command_payload(tree: app_commands.CommandTree[Any]) -> list[dict[str, object]]:
    """The global commands exactly as `tree.sync()` uploads them."""
    return [command.to_dict(tree) for command in tree.get_commands()]


async def sync_commands(client: CommandHost, *, force: bool = False) -> bool:
    """Upload the commands if their definition changed since the last upload (or `force`); True if uploaded."""
    payload = command_payload(client.tree)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    key = keys.discord_commands(client.application_id)
    redis = client.core.queue.redis
    if not force:
        try:
            stored = await redis.get(key)
        except RedisError as exc:  # syncing blindly could burn the daily limit; the old commands still work
            log.warning("Redis unavailable (%s): commands not checked for changes", type(exc).__name__)
            return False
        if stored is not None and (stored.decode() if isinstance(stored, bytes) else stored) == digest:
            log.info("slash commands unchanged; not syncing")
            return False
    try:
        await client.tree.sync()
    except discord.HTTPException as exc:  # e.g. the daily create limit: the commands Discord has keep working
        log.error("slash commands not synced: Discord answered %s %s", exc.status, exc.text)
        return False
    log.info("slash commands synced (%d commands)", len(payload))
    try:
        await redis.set(key, digest)
    except RedisError as exc:
        log.warning("Redis unavailable (%s): the next start syncs again", type(exc).__name__)
    return True
