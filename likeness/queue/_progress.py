"""Per-job progress streams: `likeness:progress:<job_id>`, replayable and in order, expiring with the job."""

from __future__ import annotations

from redis.asyncio import Redis

from likeness.queue import _keys
from likeness.queue._models import ProgressEvent

__all__ = ["publish_progress"]

PROGRESS_TTL_S = 3600
_MAX_EVENTS = 200


async def publish_progress(redis: Redis, event: ProgressEvent, *, ttl_s: int = PROGRESS_TTL_S) -> None:
    """Append one event (the stream is capped and expires an hour after its last event)."""
    key = _keys.progress(event.job_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(key, {"e": event.model_dump_json()}, maxlen=_MAX_EVENTS, approximate=True)
        pipe.expire(key, ttl_s)
        await pipe.execute()
