"""The Discord client: an `AutoShardedClient` whose handlers map Discord events to `BotCore` calls.

Every request is checked before Discord sees a public answer (allowlist, owner, preset, attachment), so a
refusal is an ephemeral message and costs no GPU time; accepted requests are acknowledged with a public
"thinking…" within Discord's 3 s and the response is then edited with progress and finally the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from likeness.bot._buttons import Action
from likeness.bot._core import BotCore
from likeness.bot._tasks import cancel_and_wait
from likeness.bot._texts import EDIT_HOWTO
from likeness.bot.discord._commands import add_commands, sync_commands
from likeness.bot.discord._common import (
    PLATFORM,
    THREAD_KEY,
    answer,
    check_attachment,
    clip,
    fail,
    guild_extra,
    interaction_origin,
    is_nsfw,
    read_attachment,
)
from likeness.bot.discord._delivery import DeliverySender, result_files
from likeness.bot.discord._progress import ProgressTracker
from likeness.bot.discord._views import EditModal, ResultButton, modal_instruction
from likeness.config import Settings
from likeness.errors import LikenessError, NotAllowed, NotRequester
from likeness.queue import DeliveryConsumer, Origin, Ticket
from likeness.requests import PortraitArgs

__all__ = ["REROLL_EMOJI", "LikenessClient"]

log = logging.getLogger("likeness.bot.discord")

REROLL_EMOJI = frozenset({"🔄", "🔁", "🎲", "👎"})
_EMOJI_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")
_NOT_A_RESULT = "That message isn't one of my portraits (or it has expired). Start a new one with /portrait."
_MENTION_HELP = "Reply to one of my portraits and mention me with what to change, e.g. “make the hair blue”."

Submit = Callable[[Origin], Awaitable[Ticket]]


def intents() -> discord.Intents:
    """Guilds, guild messages, reactions and DMs; no privileged intent (mentions of the bot carry content)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.guild_reactions = True
    wanted.dm_messages = True
    wanted.dm_reactions = True
    return wanted


