"""Sending finished jobs: results as photos with caption and buttons, errors as text, each acked once sent.

A send that fails for a passing reason (network, Telegram 5xx, flood wait, Redis down) is not acked: the
delivery stream hands it out again later. A send Telegram refuses for good (bot blocked, chat gone, bad
request) is acked and logged, so one poisoned delivery never loops.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import Bot, InputMediaPhoto, Message
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from likeness.bot._core import BotCore, ResultMessage
from likeness.bot.telegram._common import PLATFORM, keyboard, reply_to, send_text
from likeness.bot.telegram._progress import ProgressTracker
from likeness.errors import LikenessError, UserError
from likeness.queue import Delivery, DeliveryConsumer

__all__ = ["DeliverySender"]

log = logging.getLogger("likeness.bot.telegram")

_PERMANENT = (Forbidden, BadRequest, ChatMigrated, InvalidToken)
_TRANSIENT = (RetryAfter, NetworkError)  # after _PERMANENT: BadRequest is a NetworkError in PTB
_KEYBOARD_TEXT = "⬆️ Your portraits. Reply to one with a change, or use the buttons."


class DeliverySender:
    """Consumes the Telegram delivery stream and sends each finished job to its chat."""

    def __init__(self, bot: Bot, core: BotCore, progress: ProgressTracker) -> None:
        self._bot = bot
        self._core = core
        self._progress = progress
        self._current: asyncio.Task[None] | None = None

    async def run(self, consumer: DeliveryConsumer) -> None:
        """Send deliveries until cancelled; Redis outages are waited out by the consumer.

        Cancelling `run` does not interrupt a delivery being sent (a photo sent but not acked would be sent
        again after a restart): `drain` waits for it.
        """
        while True:
            try:
                async for delivery in consumer:
                    self._current = asyncio.create_task(self._handle_and_ack(consumer, delivery))
                    await asyncio.shield(self._current)
            except Exception as exc:  # e.g. the stream or its group vanished: log, and keep the bot delivering
                log.error("delivery loop failed; restarting it", exc_info=exc)
                await asyncio.sleep(1.0)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the delivery in flight (after `run` was cancelled), so it is acked before shutdown."""
        if self._current is not None and not self._current.done():
            await asyncio.wait([self._current], timeout=timeout_s)

    async def _handle_and_ack(self, consumer: DeliveryConsumer, delivery: Delivery) -> None:
        if await self.handle(delivery):
            await consumer.ack_sent(delivery)

    async def handle(self, delivery: Delivery) -> bool:
        """Send one delivery; True when it is done with (sent, or refused for good) and may be acked."""
        try:
            try:
                await self.send(delivery)
            except ChatMigrated as exc:  # the group became a supergroup: same chat, new id, old messages gone
                moved = delivery.origin.model_copy(
                    update={"chat_id": str(exc.new_chat_id), "message_id": None, "progress_message_id": None}
                )
                await self.send(delivery.model_copy(update={"origin": moved}))
        except _PERMANENT as exc:
            log.warning(
                "delivery of job %s to chat %s refused by Telegram, dropped: %s",
                delivery.job_id,
                delivery.origin.chat_id,
                exc,
            )
            return True
        except _TRANSIENT as exc:
            log.warning("delivery of job %s failed for now (%s); it will be retried", delivery.job_id, exc)
            await asyncio.sleep(min(_retry_after(exc), 5.0))
            return False
        except UserError as exc:  # e.g. the images expired before they could be sent
            return await self._send_error(delivery, self._core.error_message(exc))
        except LikenessError as exc:
            log.warning("delivery of job %s failed for now (%s); it will be retried", delivery.job_id, exc)
            return False
        except Exception as exc:
            log.error("delivery of job %s failed unexpectedly; dropped", delivery.job_id, exc_info=exc)
            return True
        return True

    async def send(self, delivery: Delivery) -> None:
        self._progress.stop(delivery.job_id)
        rendered = await self._core.render(delivery)
        origin = delivery.origin
        sent = await self._send_result(int(origin.chat_id), origin.message_id, origin.thread_id, rendered)
        # Sent: from here on nothing may fail the delivery, or it would be sent again.
        try:
            if rendered.result_id is not None:
                for message in sent:
                    await self._core.link_message(PLATFORM, origin.chat_id, str(message.message_id), rendered)
        except LikenessError as exc:
            log.warning("job %s sent, but its messages could not be linked (%s)", delivery.job_id, exc)
        await self._delete_progress(delivery)

    async def _send_result(
        self, chat_id: int, request_id: str | None, thread: str | None, rendered: ResultMessage
    ) -> list[Message]:
        thread_id = int(thread) if thread is not None else None
        caption = rendered.text[: MessageLimit.CAPTION_LENGTH]
        markup = keyboard(rendered.buttons)
        if len(rendered.images) == 1:
            photo = await self._bot.send_photo(
                chat_id,
                rendered.images[0],
                caption=caption,
                has_spoiler=rendered.spoiler,
                reply_markup=markup,
                reply_parameters=reply_to(request_id),
                message_thread_id=thread_id,
            )
            return [photo]
        if rendered.images:
            media = [
                InputMediaPhoto(image, caption=caption if i == 0 else None, has_spoiler=rendered.spoiler)
                for i, image in enumerate(rendered.images)
            ]
            album = list(
                await self._bot.send_media_group(
                    chat_id, media, reply_parameters=reply_to(request_id), message_thread_id=thread_id
                )
            )
            if markup is not None:  # albums cannot carry buttons: they go on a message right under them
                album.append(
                    await send_text(
                        self._bot, chat_id, _KEYBOARD_TEXT, reply=album[0].message_id, thread=thread, markup=markup
                    )
                )
            return album
        return [await send_text(self._bot, chat_id, rendered.text, reply=request_id, thread=thread, markup=markup)]

    async def _send_error(self, delivery: Delivery, text: str) -> bool:
        origin = delivery.origin
        try:
            await send_text(self._bot, origin.chat_id, text, reply=origin.message_id, thread=origin.thread_id)
        except _PERMANENT:
            return True
        except TelegramError:
            return False
        await self._delete_progress(delivery)
        return True

    async def _delete_progress(self, delivery: Delivery) -> None:
        message_id = delivery.origin.progress_message_id
        if message_id is None:
            return
        try:
            await self._bot.delete_message(int(delivery.origin.chat_id), int(message_id))
        except TelegramError as exc:  # already gone, or too old to delete: nothing to clean up
            log.debug("progress message %s not deleted: %s", message_id, exc)


def _retry_after(exc: Exception) -> float:
    if isinstance(exc, RetryAfter):
        value = exc.retry_after
        return float(value if isinstance(value, int | float) else value.total_seconds())
    return 1.0
