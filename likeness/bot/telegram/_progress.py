"""Progress messages: one message per job, edited as the job moves, throttled to Telegram's edit limits."""

from __future__ import annotations

import asyncio
import logging
import time

from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from likeness.bot._core import BotCore
from likeness.bot._tasks import cancel_and_wait
from likeness.errors import LikenessError

__all__ = ["GROUP_EDIT_INTERVAL_S", "PRIVATE_EDIT_INTERVAL_S", "ProgressTracker"]

log = logging.getLogger("likeness.bot.telegram")

# Telegram answers frequent edits with 429 retry_after; groups are limited harder than private chats.
GROUP_EDIT_INTERVAL_S = 3.0
PRIVATE_EDIT_INTERVAL_S = 1.0


class ProgressTracker:
    """Follows jobs in background tasks, each editing its job's progress message (this replica only)."""

    def __init__(self, bot: Bot, core: BotCore, *, idle_timeout_s: float) -> None:
        self._bot = bot
        self._core = core
        self._idle_timeout_s = idle_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, job_id: str, chat_id: int, message_id: int, shown: str, *, private: bool) -> None:
        """Edit message `message_id` (now showing `shown`) with the progress of `job_id` until it ends."""
        self.stop(job_id)
        interval = PRIVATE_EDIT_INTERVAL_S if private else GROUP_EDIT_INTERVAL_S
        follow = self._follow(job_id, chat_id, message_id, shown, interval)
        task = asyncio.create_task(follow, name=f"progress:{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda t: self._tasks.pop(job_id, None) if self._tasks.get(job_id) is t else None)

    def stop(self, job_id: str) -> None:
        """Stop editing (the delivery takes the message over); a no-op for jobs followed elsewhere."""
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, job_id: str, chat_id: int, message_id: int, shown: str, interval: float) -> None:
        latest = shown
        ended = False
        changed = asyncio.Event()

        async def read() -> None:
            nonlocal latest, ended
            try:
                async for text in self._core.follow(job_id, idle_timeout_s=self._idle_timeout_s):
                    latest = text
                    changed.set()
            except LikenessError as exc:  # Redis gone: stop showing progress; the delivery still arrives
                log.info("progress of %s: %s", job_id, exc)
            finally:
                ended = True
                changed.set()

        reader = asyncio.create_task(read())
        next_edit = time.monotonic() + interval
        try:
            while True:
                await changed.wait()
                changed.clear()
                if ended:
                    return  # the job ended: its delivery replaces this message
                delay = next_edit - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if ended:
                    return
                if latest == shown:
                    continue
                text = latest
                try:
                    await self._bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)
                except RetryAfter as exc:
                    retry = exc.retry_after
                    next_edit = time.monotonic() + (retry if isinstance(retry, int | float) else retry.total_seconds())
                    changed.set()
                    continue
                except BadRequest as exc:
                    if "not modified" not in exc.message.lower():
                        log.info("progress message %s in %s is gone (%s); no more edits", message_id, chat_id, exc)
                        return
                except Forbidden:
                    return
                except NetworkError as exc:
                    log.info("progress edit failed (%s); the next event retries", exc)
                    next_edit = time.monotonic() + interval
                    continue
                shown = text
                next_edit = time.monotonic() + interval
        finally:
            await cancel_and_wait(reader)
