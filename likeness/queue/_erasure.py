"""Cancelling jobs and forgetting users: everything a user asked for, and everything that shows their face.

`forget` reaches a user's data through their indexes (`likeness:user:<id>:keys` and `:entries`), written
with the data itself; a result remixed by another member from the user's selfie is indexed under both, so
either one's `forget` removes it. The audit log and bans are `AbuseLog`'s.
"""

from __future__ import annotations

import time

from arq.connections import ArqRedis

from likeness.queue import _keys
from likeness.queue._admission import Admission
from likeness.queue._models import JobPayload, ProgressEvent
from likeness.queue._progress import publish_progress

__all__ = ["Erasure"]

# KEYS: arq queue, arq in-progress key, arq job key. ARGV: job id. Removes a job that has not started.
_REMOVE_QUEUED = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
local removed = redis.call('zrem', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return removed
"""


class Erasure:
    """Cancel and forget on the client's Redis; Redis failures propagate (the client translates them)."""

    def __init__(self, redis: ArqRedis, admission: Admission) -> None:
        self.redis = redis
        self.admission = admission

    async def cancel(self, user_id: str, job_id: str | None = None) -> list[str]:
        """Cancel one job of `user_id` (or all of their unfinished jobs); returns the cancelled job ids.

        A queued job is removed at once; a running one is aborted (its images, if any, are dropped).
        Only the job's owner can cancel it: a job id of another user is ignored.
        """
        ids = [m.decode() for m in await self.redis.zrange(_keys.active(user_id), 0, -1)]
        targets = [j for j in ids if job_id is None or j == job_id]
        for target in targets:
            await self.stop(target, user_id)
        return targets

    async def forget(self, user_id: str) -> dict[str, int]:
        """Delete everything stored for `user_id`; counts per kind of data.

        Their jobs are cancelled first, and so are other members' jobs drawing this user's selfie; what those
        made (results remixed from this user's face) is deleted with the rest. Reached through the user's
        indexes: every key holding their data, and their delivery-stream entries. The audit log and bans are
        `AbuseLog.forget`'s (the caller's) business.
        """
        cancelled = await self.cancel(user_id)
        keys = [k.decode() for k in await self.redis.smembers(_keys.user_keys(user_id))]  # type: ignore[misc]
        for key in keys:  # remixes by other members still running on this user's selfie
            if key.startswith("likeness:job:"):
                job = await self._job(key.removeprefix("likeness:job:"))
                if job is not None and job.user_id != user_id and user_id in job.owners:
                    await self.stop(job.job_id, job.user_id)
        counts = {"cancelled": len(cancelled), "results": 0, "images": 0, "uploads": 0, "jobs": 0, "messages": 0}
        for key in await self._existing(keys):
            kind = next((k for p, k in _KINDS if key.startswith(p)), None)
            if kind is not None:
                counts[kind] += 1
        entries = [e.decode() for e in await self.redis.smembers(_keys.user_entries(user_id))]  # type: ignore[misc]
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry in entries:
                stream, _, entry_id = entry.partition(" ")
                pipe.xdel(stream, entry_id)
            pipe.delete(
                *keys,
                _keys.user_keys(user_id),
                _keys.user_entries(user_id),
                _keys.active(user_id),
                _keys.uploads(user_id),
                _keys.fair(user_id),
                self.admission.rate_limit_key(user_id),
            )
            await pipe.execute()
        return counts

    async def stop(self, job_id: str, user_id: str) -> None:
        """Cancel one job: marked (no delivery will be appended), its slot released, removed from the queue
        if it has not started, else aborted.

        Not arq's `Job.abort`, which can't do the first half: it never removes a queued job (it moves a deferred
        one to the front of the queue and leaves it for a worker to drop once a job slot is free, so a cancelled
        job would keep its place and its key behind a busy worker), and it then waits for the job's result
        (forever by default). A running job gets what `Job.abort` writes, the job id in arq's abort set scored
        by the time (`tests/test_pinned_seams.py` checks that arq still signals aborts that way).
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_keys.cancelled(job_id), "1", ex=_keys.DAY_S)
            self.admission.release_in(pipe, user_id, job_id)
            await pipe.execute()
        removed = await self.redis.eval(  # type: ignore[misc]
            _REMOVE_QUEUED, 3, _keys.ARQ_QUEUE, _keys.ARQ_IN_PROGRESS + job_id, _keys.ARQ_JOB + job_id, job_id
        )
        if not removed:  # running (or just picked up): ask arq to cancel the task
            await self.redis.zadd(_keys.ARQ_ABORT, {job_id: int(time.time() * 1000)})
            await self.redis.publish(_keys.WAKE_CHANNEL, b"")  # workers look at aborts when they poll
        await publish_progress(self.redis, ProgressEvent(job_id=job_id, stage="cancelled"))

    async def _existing(self, keys: list[str]) -> list[str]:
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        return [k for k, f in zip(keys, found, strict=True) if f]

    async def _job(self, job_id: str) -> JobPayload | None:
        raw = await self.redis.get(_keys.job(job_id))
        return None if raw is None else JobPayload.model_validate_json(raw)


# What `forget` counts, by key prefix (first match wins).
_KINDS = (
    ("likeness:result:", "results"),
    ("likeness:blob:img-", "images"),
    ("likeness:blob:", "uploads"),
    ("likeness:job:", "jobs"),
    ("likeness:msg:", "messages"),
)
