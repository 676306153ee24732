"""The GPU worker: an arq `Worker` that runs jobs through the engine, batched, and delivers every outcome.

The only module of `likeness.queue` that imports `likeness.generation` (lazily, in the default factories).

Job life: started → step events (≤ 4/s) → images + ResultRecord stored under the random result id fixed in
the payload → one `Delivery` (guarded by `likeness:delivered:<job>`) → done. Outcomes:
- `UserError` (no face, ...): delivered at once as an error, no retry.
- other errors (`GenerationFailed`, single-request `OutOfMemory`, Redis hiccups): `arq.Retry` with backoff
  (1 s, 2 s, 4 s ...) up to `max_tries`, then delivered as an error.
- our own deadline (`job_timeout_s` − 2 s): delivered as `JobTimeout`.
- SIGTERM: arq cancels the job and puts it back at once; another worker starts it.
- SIGKILL: arq's `arq:in-progress:<job>` key expires after `job_timeout_s + 10` s, then another worker
  re-runs it. Seeds and the result id are fixed in the payload, so the re-run overwrites the same result
  and the delivery marker keeps it to ONE delivery. A job killed on every try gets a
  `GenerationFailed` delivery on try `max_tries + 1` (arq's own limit is one higher, so we always see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from arq import Retry
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from likeness.config import Settings
from likeness.errors import GenerationFailed, JobTimeout, LikenessError, ServiceError, UserError
from likeness.images import load_image
from likeness.queue import _keys
from likeness.queue._abuse import AbuseLog
from likeness.queue._admission import Admission
from likeness.queue._batcher import MicroBatcher
from likeness.queue._blobs import BlobStore
from likeness.queue._delivery import append_delivery
from likeness.queue._metrics import WorkerMetrics
from likeness.queue._models import Delivery, JobPayload, ProgressEvent, ResultRecord
from likeness.queue._progress import add_progress

__all__ = ["DEFAULT_MAX_TRIES", "LikenessWorker", "run_worker", "worker_in_loop", "worker_settings"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TRIES = 3
STEP_EVENTS_PER_S = 4.0
_DEADLINE_MARGIN_S = 2.0
_DURATIONS_KEPT = 20
_READY_PEEK = 64  # ready jobs looked at when deciding whether to wait for batch-mates

EngineFactory = Callable[[Settings], Any]
RequestFactory = Callable[..., Any]
GuardFactory = Callable[[Settings], Any]


def _default_engine(settings: Settings) -> Any:
    from likeness.generation import Engine

    return Engine.load(settings)


def _default_guard(settings: Settings) -> Any:
    from likeness.generation._nsfw import load_nsfw_guard

    return load_nsfw_guard(settings)


def _default_request(**fields: Any) -> Any:
    from likeness.generation import PortraitRequest

    return PortraitRequest(**fields)


class _Publisher:
    """Writes progress events in order through one task (step events come from the engine thread)."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self.queue: asyncio.Queue[tuple[ProgressEvent, asyncio.Future[None] | None]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="likeness-progress")

    def emit(self, event: ProgressEvent) -> None:
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