class LikenessClient(discord.AutoShardedClient):
    """The bot. Without a shard count, discord.py asks `GET /gateway/bot` for the gateway and shard count."""

    def __init__(
        self, settings: Settings, core: BotCore, *, force_sync: bool = False, consumer_name: str | None = None
    ) -> None:
        super().__init__(intents=intents(), allowed_mentions=discord.AllowedMentions.none())
        self.settings = settings
        self.core = core
        self.force_sync = force_sync
        self.consumer_name = consumer_name or f"discord-{socket.gethostname()}"
        self.tree: app_commands.CommandTree[LikenessClient] = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        add_commands(self.tree, self)
        self.progress = ProgressTracker(core)
        self._sender = DeliverySender(self, core, self.progress)
        self._consumer: DeliveryConsumer | None = None
        self._delivery_task: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ResultButton)
        await sync_commands(self, force=self.force_sync)
        self._consumer = DeliveryConsumer(self.core.queue.redis, PLATFORM, self.consumer_name, block_s=0.5)
        self._delivery_task = asyncio.create_task(self._sender.run(self._consumer), name="likeness-discord-delivery")

    async def close(self) -> None:
        if self._delivery_task is not None:
            await cancel_and_wait(self._delivery_task)
            self._delivery_task = None
        if self._consumer is not None:
            await self._consumer.close()
        await self.progress.close()
        await super().close()

    async def on_ready(self) -> None:
        log.info("Discord bot ready as %s in %d server(s)", self.user, len(self.guilds))

    # --- slash commands ----------------------------------------------------------------------------

    async def portrait(self, interaction: discord.Interaction, args: PortraitArgs, selfie: discord.Attachment) -> None:
        """/portrait: refuse privately, or acknowledge publicly, download, enqueue and show progress."""
        try:
            check_attachment(selfie, self.settings)
            spec = await self.core.check_portrait(interaction_origin(interaction, message_id=None), args)
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return

        async def submit(origin: Origin) -> Ticket:
            data = await read_attachment(selfie, self.settings)
            return await self.core.portrait(origin, spec, data, key=str(interaction.id))

        await self._start(interaction, submit)

    async def presets(self, interaction: discord.Interaction) -> None:
        chunks = _chunks(self.core.presets_text())
        await interaction.response.send_message(chunks[0], ephemeral=True)
        for chunk in chunks[1:]:
            await interaction.followup.send(chunk, ephemeral=True)

    async def cancel(self, interaction: discord.Interaction) -> None:
        await self._simple(interaction, self.core.cancel)

    async def forget(self, interaction: discord.Interaction) -> None:
        await self._simple(interaction, self.core.forget)

    async def stats(self, interaction: discord.Interaction) -> None:
        await self._simple(interaction, self.core.stats)

    async def server_settings(self, interaction: discord.Interaction, changes: dict[str, bool]) -> None:
        """/settings: show or change this server's community settings (members with Manage Server only)."""
        permissions = interaction.permissions
        if interaction.guild_id is None or not (permissions.manage_guild or permissions.administrator):
            await answer(interaction, "⚠️ Only members who may manage this server can change its settings.")
            return
        try:
            if changes:
                current = await self.core.community.update(PLATFORM, str(interaction.guild_id), **changes)
            else:
                current = await self.core.community.get(PLATFORM, str(interaction.guild_id))
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return
        lines = ["⚙️ Settings of this server:"]
        lines += [f"• collaborate: {current.collaborate}", f"• allow_nsfw: {current.allow_nsfw}"]
        await answer(interaction, "\n".join(lines))

    async def message_menu(self, interaction: discord.Interaction, message: discord.Message, *, edit: bool) -> None:
        """The "Reroll" / "Edit image" context menus: the same as the buttons under the message."""
        result_id = await self._result_of(interaction, message.channel.id, message.id)
        if result_id is not None:
            await self.on_result_button(interaction, Action.EDIT if edit else Action.REROLL, result_id)

    # --- buttons and the edit dialog ---------------------------------------------------------------

    async def on_result_button(self, interaction: discord.Interaction, action: Action, result_id: str) -> None:
        """A press of 🔄 / ✏️ / ✨ / 📥 under a result (also after a restart: the id carries the result)."""
        if action is Action.FULL_SIZE:
            await self._full_size(interaction, result_id)
            return
        try:
            await self.core.check_may_change(interaction_origin(interaction, message_id=None), result_id)
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return
        if action is Action.EDIT:
            await interaction.response.send_modal(EditModal(result_id))
            return
        key = str(interaction.id)
        if action is Action.VARIATIONS:
            await self._start(interaction, lambda o: self.core.variations(o, result_id, key=key))
        else:
            await self._start(interaction, lambda o: self.core.reroll(o, result_id, key=key))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Edit-dialog submits, answered here by custom id so that a dialog opened before a restart works."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        parsed = modal_instruction(dict(interaction.data or {}))
        if parsed is None:
            return
        result_id, instruction = parsed
        if not instruction.strip():
            await answer(interaction, EDIT_HOWTO)
            return
        try:
            await self.core.check_may_change(interaction_origin(interaction, message_id=None), result_id)
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return
        key = str(interaction.id)
        await self._start(interaction, lambda o: self.core.edit(o, result_id, instruction, key=key))

    async def _full_size(self, interaction: discord.Interaction, result_id: str) -> None:
        """📥: the PNG file(s), privately, through the core's gate (owner, allowlist, ban, this channel's
        safety decision): a forged custom id gets nothing."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            origin = interaction_origin(interaction, message_id=None)
            rendered = await self.core.full_size(origin, result_id)
            if not rendered.images:
                await interaction.followup.send(clip(rendered.text), ephemeral=True)
                return
            await interaction.followup.send("📥 Full size:", files=result_files(rendered), ephemeral=True)
        except Exception as exc:
            await fail(self.core, interaction, exc)

    # --- reactions and replies ---------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """🔄 🔁 🎲 👎 on a result → reroll. Only the requester's reactions count (others are ignored quietly:
        reacting is a social gesture in a shared channel, and an answer to each one would be noise)."""
        if self.user is None or payload.user_id == self.user.id:
            return
        if _EMOJI_MODIFIERS.sub("", str(payload.emoji)) not in REROLL_EMOJI:
            return
        try:
            result_id = await self.core.result_for_message(PLATFORM, str(payload.channel_id), str(payload.message_id))
            if result_id is None:
                return
            channel = self.get_channel(payload.channel_id) or self.get_partial_messageable(payload.channel_id)
            origin = self._message_origin(channel, payload.user_id, payload.message_id, payload.guild_id)
            await self.core.check_may_change(origin, result_id)
        except (NotRequester, NotAllowed):
            return
        except LikenessError as exc:
            log.info("reaction reroll on %s refused: %s", payload.message_id, exc)
            return
        target = channel.get_partial_message(payload.message_id)  # type: ignore[union-attr]
        await self._start_in_channel(target, origin, lambda o: self.core.reroll(o, result_id), first="🔄 Rerolling…")

    async def on_message(self, message: discord.Message) -> None:
        """A reply to a result that mentions the bot ("@Likeness make the hair blue") → an edit of it."""
        if message.author.bot or self.user is None:
            return
        in_dm = message.guild is None
        if not in_dm and self.user not in message.mentions:
            return
        reference = message.reference
        instruction = re.sub(rf"<@!?{self.user.id}>", " ", message.content or "").strip()
        channel_id = str(message.channel.id)
        # A reply names its result; in a request's thread, a plain mention means the thread's latest result.
        target = str(reference.message_id) if reference is not None and reference.message_id else THREAD_KEY
        try:
            result_id = await self.core.result_for_message(PLATFORM, channel_id, target)
        except LikenessError as exc:
            await self._reply(message, self.core.error_message(exc))
            return
        if result_id is None:
            if not in_dm:
                await self._reply(message, _MENTION_HELP if target == THREAD_KEY else _NOT_A_RESULT)
            return
        if not instruction:
            await self._reply(message, EDIT_HOWTO)
            return
        guild_id = None if message.guild is None else message.guild.id
        origin = self._message_origin(message.channel, message.author.id, message.id, guild_id)
        if target == THREAD_KEY:
            origin = origin.model_copy(update={"thread_id": channel_id})
        try:
            await self.core.check_may_change(origin, result_id)
        except Exception as exc:
            await self._reply(message, self.core.error_message(exc))
            return
        key = f"reply:{message.id}"
        await self._start_in_channel(
            message,
            origin,
            lambda o: self.core.edit(o, result_id, instruction, key=key),
            first="✏️ Editing…",
        )

    # --- shared -----------------------------------------------------------------------------------

    async def _start(self, interaction: discord.Interaction, submit: Submit) -> None:
        """Acknowledge publicly (the response becomes progress, then the result), enqueue, follow."""
        callback = await interaction.response.defer(thinking=True)
        message_id = getattr(callback, "message_id", None)
        try:
            if message_id is None:
                message_id = (await interaction.original_response()).id
            ticket = await submit(interaction_origin(interaction, message_id=message_id))
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return
        self.progress.start(
            ticket.job_id,
            lambda text: interaction.edit_original_response(content=text),
            first=self.core.ticket_text(ticket),
        )

    async def _start_in_channel(
        self, target: discord.Message | discord.PartialMessage, origin: Origin, submit: Submit, *, first: str
    ) -> None:
        """A job asked for in the channel (reaction, reply): a progress reply that later becomes the result."""
        progress = await self._reply(target, first)
        if progress is not None:
            origin = origin.model_copy(update={"progress_message_id": str(progress.id)})
        try:
            ticket = await submit(origin)
        except Exception as exc:
            text = self.core.error_message(exc)
            if progress is not None:
                with contextlib.suppress(discord.HTTPException):
                    await progress.edit(content=clip(text))
            return
        if progress is not None:
            queued = self.core.ticket_text(ticket)
            self.progress.start(ticket.job_id, lambda text: progress.edit(content=text), first=queued)

    async def _reply(self, target: discord.Message | discord.PartialMessage, text: str) -> discord.Message | None:
        """Reply in the channel; None when the bot may not post there (the result then goes by DM)."""
        try:
            return await target.reply(clip(text), mention_author=False)
        except discord.HTTPException as exc:
            log.info("cannot reply in channel %s: %s %s", target.channel.id, exc.status, exc.text)
            return None

    def _message_origin(self, channel: object, user_id: int, message_id: int, guild_id: int | None) -> Origin:
        return Origin(
            platform=PLATFORM,
            chat_id=str(getattr(channel, "id")),  # noqa: B009 - channel types differ, all have an id
            user_id=str(user_id),
            message_id=str(message_id),
            age_restricted=is_nsfw(channel),
            extra=guild_extra(guild_id),
        )

    async def _result_of(self, interaction: discord.Interaction, channel_id: int, message_id: int) -> str | None:
        try:
            result_id = await self.core.result_for_message(PLATFORM, str(channel_id), str(message_id))
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return None
        if result_id is None:
            await answer(interaction, _NOT_A_RESULT)
        return result_id

    async def _simple(self, interaction: discord.Interaction, action: Callable[[Origin], Awaitable[str]]) -> None:
        try:
            text = await action(interaction_origin(interaction, message_id=None))
        except Exception as exc:
            await fail(self.core, interaction, exc)
            return
        await answer(interaction, text)

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Anything a command handler did not expect: logged with a reference, the user gets the generic text."""
        await fail(self.core, interaction, getattr(error, "original", error))


def _chunks(text: str, limit: int = 2000) -> list[str]:
    """Split a long answer at line breaks into messages Discord accepts."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines():
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    chunks.append(clip(current, limit))
    return chunks
