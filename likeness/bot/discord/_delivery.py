"""Sending finished jobs to Discord: edit the interaction's response while its token lives, else reply in the
channel, else (no permission, channel gone) send it by DM. Each delivery is acked once it is done with.

Permanent refusals (403 missing permissions, 404 unknown channel, 400) fall through to the next place and
are finally acked and logged, so one poisoned delivery never loops; passing failures (5xx after
discord.py's own retries, network errors, Redis down) are not acked: the delivery stream hands the entry
out again later.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Sequence

import aiohttp
import discord

from likeness.bot._core import BotCore, ResultMessage
from likeness.bot.discord._common import EXTRA_APP, EXTRA_TOKEN, PLATFORM, THREAD_KEY, clip, token_alive
from likeness.bot.discord._progress import ProgressTracker
from likeness.bot.discord._views import result_view
from likeness.errors import LikenessError, UserError
from likeness.queue import Delivery, DeliveryConsumer, Origin

__all__ = ["DeliverySender", "edit_original_response", "result_files"]

log = logging.getLogger("likeness.bot.discord")

_TRANSIENT = (discord.DiscordServerError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
THREAD_HOWTO = (
    "✏️ Edit this portrait here: mention {bot} with what to change, e.g. “{bot} make the hair blue”. "
    "Each edit builds on the last one."
)
_CHANNEL_GONE_NOTE = "The channel where you asked for this (<#{channel}>) is gone, so here is your result:"
_NO_PERMISSION_NOTE = (
    "I couldn't post in <#{channel}>: I'm missing permissions there (Send Messages, Attach Files and "
    "Read Message History). Ask a server admin to grant them. Here is your result:"
)


async def edit_original_response(
    client: discord.Client,
    application_id: int,
    token: str,
    *,
    content: str,
    files: Sequence[discord.File] = (),
    view: discord.ui.View | None = None,
) -> discord.Message:
    """`Interaction.edit_original_response` from a stored token (the Interaction object is long gone): the
    response becomes `content`, `files` and `view` (None: no buttons).

    An interaction's token is a webhook of the application, and its response that webhook's message
    `@original`: PATCH /webhooks/{app}/{token}/messages/@original, the endpoint discord.py's own method uses
    (with `with_components=1` when there are buttons, which an application's own webhook may send).
    The view's buttons are `DynamicItem`s, dispatched by custom id whatever message they are on, so it does
    not matter that discord.py files the view under `@original` rather than the message's id.
    """
    webhook = discord.Webhook.partial(application_id, token, client=client)  # the client's session and state
    # `message_id` is typed `int`, but discord.py puts it in the path as given, and Discord takes `@original`.
    return await webhook.edit_message(  # type: ignore[call-overload]
        "@original",
        content=content,
        attachments=list(files),
        view=view,
    )


class DeliverySender:
    """Consumes the Discord delivery stream and sends each finished job where its requester will see it."""

    def __init__(self, client: discord.Client, core: BotCore, progress: ProgressTracker) -> None:
        self._client = client
        self._core = core
        self._progress = progress

    async def run(self, consumer: DeliveryConsumer) -> None:
        """Send deliveries until cancelled; Redis outages are waited out by the consumer."""
        async for delivery in consumer:
            if await self.handle(delivery):
                await consumer.ack_sent(delivery)

    async def handle(self, delivery: Delivery) -> bool:
        """Send one delivery; True when it is done with (sent, or refused everywhere) and may be acked."""
        try:
            await self.send(delivery)
        except _TRANSIENT as exc:
            log.warning("delivery of job %s failed for now (%s); it will be retried", delivery.job_id, exc)
            await asyncio.sleep(1.0)
            return False
        except discord.HTTPException as exc:
            log.warning(
                "delivery of job %s to channel %s refused by Discord (%s %s), dropped",
                delivery.job_id,
                delivery.origin.chat_id,
                exc.status,
                exc.text,
            )
            return True
        except UserError as exc:  # e.g. the images expired before they could be sent
            await self._send_text(delivery.origin, self._core.error_message(exc))
            return True
        except LikenessError as exc:
            log.warning("delivery of job %s failed for now (%s); it will be retried", delivery.job_id, exc)
            await asyncio.sleep(1.0)
            return False
        except Exception as exc:
            log.error("delivery of job %s failed unexpectedly; dropped", delivery.job_id, exc_info=exc)
            return True
        return True

    async def send(self, delivery: Delivery) -> None:
        await self._progress.stop(delivery.job_id)
        rendered = await self._core.render(delivery)
        message = await self._send(delivery.origin, rendered)
        if rendered.result_id is None or message is None:
            return
        # Sent: from here on nothing may fail the delivery, or it would be sent again.
        try:
            await self._core.link_message(PLATFORM, str(message.channel.id), str(message.id), rendered)
            if delivery.origin.thread_id:  # an edit asked for in a request's thread: later edits build on it
                await self._core.link_message(PLATFORM, delivery.origin.thread_id, THREAD_KEY, rendered)
            elif delivery.kind == "portrait" and self._core.settings.discord_threads:
                await self._open_thread(message, rendered)
        except LikenessError as exc:
            log.warning("job %s sent, but its message could not be linked (%s)", delivery.job_id, exc)

    async def _open_thread(self, message: discord.Message, rendered: ResultMessage) -> None:
        """A thread under a new portrait (setting `discord_threads`) where "@Likeness <change>" edits it."""
        channel = self._client.get_channel(message.channel.id)
        if not isinstance(channel, discord.TextChannel):  # DMs, threads, unknown channels: no thread
            return
        try:
            thread = await channel.get_partial_message(message.id).create_thread(
                name="✏️ Edits", auto_archive_duration=1440
            )
            await thread.send(THREAD_HOWTO.format(bot=self._client.user.mention if self._client.user else "me"))
        except discord.HTTPException as exc:  # no Create Public Threads permission: the reply flow still works
            log.info(
                "no thread for result %s in channel %s: %s %s", rendered.result_id, channel.id, exc.status, exc.text
            )
            return
        await self._core.link_message(PLATFORM, str(thread.id), THREAD_KEY, rendered)

    async def _send(self, origin: Origin, rendered: ResultMessage) -> discord.Message | None:
        """The result where the requester sees it: response → progress message → channel reply → DM."""
        if token_alive(origin):
            try:
                return await edit_original_response(
                    self._client,
                    int(origin.extra[EXTRA_APP]),
                    origin.extra[EXTRA_TOKEN],
                    content=clip(rendered.text),
                    files=result_files(rendered),
                    view=result_view(rendered.buttons),
                )
            except discord.HTTPException as exc:
                if exc.status >= 500:
                    raise
                # Response deleted (404), token refused (401: expired early, 403): reply in the channel.
                log.info("interaction response unusable (%s); replying in the channel instead", exc.status)
        channel = self._client.get_partial_messageable(int(origin.chat_id))
        try:
            if origin.progress_message_id and EXTRA_TOKEN not in origin.extra:
                try:  # our own progress reply: it becomes the result
                    return await channel.get_partial_message(int(origin.progress_message_id)).edit(
                        content=clip(rendered.text),
                        attachments=result_files(rendered),
                        view=result_view(rendered.buttons),
                    )
                except discord.NotFound:
                    pass
            reference = None
            if origin.message_id:
                reference = discord.MessageReference(
                    message_id=int(origin.message_id), channel_id=int(origin.chat_id), fail_if_not_exists=False
                )
            return await channel.send(
                clip(rendered.text),
                files=result_files(rendered),
                view=result_view(rendered.buttons),  # type: ignore[arg-type]
                reference=reference,  # type: ignore[arg-type]
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except (discord.Forbidden, discord.NotFound) as exc:
            log.warning("cannot post in channel %s (%s %s); sending by DM", origin.chat_id, exc.status, exc.text)
            note = _NO_PERMISSION_NOTE if isinstance(exc, discord.Forbidden) else _CHANNEL_GONE_NOTE
            return await self._send_dm(origin, rendered, note.format(channel=origin.chat_id))

    async def _send_dm(self, origin: Origin, rendered: ResultMessage, note: str) -> discord.Message | None:
        try:
            dm = await self._client.create_dm(discord.Object(int(origin.user_id)))
            return await dm.send(
                clip(f"{note}\n{rendered.text}"),
                files=result_files(rendered),
                view=result_view(rendered.buttons),  # type: ignore[arg-type]
            )
        except (discord.Forbidden, discord.NotFound) as exc:
            log.warning("user %s takes no DMs either (%s); job result not shown", origin.user_id, exc.status)
            return None

    async def _send_text(self, origin: Origin, text: str) -> None:
        try:
            await self._send(origin, ResultMessage(text=text))
        except discord.HTTPException as exc:
            log.warning("could not tell user %s about a failed delivery: %s", origin.user_id, exc)


def result_files(rendered: ResultMessage) -> list[discord.File]:
    """Fresh File objects (discord.py consumes them); spoilered when the safety decision says so."""
    stamp = int(time.time())
    return [
        discord.File(io.BytesIO(data), filename=f"likeness-{stamp}-{index + 1}.png", spoiler=rendered.spoiler)
        for index, data in enumerate(rendered.images)
    ]