class JobRunner:
    """Everything one worker process needs to run jobs; lives in arq's ctx from startup to shutdown."""

    def __init__(
        self,
        settings: Settings,
        redis: ArqRedis,
        engine: Any,
        request_factory: RequestFactory,
        max_tries: int,
        guard: Any,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.engine = engine
        self.guard = guard
        self.abuse = AbuseLog(redis, settings.abuse_retention_days)
        self.request_factory = request_factory
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
        self._arriving: set[str] = set()  # jobs being started here, not yet handed to the batcher (or ended)
        self.publisher = _Publisher(redis)
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
        record = await self._store(payload, result, batch_size)
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

    async def _generate(self, payload: JobPayload, arrived: Callable[[], None]) -> tuple[Any, int]:
        if payload.mode != "portrait":
            arrived()  # edits and variations run alone
            return await self._rework(payload), 1
        assert payload.portrait is not None and payload.selfie_blob_id is not None
        params = payload.portrait
        selfie = await self._image(payload.selfie_blob_id)
        request = self.request_factory(
            selfie=selfie,
            preset=self.engine.presets.resolve(params.preset),
            prompt=params.prompt,
            format=params.format,
            seeds=tuple(payload.seeds),
            identity_scale=params.identity_scale,
        )
        arrived()
        return await self.batcher.submit(request, self._progress_fn(payload.job_id))

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

    async def _rework(self, payload: JobPayload) -> Any:
        """Edits and variations of an earlier image: one engine call each, on the engine thread."""
        from likeness.generation import EditRequest, load_user_mask
        from likeness.instructions import parse_instruction

        assert payload.selfie_blob_id is not None and payload.source_blob_id is not None
        assert payload.parent_result_id is not None
        selfie = await self._image(payload.selfie_blob_id)
        source = await self._image(payload.source_blob_id)
        parent = await self.blobs.get_result(payload.parent_result_id)
        spec = str(parent.metadata.get("preset") or (payload.portrait.preset if payload.portrait else ""))
        preset = self.engine.presets.resolve(spec)
        progress = self._progress_fn(payload.job_id)
        call: Callable[[], Any]
        if payload.mode == "edit":
            assert payload.edit is not None
            mask = None
            if payload.edit.mask_blob_id is not None:
                mask = await asyncio.to_thread(
                    load_user_mask,
                    await self.blobs.get(payload.edit.mask_blob_id),
                    max_bytes=self.settings.max_upload_bytes,
                    max_pixels=self.settings.max_image_pixels,
                )
            instruction = parse_instruction(
                payload.edit.instruction, has_mask=mask is not None, max_chars=self.settings.max_prompt_chars
            )
            edit = EditRequest(
                source=source, selfie=selfie, instruction=instruction, preset=preset, mask=mask,
                seeds=tuple(payload.seeds),
            )  # fmt: skip
            call = functools.partial(self.engine.edit, edit, progress)
        else:
            prompt = payload.portrait.prompt if payload.portrait else ""
            call = functools.partial(
                self.engine.variation, source, selfie, preset, tuple(payload.seeds), progress=progress, prompt=prompt
            )
        return await asyncio.get_running_loop().run_in_executor(self.batcher.executor, call)

    async def _image(self, blob_id: str) -> Any:
        # Decoding big images takes 100+ ms: off the loop, so batching and heartbeats keep time.
        return await asyncio.to_thread(
            load_image,
            await self.blobs.get(blob_id),
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_image_pixels,
        )

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

    async def _store(self, payload: JobPayload, result: Any, batch_size: int) -> ResultRecord:
        """Classify, mark as AI-generated and store the images with the result record (one transaction)."""
        # An edit keeps the unmasked pixels of its (already marked) source byte-identical: mark only the rest.
        source = (
            await self.blobs.get(payload.source_blob_id) if payload.mode == "edit" and payload.source_blob_id else None
        )
        scores, pngs = await asyncio.to_thread(self._classify_and_mark, result, source)
        for score in scores:
            if score >= self.settings.nsfw_threshold:
                origin = payload.origin
                detail = f"nsfw={score:.2f}"
                await self.abuse.record("flag", origin.user_id, origin.platform, origin.chat_id, payload.job_id, detail)
        images = dict(zip(_keys.image_ids(payload.result_id, len(pngs)), pngs, strict=True))
        record = ResultRecord(
            result_id=payload.result_id,
            parent_id=payload.parent_result_id,
            job_id=payload.job_id,
            kind=payload.kind,
            request=payload,
            seeds=tuple(result.seeds),
            image_blob_ids=tuple(images),
            metadata={
                **result.metadata,
                "nsfw_scores": [round(float(score), 4) for score in scores],
                "batch_size": batch_size,
                "worker": socket.gethostname(),
            },
            owner_user_id=payload.user_id,
            origin=payload.origin,
        )
        await self.blobs.put_result(record, images)
        return record

    def _classify_and_mark(self, result: Any, source: bytes | None) -> tuple[list[float], list[bytes]]:
        """Off the event loop, in one thread hop: NSFW scores and the marked PNGs of `result`'s images."""
        from likeness.generation._output import finish_images

        limits = {"max_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_image_pixels}
        marked_source = None if source is None else load_image(source, **limits)
        return finish_images(
            result.images, result.metadata, guard=self.guard, watermark=self.settings.watermark,
            marked_source=marked_source,
        )  # fmt: skip

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
        ids = [job_id for job_id in job_ids if job_id.decode() not in self.tasks]
        if not ids or self.job_counter >= self.max_jobs:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(_keys.ARQ_IN_PROGRESS + job_id.decode())
            running = await pipe.execute()
        ready = [job_id.decode() for job_id, busy in zip(ids, running, strict=True) if not busy]
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
                    task.add_done_callback(lambda _task, job_id=job_id: runner.arrived(job_id))

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


async def _run_job(ctx: dict[str, Any], job_id: str) -> str:
    runner: JobRunner = ctx["likeness"]
    return await runner.run(job_id, int(ctx["job_try"]))


def worker_settings(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    request_factory: RequestFactory | None = None,
    guard_factory: GuardFactory | None = None,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> dict[str, Any]:
    """Keyword arguments for `LikenessWorker` (an `arq.worker.Worker`), built from `settings`.

    The engine is loaded once in `on_startup` (in a thread, so the health check keeps ticking) and
    closed on shutdown, with the output guard (NSFW classifier). `engine_factory`/`request_factory`/
    `guard_factory` default to `likeness.generation`'s Engine, PortraitRequest and `load_nsfw_guard`;
    tests pass fakes.
    """
    make_engine = engine_factory or _default_engine
    make_request = request_factory or _default_request
    make_guard = guard_factory or _default_guard

    async def on_startup(ctx: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(None, make_engine, settings)
        guard = await loop.run_in_executor(None, make_guard, settings)
        runner = JobRunner(settings, ctx["redis"], engine, make_request, max_tries, guard)
        ctx["likeness"] = runner
        if settings.metrics_port:
            runner.metrics.serve(settings.metrics_port)
        log.info("worker ready: model %s, max batch %d", getattr(engine, "model_key", "?"), settings.max_batch)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runner: JobRunner | None = ctx.get("likeness")
        if runner is not None:
            await runner.close()
            runner.engine.close()

    redis_settings = dataclasses.replace(
        RedisSettings.from_dsn(settings.redis_dsn),
        # Ride out a Redis restart (~30 s) instead of crashing the worker on the first refused command.
        retry=RedisRetry(ExponentialBackoff(cap=3.0, base=0.1), 12),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        conn_retries=30,
    )
    return {
        "functions": [func(_run_job, name=_keys.ARQ_FUNCTION, max_tries=max_tries + 1)],
        "redis_settings": redis_settings,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "poll_delay": settings.poll_delay_s,
        "job_timeout": settings.job_timeout_s,
        # One batch worth of jobs per worker: enough to batch, and a backlog stays in the (fair) arq queue
        # instead of being pulled ahead of other users' jobs or away from other workers.
        "max_jobs": max(1, settings.max_batch),
        "allow_abort_jobs": True,
        "keep_result": 60,
        "health_check_interval": 10,
        "max_tries": max_tries + 1,
    }


@contextlib.asynccontextmanager
async def worker_in_loop(
    settings: Settings, *, arq_options: dict[str, Any] | None = None, **factories: Any
) -> AsyncIterator[LikenessWorker]:
    """A worker running on this event loop for the block (`factories`: see `worker_settings`; `arq_options`
    override its arq settings), then stopped as SIGTERM stops it: running jobs are cancelled and go back on
    the queue. Raises `RuntimeError` if the worker crashed meanwhile. For tests, benchmarks and embedding."""
    worker = LikenessWorker(**{**worker_settings(settings, **factories), **(arq_options or {})}, handle_signals=False)
    task = asyncio.get_running_loop().create_task(worker.async_run(), name="likeness-worker")
    try:
        yield worker
    finally:
        worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        await worker.close()
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception):
        raise RuntimeError("the worker crashed") from outcome


def run_worker(settings: Settings, **factories: Any) -> None:
    """Run a worker until SIGTERM/SIGINT (blocking)."""
    asyncio.run(_main(settings, **factories))


async def _main(settings: Settings, **factories: Any) -> None:
    worker = LikenessWorker(**worker_settings(settings, **factories))
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.close()
