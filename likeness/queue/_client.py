"""The bots' side of the queue: validate, apply limits, store the inputs, enqueue, follow, cancel, forget.

Torch-free. Every Redis/arq failure is translated once, here, into `QueueUnavailable`; the connection
pool reconnects by itself, so the client works again as soon as Redis is back.

Limits and fair ordering: `_admission.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import ParamSpec, TypeVar

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeness.config import Settings
from likeness.errors import (
    PromptTooLong,
    QueueUnavailable,
    ResultExpired,
)
from likeness.images import sniff_image
from likeness.instructions import parse_instruction
from likeness.presets import PresetCatalog, get_format
from likeness.queue import _keys
from likeness.queue._admission import Admission
from likeness.queue._blobs import BlobStore
from likeness.queue._models import (
    MAX_COUNT,
    EditParams,
    JobKind,
    JobPayload,
    Origin,
    PortraitParams,
    ProgressEvent,
    QueueStats,
    ResultRecord,
    Ticket,
)
from likeness.queue._progress import add_progress, publish_progress

__all__ = ["QueueClient"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
# WatchError: arq's enqueue_job WATCHes the job key and handles a real conflict itself; one that escapes is
# redis-py reporting a connection lost while watching (Redis restarting).
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, WatchError, ConnectionError, OSError)

_ENQUEUE_RETRIES_S = (0.1, 0.3, 1.0, 2.0)

# KEYS: arq queue, arq in-progress key, arq job key. ARGV: job id. Removes a job that has not started.
_REMOVE_QUEUED = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
local removed = redis.call('zrem', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return removed
"""

# KEYS: arq queue, the job's in-progress key. ARGV: job id, in-progress key prefix. Returns the position
# (0 = running, 1 = next) or -1 when the job is not queued. arq keeps running jobs in its queue: skip them.
_POSITION = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
local rank = redis.call('zrank', KEYS[1], ARGV[1])
if not rank then return -1 end
local position = 1
if rank > 0 then
  for _, other in ipairs(redis.call('zrange', KEYS[1], 0, rank - 1)) do
    if redis.call('exists', ARGV[2] .. other) == 0 then position = position + 1 end
  end
