"""Progress shown by editing one message (the interaction response, or a bot reply), at most once a second.

Discord rate-limits message edits; the worker reports steps up to 4 times a second. A reader task keeps the
newest text, a writer task sends it when at least `min_interval_s` passed since the last edit, so the
message always ends on the latest state without a burst of edits. `stop(job_id)` is called before the
delivery replaces the message with the result, so a late progress edit never overwrites the result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import discord

from likeness.bot._core import BotCore
from likeness.bot._tasks import cancel_and_wait
from likeness.errors import LikenessError

__all__ = ["ProgressTracker"]

log = logging.getLogger("likeness.bot.discord")

Editor = Callable[[str], Awaitable[object]]


class ProgressTracker:
    """One follower task per running job of this bot process."""

    def __init__(self, core: BotCore, *, min_interval_s: float = 1.0, idle_timeout_s: float = 900.0) -> None:
        self._core = core
        self._min_interval_s = min_interval_s
        self._idle_timeout_s = idle_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, job_id: str, edit: Editor, *, first: str) -> None:
        """Show `first` (the queue position) now, then follow `job_id`, calling `edit(text)` with new texts."""
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._follow(job_id, edit, first), name=f"likeness-progress-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    async def stop(self, job_id: str) -> None:
        """Stop following `job_id` and wait until no edit of it is in flight."""
        task = self._tasks.pop(job_id, None)
        if task is not None:
            await cancel_and_wait(task)

    async def close(self) -> None:
        for job_id in list(self._tasks):
            await self.stop(job_id)

    async def _follow(self, job_id: str, edit: Editor, first: str) -> None:
        # The first text goes through this task too, so `stop()` also covers it: never after the result.
        latest: list[str] = [first]
        shown: str | None = None
        changed = asyncio.Event()
        changed.set()
        ended = False

        async def read() -> None:
            nonlocal ended
            try:
                async for text in self._core.follow(job_id, idle_timeout_s=self._idle_timeout_s):
                    latest.append(text)
                    changed.set()
            except LikenessError as exc:
                log.debug("progress of %s stopped: %s", job_id, exc)
            finally:
                ended = True
                changed.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await changed.wait()
                changed.clear()
                if latest and latest[-1] != shown:
                    shown = latest[-1]
                    try:
                        await edit(shown)
                    except discord.HTTPException as exc:  # deleted message, lost permission: progress is optional
                        log.info("progress of %s: edit failed (%s); no more progress", job_id, exc)
                        return
                if ended:
                    return
                await asyncio.sleep(self._min_interval_s)
        finally:
            await cancel_and_wait(reader)
