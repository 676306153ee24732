"""Per-job progress streams: `likeness:progress:<job_id>`, replayable and in order, expiring with the job."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from likeness.queue import _keys
from likeness.queue._models import ProgressEvent

__all__ = ["add_progress", "publish_progress"]

PROGRESS_TTL_S = 3600
_MAX_EVENTS = 200


async def publish_progress(redis: Redis, event: ProgressEvent, *, ttl_s: int = PROGRESS_TTL_S) -> None:
    """Append one event (the stream is capped and expires an hour after its last event)."""
    async with redis.pipeline(transaction=True) as pipe:
        add_progress(pipe, event, ttl_s=ttl_s)
        await pipe.execute()


def add_progress(pipe: Pipeline, event: ProgressEvent, *, ttl_s: int = PROGRESS_TTL_S) -> None:
    """Queue the commands of `publish_progress` on a caller's pipeline."""
    key = _keys.progress(event.job_id)
    pipe.xadd(key, {"e": event.model_dump_json()}, maxlen=_MAX_EVENTS, approximate=True)
    pipe.expire(key, ttl_s)