end
return position
"""


def _translated(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await fn(*args, **kwargs)
        except _REDIS_DOWN as exc:
            raise QueueUnavailable() from exc

    return wrapper


class QueueClient:
    """Submit and follow portrait jobs. Use as `async with QueueClient(settings) as queue:`.

    Every `submit_*` validates first (a `UserError` with a friendly `user_message` for bad input), then
    applies the limits unless the user is an admin (`TooManyActiveJobs`, `RateLimited`, `QueueFull`),
    then stores the inputs and enqueues. `idempotency_key` (e.g. a button press or message id) makes
    a repeated submit return the first job's ticket with `duplicate=True` instead of a second job.
    """

    def __init__(self, settings: Settings, *, presets: PresetCatalog | None = None) -> None:
        self.settings = settings
        self.presets = presets or PresetCatalog.load(settings.presets_dir)
        # Stale connections (Redis restarted) are retried on a fresh one, so the client recovers by itself.
        self._pool = ConnectionPool.from_url(
            settings.redis_dsn,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=2,
        )
        self.redis = ArqRedis(connection_pool=self._pool)
        self.blobs = BlobStore(
            self.redis,
            selfie_ttl_s=settings.selfie_ttl_s,
            result_ttl_s=settings.result_ttl_s,
            max_bytes=settings.max_upload_bytes,
        )
        self.admission = Admission(settings, self.redis, self._pool)

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the Redis connections (idempotent)."""
        await self.redis.aclose()
        await self._pool.aclose()

    def is_admin(self, user_id: str) -> bool:
        """Admins (settings.admins) bypass the per-user and global limits."""
        return self.admission.is_admin(user_id)

    # --- submitting --------------------------------------------------------------------------------

    @_translated
    async def submit_portrait(
        self, origin: Origin, selfie: bytes, params: PortraitParams, *, idempotency_key: str | None = None
    ) -> Ticket:
        """Queue portraits of the person in `selfie` (raw upload bytes) with a preset spec and options.

        Raises `InvalidImage`, `UnknownPreset`, `InvalidPresetSpec`, `UnknownFormat`, `PromptTooLong`
        before anything is stored; then the limit errors.
        """
        sniff_image(selfie, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels)
        params = self._check_portrait(params)
        job_id, dup = await self._claim_job_id(origin, idempotency_key)
        if dup is not None:
            return dup
        await self.admission.check(origin.user_id)
        selfie_id = await self.blobs.put(selfie, kind="selfie", owner=origin.user_id)
        payload = JobPayload(
            job_id=job_id,
            kind="portrait",
            mode="portrait",
            origin=origin,
            portrait=params,
            selfie_blob_id=selfie_id,
            seeds=_seeds(params.seed, params.count),
        )
        return await self._enqueue(payload)

    @_translated
    async def submit_reroll(
        self, origin: Origin, parent_result_id: str, *, idempotency_key: str | None = None
    ) -> Ticket:
        """Run the request that made `parent_result_id` again with new seeds (an edit re-runs the edit)."""
        parent = await self.get_result(parent_result_id)
        return await self._repeat(origin, parent, "reroll", len(parent.seeds), idempotency_key)

    @_translated
    async def submit_variations(
        self,
        origin: Origin,
        parent_result_id: str,
        *,
        count: int = MAX_COUNT,
        image_index: int = 0,
        idempotency_key: str | None = None,
    ) -> Ticket:
        """`count` (1–4) variations of image `image_index` of a result (img2img from it), one new seed each."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}")
        parent = await self.get_result(parent_result_id)
        if not 0 <= image_index < len(parent.image_blob_ids):
            raise ValueError(f"result {parent_result_id} has {len(parent.image_blob_ids)} images")
        source = {"mode": "variation", "source_blob_id": parent.image_blob_ids[image_index]}
        return await self._repeat(origin, parent, "variations", count, idempotency_key, source)

    @_translated
    async def submit_edit(
        self,
        origin: Origin,
        parent_result_id: str,
        instruction: str,
        mask: bytes | None = None,
        *,
        image_index: int = 0,
        idempotency_key: str | None = None,
    ) -> Ticket:
        """Edit image `image_index` of a result with a natural-language instruction (and optional mask)."""
        instruction = instruction.strip()
        if len(instruction) > self.settings.max_prompt_chars:
            raise PromptTooLong(length=len(instruction), limit=self.settings.max_prompt_chars)
        # Unknown or empty instructions get examples now, not after a trip through the queue.
        parse_instruction(instruction, has_mask=mask is not None, max_chars=self.settings.max_prompt_chars)
        if mask is not None:
            sniff_image(mask, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels)
        parent = await self.get_result(parent_result_id)
        if not 0 <= image_index < len(parent.image_blob_ids):
            raise ValueError(f"result {parent_result_id} has {len(parent.image_blob_ids)} images")
        job_id, dup = await self._claim_job_id(origin, idempotency_key)
        if dup is not None:
            return dup
        await self.admission.check(origin.user_id)
        mask_id = None if mask is None else await self.blobs.put(mask, kind="mask", owner=origin.user_id)
        payload = JobPayload(
            job_id=job_id,
            kind="edit",
            mode="edit",
            origin=origin,
            edit=EditParams(instruction=instruction, mask_blob_id=mask_id),
            selfie_blob_id=parent.request.selfie_blob_id,
            source_blob_id=parent.image_blob_ids[image_index],
            parent_result_id=parent.result_id,
            seeds=_seeds(None, 1),
        )
        return await self._enqueue(payload)

    # --- following ----------------------------------------------------------------------------------

    @_translated
    async def position(self, job_id: str) -> int | None:
        """1 = next to start, 0 = running, None = not in the queue (finished, failed, cancelled, unknown)."""
        position = await self.redis.eval(  # type: ignore[misc]
            _POSITION, 2, _keys.ARQ_QUEUE, _keys.ARQ_IN_PROGRESS + job_id, job_id, _keys.ARQ_IN_PROGRESS
        )
        return None if position < 0 else int(position)

    async def progress(self, job_id: str, *, idle_timeout_s: float | None = None) -> AsyncIterator[ProgressEvent]:
        """Every progress event of a job, in order, from its first; ends after done, failed or cancelled.

        Also ends when the job is unknown or its events expired, or after `idle_timeout_s` without any event.
        Redis failures raise `QueueUnavailable`.
        """
        last = "0-0"
        idle_since = time.monotonic()
        while True:
            try:
                answer = await self.redis.xread({_keys.progress(job_id): last}, block=500, count=50)
                if not answer and not await self.redis.exists(_keys.progress(job_id)):
                    return  # unknown job, or its events expired (an hour after the last one)
            except _REDIS_DOWN as exc:
                raise QueueUnavailable() from exc
            for entry_id, fields in answer[0][1] if answer else []:
                last = entry_id.decode()
                idle_since = time.monotonic()
                event = ProgressEvent.model_validate_json(fields[b"e"])
                yield event
                if event.final:
                    return
            if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                return

    @_translated
    async def get_result(self, result_id: str) -> ResultRecord:
        """A finished result (request, seeds, image ids, metadata); `ResultExpired` when gone."""
        return await self.blobs.get_result(result_id)

    @_translated
    async def get_image(self, blob_id: str) -> bytes:
        """Bytes of a stored image (a result image, a preview); `ResultExpired` when gone."""
        return await self.blobs.get(blob_id)

    @_translated
    async def get_job(self, job_id: str) -> JobPayload | None:
        """The stored payload of a job, None once it expired."""
        raw = await self.redis.get(_keys.job(job_id))
        return None if raw is None else JobPayload.model_validate_json(raw)

    # --- cancelling and forgetting -----------------------------------------------------------------

    @_translated
    async def cancel(self, user_id: str, job_id: str | None = None) -> list[str]:
        """Cancel one job of `user_id` (or all of their unfinished jobs); returns the cancelled job ids.

        A queued job is removed at once; a running one is aborted (its images, if any, are dropped).
        Only the job's owner can cancel it: a job id of another user is ignored.
        """
        active_key = _keys.active(user_id)
        ids = [m.decode() for m in await self.redis.zrange(active_key, 0, -1)]
        targets = [j for j in ids if job_id is None or j == job_id]
        for target in targets:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(_keys.cancelled(target), "1", ex=_keys.DAY_S)
                pipe.zrem(active_key, target)
                await pipe.execute()
            removed = await self.redis.eval(  # type: ignore[misc]
                _REMOVE_QUEUED, 3, _keys.ARQ_QUEUE, _keys.ARQ_IN_PROGRESS + target, _keys.ARQ_JOB + target, target
            )
            if not removed:  # running (or just picked up): ask arq to cancel the task
                await self.redis.zadd(_keys.ARQ_ABORT, {target: int(time.time() * 1000)})
                await self.redis.publish(_keys.WAKE_CHANNEL, b"")  # workers look at aborts when they poll
            await publish_progress(self.redis, ProgressEvent(job_id=target, stage="cancelled"))
        return targets

    @_translated
    async def forget(self, user_id: str) -> dict[str, int]:
        """Delete everything stored for `user_id` (cancels their jobs first); counts per kind of data."""
        cancelled = await self.cancel(user_id)
        keys = [k.decode() for k in await self.redis.smembers(_keys.user_keys(user_id))]  # type: ignore[misc]
        counts = {"cancelled": len(cancelled), "results": 0, "images": 0, "uploads": 0, "jobs": 0}
        existing = await self._existing(keys)
        for key in existing:
            if key.startswith("likeness:result:"):
                counts["results"] += 1
            elif key.startswith("likeness:blob:img-"):
                counts["images"] += 1
            elif key.startswith("likeness:blob:"):
                counts["uploads"] += 1
            elif key.startswith("likeness:job:"):
                counts["jobs"] += 1
        await self.redis.delete(*keys, _keys.user_keys(user_id), _keys.active(user_id), _keys.fair(user_id))
        return counts

    # --- numbers ------------------------------------------------------------------------------------

    @_translated
    async def stats(self) -> QueueStats:
        """Queue depth, running jobs, today's jobs and failures by cause, average job time, pending deliveries."""
        day = _keys.today()
        running = 0
        async for _ in self.redis.scan_iter(match=_keys.ARQ_IN_PROGRESS + "*", count=500):
            running += 1
        depth = await self.redis.zcard(_keys.ARQ_QUEUE)
        jobs_today = int(await self.redis.get(_keys.stats_jobs(day)) or 0)
        failures = {k.decode(): int(v) for k, v in (await self.redis.hgetall(_keys.stats_failures(day))).items()}  # type: ignore[misc]
        pending: dict[str, int] = {}
        for platform in ("telegram", "discord", "playground"):
            try:
                info = await self.redis.xpending(_keys.deliveries(platform), _keys.DELIVERY_GROUP)
                pending[platform] = int(info["pending"])
            except ResponseError:  # no stream or no group yet: nothing pending
                pending[platform] = 0
        return QueueStats(
            queued=max(0, depth - running),
            running=running,
            jobs_today=jobs_today,
            failures_today=failures,
            avg_job_s=await self.admission.avg_job_s(),
            deliveries_pending=pending,
        )

    # --- internals ----------------------------------------------------------------------------------

    def _check_portrait(self, params: PortraitParams) -> PortraitParams:
        if len(params.prompt) > self.settings.max_prompt_chars:
            raise PromptTooLong(length=len(params.prompt), limit=self.settings.max_prompt_chars)
        preset = self.presets.resolve(params.preset)
        fmt = None if params.format is None else get_format(params.format).name
        return params.model_copy(update={"preset": preset.spec, "format": fmt, "prompt": params.prompt.strip()})

    async def _repeat(
        self,
        origin: Origin,
        parent: ResultRecord,
        kind: JobKind,
        count: int,
        idempotency_key: str | None,
        overrides: dict[str, str] | None = None,
    ) -> Ticket:
        job_id, dup = await self._claim_job_id(origin, idempotency_key)
        if dup is not None:
            return dup
        await self.admission.check(origin.user_id)
        request = parent.request.model_copy(update=overrides or {})
        for blob_id in (request.selfie_blob_id, request.source_blob_id):
            if blob_id is not None and not await self.redis.exists(_keys.blob(blob_id)):
                raise ResultExpired()
        portrait = request.portrait.model_copy(update={"count": count, "seed": None}) if request.portrait else None
        payload = request.model_copy(
            update={
                "job_id": job_id,
                "kind": kind,
                "origin": origin,
                "portrait": portrait,
                "parent_result_id": parent.result_id,
                "seeds": _seeds(None, count),
                "submitted_at": time.time(),
            }
        )
        return await self._enqueue(JobPayload.model_validate(payload.model_dump()))

    async def _claim_job_id(self, origin: Origin, idempotency_key: str | None) -> tuple[str, Ticket | None]:
        """The id of a new job, and the ticket of the job already queued under the same idempotency key."""
        if idempotency_key is None:
            return uuid.uuid4().hex, None
        digest = hashlib.sha256(f"{origin.platform}\0{origin.user_id}\0{idempotency_key}".encode()).hexdigest()
        job_id = f"k{digest[:31]}"
        return job_id, await self._duplicate(job_id)

    async def _duplicate(self, job_id: str) -> Ticket | None:
        if not await self.redis.exists(_keys.job(job_id)):
            return None
        position = await self.position(job_id)
        return Ticket(
            job_id=job_id,
            position=position or 0,
            eta_s=round(await self.admission.avg_job_s() * (position or 0), 1),
            duplicate=True,
        )

    async def _enqueue(self, payload: JobPayload) -> Ticket:
        user = payload.user_id
        score_ms, avg_s = await self.admission.fair_score_ms(user)
        job_ttl = self.settings.result_ttl_s
        if not await self.redis.set(_keys.job(payload.job_id), payload.model_dump_json(), nx=True, ex=job_ttl):
            return await self._duplicate(payload.job_id) or Ticket(job_id=payload.job_id, position=0, eta_s=0.0)
        expiry = int(time.time() * 1000) + self.admission.active_bound_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            self.blobs.own(pipe, user, _keys.job(payload.job_id))
            pipe.zadd(_keys.active(user), {payload.job_id: expiry})
            pipe.pexpire(_keys.active(user), self.admission.active_bound_ms())
            pipe.incr(_keys.stats_jobs(_keys.today()))
            pipe.expire(_keys.stats_jobs(_keys.today()), 2 * _keys.DAY_S)
            await pipe.execute()
        try:
            await self._enqueue_arq(payload.job_id, score_ms)
        except Exception:
            if not await self._queued_anyway(payload.job_id, user):
                raise
        # Queued: from here on the job runs whatever happens, so position and the first progress event
        # are best effort; a failure must not tell the user "failed" for a portrait that will arrive.
        position, eta = 1, round(avg_s, 1)
        with contextlib.suppress(*_REDIS_DOWN):
            position = await self.position(payload.job_id) or 1
            eta = round(avg_s * position, 1)
            event = ProgressEvent(job_id=payload.job_id, stage="queued", position=position, eta_s=eta)
            async with self.redis.pipeline(transaction=False) as pipe:
                add_progress(pipe, event)
                pipe.publish(_keys.WAKE_CHANNEL, b"")  # idle workers start it now (they poll only now and then)
                await pipe.execute()
        return Ticket(job_id=payload.job_id, position=position, eta_s=eta)

    async def _enqueue_arq(self, job_id: str, score_ms: int) -> None:
        """Hand the job to arq, riding out a short Redis outage (a restart): the job id makes repeats safe,
        and a repeat that finds the job already there means an earlier try got through."""
        for delay in (*_ENQUEUE_RETRIES_S, None):
            try:
                await self.redis.enqueue_job(
                    _keys.ARQ_FUNCTION,
                    job_id,
                    _job_id=job_id,
                    _defer_until=datetime.fromtimestamp(score_ms / 1000, tz=UTC),
                    # arq drops a job whose key expired without running it: keep it past the selfie's TTL,
                    # so a very late job still runs and answers "expired" instead of vanishing.
                    _expires=self.settings.selfie_ttl_s + 3600,
                )
                return
            except _REDIS_DOWN:
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _queued_anyway(self, job_id: str, user: str) -> bool:
        """After a failed enqueue: True if arq got the job before the connection dropped; else take back
        what `_enqueue` wrote, so neither the user's limit nor a retry with the same idempotency key is
        held by a job that will never run (if Redis is down, both expire on their own)."""
        with contextlib.suppress(*_REDIS_DOWN):
            if await self.redis.exists(_keys.ARQ_JOB + job_id):
                return True
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(_keys.job(job_id))
                pipe.zrem(_keys.active(user), job_id)
                await pipe.execute()
        return False

    async def _existing(self, keys: list[str]) -> list[str]:
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        return [k for k, f in zip(keys, found, strict=True) if f]


def _seeds(first: int | None, count: int) -> tuple[int, ...]:
    start = secrets.randbelow(2**32 - MAX_COUNT) if first is None else first
    return tuple((start + i) % 2**32 for i in range(count))
