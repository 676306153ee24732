"""The bots' side of the queue: validate, apply limits, store the inputs, enqueue, follow, cancel, forget.

Torch-free. Every Redis/arq failure is translated once, here, into `QueueUnavailable`; the connection
pool reconnects by itself, so the client works again as soon as Redis is back.

Limits and fair ordering: `_admission.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import TracebackType

from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from likeness.config import Settings
from likeness.errors import QueueUnavailable, ResultExpired
from likeness.images import prepare_mask, prepare_selfie, sniff_image
from likeness.queue import _keys
from likeness.queue._admission import Admission
from likeness.queue._blobs import BlobStore, UploadKind
from likeness.queue._erasure import Erasure
from likeness.queue._models import (
    JobKind,
    JobPayload,
    Origin,
    ProgressEvent,
    QueueStats,
    ResultRecord,
    Ticket,
)
from likeness.queue._progress import add_progress
from likeness.queue._redis import REDIS_DOWN, outlasting_outage, timed_pool, translated
from likeness.requests import MAX_COUNT, EditSpec, PortraitSpec, request_seeds

__all__ = ["QueueClient"]


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


class QueueClient:
    """Submit and follow portrait jobs. Use as `async with QueueClient(settings) as queue:`.

    Every `submit_*` validates first (a `UserError` with a friendly `user_message` for bad input), then takes
    a slot under the limits in one atomic step unless the user is an admin (`TooManyActiveJobs`, `QueueFull`,
    `RateLimited`), then stores the inputs and enqueues. `idempotency_key` (e.g. a button press or message id)
    makes a repeated submit return the first job's ticket with `duplicate=True` instead of a second job.

    Redis commands time out after `settings.redis_timeout_s`: a frozen or partitioned Redis answers
    `QueueUnavailable` within seconds instead of leaving a request hanging.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Stale connections (Redis restarted) are retried on a fresh one, so the client recovers by itself; a
        # reply that does not come within `redis_timeout_s` fails at once (a frozen Redis).
        self._pool = timed_pool(settings.redis_dsn, reply_timeout_s=settings.redis_timeout_s)
        self.redis = ArqRedis(connection_pool=self._pool)
        self.blobs = BlobStore(
            self.redis,
            selfie_ttl_s=settings.selfie_ttl_s,
            result_ttl_s=settings.result_ttl_s,
            upload_budget_bytes=settings.upload_budget_bytes,
        )
        self.admission = Admission(settings, self.redis, self._pool)
        self.erasure = Erasure(self.redis, self.admission)

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

    @translated
    async def submit_portrait(
        self, origin: Origin, selfie: bytes, spec: PortraitSpec, *, idempotency_key: str | None = None
    ) -> Ticket:
        """Queue portraits of the person in `selfie` (raw upload bytes) as `spec` asks (validated by the bot).

        Raises `InvalidImage` before anything is stored; then the limit errors and `StorageFull`. What is stored
        is the decoded selfie, upright, at most `max_selfie_side` px and without metadata (`prepare_selfie`),
        never the upload.
        """
        sniff_image(selfie, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels)
        async with self._reserved(origin, idempotency_key) as (job_id, dup):
            if dup is not None:
                return dup
            selfie_id = await self._store_upload(selfie, "selfie", origin.user_id)
            payload = JobPayload(
                job_id=job_id,
                kind="portrait",
                mode="portrait",
                origin=origin,
                portrait=spec,
                selfie_blob_id=selfie_id,
                seeds=request_seeds(spec.count, spec.seed),
            )
            return await self._enqueue(payload, idempotency_key)

    @translated
    async def submit_reroll(
        self, origin: Origin, parent_result_id: str, *, idempotency_key: str | None = None
    ) -> Ticket:
        """Run the request that made `parent_result_id` again with new seeds (an edit re-runs the edit)."""
        parent = await self.get_result(parent_result_id)
        return await self._repeat(origin, parent, "reroll", len(parent.seeds), idempotency_key)

    @translated
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

    @translated
    async def submit_edit(
        self,
        origin: Origin,
        parent_result_id: str,
        spec: EditSpec,
        mask: bytes | None = None,
        *,
        image_index: int = 0,
        idempotency_key: str | None = None,
    ) -> Ticket:
        """Edit image `image_index` of a result as `spec` says (parsed by the bot; with `mask`: the user's)."""
        if mask is not None:
            sniff_image(mask, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels)
        parent = await self.get_result(parent_result_id)
        if not 0 <= image_index < len(parent.image_blob_ids):
            raise ValueError(f"result {parent_result_id} has {len(parent.image_blob_ids)} images")
        async with self._reserved(origin, idempotency_key) as (job_id, dup):
            if dup is not None:
                return dup
            if mask is not None:
                spec = spec.model_copy(update={"mask_blob_id": await self._store_upload(mask, "mask", origin.user_id)})
            payload = JobPayload(
                job_id=job_id,
                kind="edit",
                mode="edit",
                origin=origin,
                edit=spec,
                selfie_blob_id=parent.request.selfie_blob_id,
                subject_user_id=parent.request.subject,
                source_blob_id=parent.image_blob_ids[image_index],
                parent_result_id=parent.result_id,
                seeds=request_seeds(1),
            )
            return await self._enqueue(payload, idempotency_key)

    # --- following ----------------------------------------------------------------------------------

    @translated
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
            except REDIS_DOWN as exc:
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

    @translated
    async def get_result(self, result_id: str) -> ResultRecord:
        """A finished result (request, seeds, image ids, metadata); `ResultExpired` when gone.

        Metadata only: the images themselves are handed out by `BotCore`, the one gate that checks who asks.
        """
        return await self.blobs.get_result(result_id)

    @translated
    async def get_image(self, blob_id: str) -> bytes:
        """Bytes of a stored image (a result image, a preview); `ResultExpired` when gone. Bots go through
        `BotCore`'s gate instead of calling this."""
        return await self.blobs.get(blob_id)

    @translated
    async def get_job(self, job_id: str) -> JobPayload | None:
        """The stored payload of a job, None once it expired."""
        raw = await self.redis.get(_keys.job(job_id))
        return None if raw is None else JobPayload.model_validate_json(raw)

    # --- cancelling and forgetting -----------------------------------------------------------------

    @translated
    async def cancel(self, user_id: str, job_id: str | None = None) -> list[str]:
        """Cancel one job of `user_id` (or all of their unfinished jobs); the cancelled job ids (`Erasure`)."""
        return await self.erasure.cancel(user_id, job_id)

    @translated
    async def forget(self, user_id: str) -> dict[str, int]:
        """Delete everything stored for `user_id`; counts per kind of data (`Erasure.forget`)."""
        return await self.erasure.forget(user_id)

    # --- numbers ------------------------------------------------------------------------------------

    @translated
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

    async def _repeat(
        self,
        origin: Origin,
        parent: ResultRecord,
        kind: JobKind,
        count: int,
        idempotency_key: str | None,
        overrides: dict[str, str] | None = None,
    ) -> Ticket:
        async with self._reserved(origin, idempotency_key) as (job_id, dup):
            if dup is not None:
                return dup
            request = parent.request.model_copy(update=overrides or {})
            for blob_id in (request.selfie_blob_id, request.source_blob_id):
                if blob_id is not None and not await self.redis.exists(_keys.blob(blob_id)):
                    raise ResultExpired()
            portrait = request.portrait.model_copy(update={"count": count, "seed": None}) if request.portrait else None
            # (a reroll asks for new seeds: a seed the user named made the parent already)
            payload = request.model_copy(
                update={
                    "job_id": job_id,
                    "result_id": _keys.new_result_id(),
                    "subject_user_id": request.subject,
                    "kind": kind,
                    "origin": origin,
                    "portrait": portrait,
                    "parent_result_id": parent.result_id,
                    "seeds": request_seeds(count),
                    "submitted_at": time.time(),
                }
            )
            return await self._enqueue(JobPayload.model_validate(payload.model_dump()), idempotency_key)

    @contextlib.asynccontextmanager
    async def _reserved(self, origin: Origin, idempotency_key: str | None) -> AsyncIterator[tuple[str, Ticket | None]]:
        """A new job id with its slot under the limits taken (or the ticket of the job already queued under the
        same idempotency key). The slot (and key) are given back if the block fails before the job is queued."""
        idem = None if idempotency_key is None else _keys.idem(origin.platform, origin.user_id, idempotency_key)
        reservation = await self.admission.reserve(origin.user_id, _keys.new_id(), idem)
        if reservation.duplicate_of is not None:
            yield reservation.job_id, await self._duplicate(reservation.duplicate_of)
            return
        try:
            yield reservation.job_id, None
        except BaseException:
            with contextlib.suppress(*REDIS_DOWN):
                await self.admission.release(origin.user_id, reservation.job_id, idem)
            raise

    async def _store_upload(self, data: bytes, kind: UploadKind, owner: str) -> str:
        """Store what the worker needs of an upload (prepared off the loop, never the bytes as sent), within
        the owner's storage budget; its blob id."""
        prepare = prepare_selfie if kind == "selfie" else prepare_mask
        settings = self.settings
        prepared = await asyncio.to_thread(
            prepare, data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels,
            max_side=settings.max_selfie_side,
        )  # fmt: skip
        return await self.blobs.put_upload(prepared, kind=kind, owner=owner)

    async def _duplicate(self, job_id: str) -> Ticket:
        position = await self.position(job_id)
        return Ticket(
            job_id=job_id,
            position=position or 0,
            eta_s=round(await self.admission.avg_job_s() * (position or 0), 1),
            duplicate=True,
        )

    async def _enqueue(self, payload: JobPayload, idempotency_key: str | None) -> Ticket:
        """Store the payload (indexed for its users' `forget`), hand it to arq, announce it. The caller's
        `_reserved` block gives the slot back if this fails before the job is queued."""
        score_ms, avg_s = await self.admission.fair_score_ms(payload.user_id)
        owned = [*_keys.job_keys(payload.job_id)]
        if idempotency_key is not None:
            owned.append(_keys.idem(payload.origin.platform, payload.user_id, idempotency_key))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_keys.job(payload.job_id), payload.model_dump_json(), ex=self.settings.result_ttl_s)
            self.blobs.own(pipe, payload.owners, owned)
            pipe.incr(_keys.stats_jobs(_keys.today()))
            pipe.expire(_keys.stats_jobs(_keys.today()), 2 * _keys.DAY_S)
            await pipe.execute()
        try:
            await self._enqueue_arq(payload.job_id, score_ms)
        except Exception:
            if not await self._queued_anyway(payload.job_id):
                raise
        # Queued: from here on the job runs whatever happens, so position and the first progress event
        # are best effort; a failure must not tell the user "failed" for a portrait that will arrive.
        position, eta = 1, round(avg_s, 1)
        with contextlib.suppress(*REDIS_DOWN):
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
        await outlasting_outage(
            lambda: self.redis.enqueue_job(
                _keys.ARQ_FUNCTION,
                job_id,
                _job_id=job_id,
                _defer_until=datetime.fromtimestamp(score_ms / 1000, tz=UTC),
                # arq drops a job whose key expired without running it: keep it past the selfie's TTL,
                # so a very late job still runs and answers "expired" instead of vanishing.
                _expires=self.settings.selfie_ttl_s + 3600,
            )
        )

    async def _queued_anyway(self, job_id: str) -> bool:
        """After a failed enqueue: True if arq got the job before the connection dropped; else delete the
        payload, so a job that will never run leaves nothing behind (if Redis is down, it expires)."""
        with contextlib.suppress(*REDIS_DOWN):
            if await self.redis.exists(_keys.ARQ_JOB + job_id):
                return True
            await self.redis.delete(_keys.job(job_id))
        return False
