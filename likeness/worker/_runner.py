"""Running jobs: one try of a job from its payload to one delivery, with retries, deadlines and accounting.

Job life: started → step events (≤ 4/s) → images + ResultRecord stored under the random result id fixed in
the payload → one `Delivery` (guarded by `likeness:delivered:<job>`) → done. Outcomes:
- `UserError` (no face, ...): delivered at once as an error, no retry.
- other errors (`GenerationFailed`, single-request `OutOfMemory`, Redis hiccups): `arq.Retry` with backoff
  (1 s, 2 s, 4 s ...) up to `max_tries`, then delivered as an error.
- our own deadline (`job_timeout_s` − 2 s): delivered as `JobTimeout`.
- SIGTERM: arq cancels the job and puts it back at once; another worker starts it.
- SIGKILL: arq's `arq:in-progress:<job>` key expires after `job_timeout_s + 10` s, then another worker
  re-runs it. Seeds and the result id are fixed in the payload, so the re-run overwrites the same result
  and the delivery marker keeps it to ONE delivery. A job killed on every try gets a `GenerationFailed`
  delivery on try `max_tries + 1` (arq's own limit is one higher, so we always see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from arq import Retry
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeness.config import Settings
from likeness.errors import GenerationFailed, JobTimeout, LikenessError, ServiceError, UserError
from likeness.generation import Engine, GenerationResult
from likeness.queue import (
    AbuseLog,
    Admission,
    BlobStore,
    Delivery,
    JobPayload,
    ProgressEvent,
    append_delivery,
    keys,
)
from likeness.worker._batcher import MicroBatcher
from likeness.worker._inputs import EngineCalls
from likeness.worker._metrics import WorkerMetrics
from likeness.worker._publisher import ProgressPublisher
from likeness.worker._results import ResultWriter

__all__ = ["DEFAULT_MAX_TRIES", "JobRunner"]

log = logging.getLogger("likeness.worker")

DEFAULT_MAX_TRIES = 3
STEP_EVENTS_PER_S = 4.0
_DEADLINE_MARGIN_S = 2.0
_DURATIONS_KEPT = 20
_READY_PEEK = 64  # ready jobs looked at when deciding whether to wait for batch-mates
_keys = keys


class JobRunner:
    """Everything one worker process needs to run jobs; lives in arq's ctx from startup to shutdown."""

    def __init__(self, settings: Settings, redis: ArqRedis, engine: Engine, guard: Any, max_tries: int) -> None:
        self.settings = settings
        self.redis = redis
        self.engine = engine
        self.max_tries = max_tries
        self.metrics = WorkerMetrics()
        self.blobs = BlobStore(
            redis,
            selfie_ttl_s=settings.selfie_ttl_s,
            result_ttl_s=settings.result_ttl_s,
            upload_budget_bytes=settings.upload_budget_bytes,
        )
        self.batcher = MicroBatcher(
            engine,
            window_s=settings.batch_window_ms / 1000,
            max_batch=settings.max_batch,
            on_batch=self.metrics.batch_size.observe,
            more_coming=self._more_coming,
        )
        self.calls = EngineCalls(settings, self.blobs, engine, self.batcher)
        abuse = AbuseLog(redis, settings.abuse_retention_days)
        self.results = ResultWriter(settings, self.blobs, abuse, guard, engine.presets)
        self._arriving: set[str] = set()  # jobs being started here, not yet handed to the batcher (or ended)
        self.publisher = ProgressPublisher(redis)
        self._gauges_task = asyncio.get_running_loop().create_task(self._update_gauges(), name="likeness-gauges")

    async def close(self) -> None:
        self._gauges_task.cancel()
        await asyncio.gather(self._gauges_task, return_exceptions=True)
        await self.batcher.close()
        await self.publisher.close()

    def expect(self, job_ids: Iterable[str]) -> None:
        """Jobs the worker is starting: batch-mates on their way (`_more_coming`) until `arrived`."""
        self._arriving.update(job_ids)

    def arrived(self, job_id: str) -> None:
        """The job handed its request to the batcher, runs alone, ended, or was not started after all."""
        self._arriving.discard(job_id)

    async def run(self, job_id: str, job_try: int) -> str:
        """Run one try of a job; Redis failures outside the engine call retry the job like engine failures."""
        self.expect([job_id])
        arrived = functools.partial(self.arrived, job_id)
        try:
            return await self._run(job_id, job_try, arrived)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if job_try > self.max_tries:
                raise
            log.warning("job %s: Redis failed during try %d; retrying", job_id, job_try)
            raise Retry(defer=2**job_try) from exc
        finally:
            arrived()

    async def _run(self, job_id: str, job_try: int, arrived: Callable[[], None]) -> str:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(_keys.cancelled(job_id))
            pipe.exists(_keys.delivered(job_id))
            pipe.get(_keys.job(job_id))
            cancelled, delivered, raw = await pipe.execute()
        if cancelled:
            return "cancelled"
        if delivered:
            log.info("job %s: already delivered (re-run after a crash); nothing to do", job_id)
            owner = JobPayload.model_validate_json(raw).user_id if raw is not None else None
            await self._finish_accounting(job_id, owner)
            return "already delivered"
        if raw is None:
            log.warning("job %s: payload expired or forgotten; dropping it", job_id)
            return "expired"
        payload = JobPayload.model_validate_json(raw)
        if job_try > self.max_tries:
            log.error("job %s: gave up after %d tries (worker killed or timed out each time)", job_id, job_try - 1)
            await self._fail(payload, GenerationFailed())
            return "failed"
        started = time.monotonic()
        self.publisher.emit(ProgressEvent(job_id=job_id, stage="started"))
        log.info("job %s: %s (%s) try %d", job_id, payload.kind, payload.mode, job_try)
        try:
            async with asyncio.timeout(max(1.0, self.settings.job_timeout_s - _DEADLINE_MARGIN_S)):
                result, batch_size = await self._generate(payload, arrived)
        except UserError as exc:
            await self._fail(payload, exc)
            return exc.code
        except TimeoutError:
            await self._fail(payload, JobTimeout())
            return "timeout"
        except Exception as exc:
            cause = exc.code if isinstance(exc, LikenessError) else type(exc).__name__
            if job_try < self.max_tries:
                delay = 2 ** (job_try - 1)
                log.warning("job %s: try %d failed (%s); retrying in %d s", job_id, job_try, cause, delay)
                raise Retry(defer=delay) from exc
            log.error("job %s: failed for good (%s)", job_id, cause, exc_info=exc)
            await self._fail(payload, exc if isinstance(exc, ServiceError) else GenerationFailed())
            return cause
        record = await self.results.store(payload, result, batch_size)
        delivery = Delivery(job_id=job_id, kind=payload.kind, origin=payload.origin, result=record)
        appended = await append_delivery(
            self.redis, delivery, marker_ttl_s=self.settings.result_ttl_s, owners=payload.owners
        )
        if appended is None:
            if await self.redis.exists(_keys.cancelled(job_id)):  # cancelled or forgotten while it ran
                await self.blobs.delete_result(record)
            await self._finish_accounting(job_id, payload.user_id)
            return "cancelled"  # (or delivered by an earlier run of this job)
        elapsed = time.monotonic() - started
        await self._finish_accounting(job_id, payload.user_id, duration_s=elapsed)
        self.metrics.job_seconds.labels(payload.kind).observe(elapsed)
        await self.publisher.publish(ProgressEvent(job_id=job_id, stage="done"))
        log.info("job %s: done in %.2f s (batch of %d)", job_id, elapsed, batch_size)
        return record.result_id

    async def _generate(self, payload: JobPayload, arrived: Callable[[], None]) -> tuple[GenerationResult, int]:
        progress = self._progress_fn(payload.job_id)
        if payload.mode == "portrait":
            return await self.calls.portrait(payload, progress, arrived)
        arrived()  # edits and variations run alone
        return await self.calls.rework(payload, progress), 1

    async def _more_coming(self) -> bool:
        """Whether a batch-mate may still arrive: a job of ours on its way, or one ready in the queue that no
        worker has started (arq keeps running jobs in its queue until they finish)."""
        if self._arriving:
            return True
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            now_ms = int(time.time() * 1000)
            ready = await self.redis.zrangebyscore(_keys.ARQ_QUEUE, "-inf", now_ms, start=0, num=_READY_PEEK)
            if not ready:
                return False
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ready:
                    pipe.exists(_keys.ARQ_IN_PROGRESS + (job_id.decode() if isinstance(job_id, bytes) else job_id))
                started = await pipe.execute()
            return not all(started)
        return True

    def _progress_fn(self, job_id: str) -> Callable[[int, int], None]:
        loop = asyncio.get_running_loop()
        last = 0.0

        def progress(step: int, total: int) -> None:  # called from the engine thread
            nonlocal last
            now = time.monotonic()
            if step < total and now - last < 1 / STEP_EVENTS_PER_S:
                return
            last = now
            event = ProgressEvent(job_id=job_id, stage="step", step=step, total=total)
            loop.call_soon_threadsafe(self.publisher.emit, event)

        return progress

    async def _fail(self, payload: JobPayload, exc: BaseException) -> None:
        error = exc if isinstance(exc, LikenessError) else GenerationFailed()
        message = error.user_message
        if isinstance(error, ServiceError):
            message = f"{message} (reference {payload.job_id[:8]})"
        self.metrics.failures.labels(error.code).inc()
        day = _keys.stats_failures(_keys.today())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(day, error.code, 1)
            pipe.expire(day, 2 * _keys.DAY_S)
            await pipe.execute()
        await append_delivery(
            self.redis,
            Delivery(
                job_id=payload.job_id, kind=payload.kind, origin=payload.origin, error_code=error.code,
                user_message=message,
            ),
            marker_ttl_s=self.settings.result_ttl_s,
            owners=payload.owners,
        )  # fmt: skip
        await self._finish_accounting(payload.job_id, payload.user_id)
        await self.publisher.publish(ProgressEvent(job_id=payload.job_id, stage="failed"))
        log.info("job %s: failed (%s), delivered as an error", payload.job_id, error.code)

    async def _finish_accounting(self, job_id: str, user_id: str | None, duration_s: float | None = None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if user_id is not None:
                Admission.release_in(pipe, user_id, job_id)
            if duration_s is not None:
                pipe.lpush(_keys.DURATIONS, round(duration_s, 3))
                pipe.ltrim(_keys.DURATIONS, 0, _DURATIONS_KEPT - 1)
                pipe.expire(_keys.DURATIONS, _keys.DAY_S)
            await pipe.execute()

    async def _update_gauges(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                running = 0
                async for _ in self.redis.scan_iter(match=_keys.ARQ_IN_PROGRESS + "*", count=500):
                    running += 1
                depth = await self.redis.zcard(_keys.ARQ_QUEUE)
                self.metrics.running.set(running)
                self.metrics.queue_depth.set(max(0, depth - running))
                for platform in ("telegram", "discord", "playground"):
                    with contextlib.suppress(Exception):
                        info = await self.redis.xpending(_keys.deliveries(platform), _keys.DELIVERY_GROUP)
                        self.metrics.deliveries_pending.labels(platform).set(int(info["pending"]))
            await asyncio.sleep(5)
