"""arq's `Worker`, woken by new jobs instead of polling fast, and surviving Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from likeness.queue import keys
from likeness.worker._runner import JobRunner

__all__ = ["LikenessWorker", "run_job"]

log = logging.getLogger("likeness.worker")
_keys = keys


class LikenessWorker(Worker):
    """arq's `Worker`, woken by new jobs instead of polling fast, and surviving Redis outages.

    - Clients publish on `likeness:wake` after queueing a job (or asking to abort one): an idle worker starts
      it at once, and between wake-ups polls only every `poll_delay_s` (a safety net for deferred retries,
      jobs of crashed workers and missed messages). arq polls on a fixed timer instead: at the 5–10 ms it
      takes to start jobs promptly, an idle worker makes hundreds of Redis calls a second.
    - Jobs that are already running (arq keeps them in its queue until they end) are skipped with one
      pipelined check, not arq's three round trips each, on every poll.
    - arq's poll loop dies on the first Redis error (a WATCH on a dropped connection is never retried): this
      one logs, gives back the job slot arq leaked, and polls again.

    It overrides private parts of arq's `Worker`: arq is pinned from above in pyproject.toml, and
    tests/test_pinned_seams.py fails, saying what to re-check, when their shape changes.
    """

    def __init__(self, *args: Any, poll_delay: float = 0.5, **kwargs: Any) -> None:
        # arq's own timer is switched off: `_poll_iteration` waits for a wake-up or `poll_delay` itself.
        super().__init__(*args, poll_delay=0, **kwargs)
        self.idle_poll_s = float(poll_delay)
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def _poll_iteration(self) -> None:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="likeness-wake")
        self._wake.clear()  # before polling: a wake-up that arrives meanwhile triggers the next poll
        try:
            await super()._poll_iteration()
        except (RedisConnectionError, RedisTimeoutError, WatchError) as exc:
            log.warning("Redis unavailable while polling (%s); retrying in 1 s", type(exc).__name__)
            await asyncio.sleep(0)  # let done-callbacks of finished jobs release their slots first
            live = sum(1 for task in self.tasks.values() if not task.done())
            while self.job_counter > live:  # start_jobs took a slot for a job it never started
                self.job_counter -= 1
                self.sem.release()
            await asyncio.sleep(1)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_poll_s):
                await self._wake.wait()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start the ready jobs that nobody runs yet (arq re-checks each under WATCH before starting it).

        They are announced to the runner first: arq starts them one after another, with round trips in
        between, and the first must not take the others (already marked in progress) for jobs of other
        workers and skip its batch window.
        """
        ids = [raw.decode() for raw in job_ids if raw.decode() not in self.tasks]
        if not ids or self.job_counter >= self.max_jobs:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(_keys.ARQ_IN_PROGRESS + job_id)
            running = await pipe.execute()
        ready = [job_id for job_id, busy in zip(ids, running, strict=True) if not busy]
        runner: JobRunner = self.ctx["likeness"]  # set by `on_startup`, before the first poll
        runner.expect(ready)
        try:
            await super().start_jobs([job_id.encode() for job_id in ready])
        finally:
            for job_id in ready:
                task = self.tasks.get(job_id)
                if task is None or task.done():
                    runner.arrived(job_id)
                else:  # arq may end a job without calling us (expired, aborted before it ran)
                    task.add_done_callback(functools.partial(_arrived, runner, job_id))

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: a job waiting in the queue can start now

    async def _listen(self) -> None:
        """Set the wake-up event on every message of the wake channel; resubscribe after Redis outages."""
        while True:
            pubsub = self.pool.pubsub()
            try:
                await pubsub.subscribe(_keys.WAKE_CHANNEL)
                self._wake.set()  # jobs may have been queued while nobody listened
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._wake.set()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.debug("wake-up channel lost (%s); resubscribing in 1 s", type(exc).__name__)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await super().close()


def _arrived(runner: JobRunner, job_id: str, _task: asyncio.Task[Any]) -> None:
    runner.arrived(job_id)


async def run_job(ctx: dict[str, Any], job_id: str) -> str:
    """The one arq function: run one try of the job `job_id` (its payload is in Redis)."""
    runner: JobRunner = ctx["likeness"]
    return await runner.run(job_id, int(ctx["job_try"]))
