"""Progress events of running jobs, written to Redis in order by one task (step events come from the engine
thread through `emit`)."""

from __future__ import annotations

import asyncio
import logging

from arq.connections import ArqRedis

from likeness.queue import ProgressEvent, add_progress

__all__ = ["ProgressPublisher"]

log = logging.getLogger(__name__)


class ProgressPublisher:
    """Writes progress events in order; a lost event is logged, never fatal (the delivery is what counts)."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self.queue: asyncio.Queue[tuple[ProgressEvent, asyncio.Future[None] | None]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="likeness-progress")

    def emit(self, event: ProgressEvent) -> None:
        """Queue an event (from the event loop; the engine thread goes through `call_soon_threadsafe`)."""
        self.queue.put_nowait((event, None))

    async def publish(self, event: ProgressEvent) -> None:
        """Emit and wait until written (after every event emitted before it)."""
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((event, done))
        await done

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            event, done = await self.queue.get()
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    add_progress(pipe, event)
                    await pipe.execute()
            except Exception as exc:  # progress is best effort; the delivery is what counts
                log.warning("job %s: progress event lost (%s)", event.job_id, type(exc).__name__)
            if done is not None and not done.done():
                done.set_result(None)
