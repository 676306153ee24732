"""Reliability drills: users through the real Telegram bot with workers killed and Redis restarted mid-run.

The full-size drill (1000 requests, 100 users) is `python -m benchmarks --only chaos`; this is the reduced
one: 60 requests from 12 users, one SIGKILL of a busy worker, one Redis restart (AOF), short job timeouts so
a killed worker's job is re-run within ~20 s. Every request must get exactly one answer.
"""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from likeness.errors import QueueUnavailable
from likeness.queue import QueueClient
from likeness.queue import keys as _keys
from likeness.requests import PortraitSpec
from tests.helpers.drills import ChaosConfig, run_chaos
from tests.helpers.queue import origin, selfie

pytest.importorskip("diffusers")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_chaos_drill_loses_and_duplicates_nothing(shared_data_dir, tmp_path):
    config = ChaosConfig(requests=60, users=12, kills=1, redis_restarts=1, job_timeout_s=8)
    report = await run_chaos(config, data_dir=shared_data_dir, work_dir=tmp_path)

    assert report.counts["requests"] == 60
    assert report.counts["lost"] == 0, f"unanswered requests; events {report.events}; logs in {tmp_path}"
    assert report.counts["duplicated"] == 0, f"answered twice: {report.duplicates}; events {report.events}"
    assert report.counts["results"] + report.counts["errors"] == 60
    assert report.counts["results"] >= 50, f"most requests should succeed; errors {report.error_texts}"
    kinds = [what.split()[0] for _, what in report.events]
    assert kinds.count("SIGKILL") == 1 and "redis" in kinds, report.events
    assert -9 in report.worker_exits and report.worker_starts >= 3, "the killed worker was replaced"
    assert all(text.startswith("⚠️") and len(text) > 10 for text in report.error_texts)


async def test_enqueue_failing_on_a_dropped_connection_is_a_clear_queue_error(make_settings, redis_url, monkeypatch):
    """Found by the drill: a Redis restart during `enqueue_job` surfaces as redis' WatchError (arq WATCHes
    the job key); it must reach the bot as `QueueUnavailable`, not as an unexpected error."""
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:

        async def dropped(*args: object, **kwargs: object) -> None:
            raise WatchError("A ConnectionError occurred on while watching one or more keys")

        monkeypatch.setattr(queue.redis, "enqueue_job", dropped)
        with pytest.raises(QueueUnavailable):
            await queue.submit_portrait(origin("u9"), selfie(), PortraitSpec(preset="ghibli"))


async def test_a_failed_enqueue_leaves_nothing_behind(make_settings, redis_url, monkeypatch):
    """Found by the drill: a failed enqueue must not leave a phantom active job (3 would lock a user out) nor
    make a retry with the same idempotency key a silent "duplicate" of a job that never ran."""
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:

        async def dropped(*args: object, **kwargs: object) -> None:
            raise WatchError("A ConnectionError occurred on while watching one or more keys")

        monkeypatch.setattr(queue.redis, "enqueue_job", dropped)
        with pytest.raises(QueueUnavailable):
            await queue.submit_portrait(origin("u9"), selfie(), PortraitSpec(preset="ghibli"), idempotency_key="m1")
        monkeypatch.undo()
        assert await queue.redis.zcard(_keys.active("u9")) == 0
        ticket = await queue.submit_portrait(
            origin("u9"), selfie(), PortraitSpec(preset="ghibli"), idempotency_key="m1"
        )
        assert not ticket.duplicate


async def test_a_job_is_either_accepted_or_not_queued(make_settings, redis_url, monkeypatch):
    """Found by the full drill (2 of 1000 requests got "⚠️ temporarily unavailable" AND a result): when the
    connection drops after `enqueue_job` succeeded, the user must not be told it failed."""
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:

        async def dropped(*args: object, **kwargs: object) -> None:
            raise RedisConnectionError("Connection closed by server.")

        monkeypatch.setattr(queue, "position", dropped)
        try:
            ticket = await queue.submit_portrait(origin("u9"), selfie(), PortraitSpec(preset="ghibli"))
        except QueueUnavailable:
            queued = await queue.redis.zrange(_keys.ARQ_QUEUE, 0, -1)
            assert not queued, "told the user it failed, but the job is queued and will be delivered"
        else:
            assert await queue.redis.zscore(_keys.ARQ_QUEUE, ticket.job_id) is not None


@pytest.mark.parametrize("failures", [2, 99], ids=["short-outage", "long-outage"])
async def test_a_queued_portrait_is_not_reported_failed_when_its_audit_entry_fails(
    make_settings, redis_url, monkeypatch, failures
):
    """Found by the reduced drill: Redis restarted right after the job was queued, the bot's audit entry
    failed, and the user got "⚠️ temporarily unavailable" — and then the portrait."""
    from likeness.bot import BotCore
    from likeness.queue import _redis
    from likeness.requests import PortraitArgs

    monkeypatch.setattr(_redis, "OUTAGE_RETRIES_S", (0.01, 0.02, 0.05))
    settings = make_settings(redis_url=redis_url)
    async with QueueClient(settings) as queue:
        core = BotCore(settings, queue)
        record = core.abuse.record
        calls = 0

        async def flaky(*args: object, **kwargs: object) -> str:
            nonlocal calls
            calls += 1
            if calls <= failures:
                raise QueueUnavailable()
            return await record(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(core.abuse, "record", flaky)
        spec = await core.check_portrait(origin("u9"), PortraitArgs(preset="ghibli"))
        ticket = await core.portrait(origin("u9"), spec, selfie())
        assert await queue.redis.zscore(_keys.ARQ_QUEUE, ticket.job_id) is not None
        audited = [event.job_id for event in await core.abuse.recent("request")]
    assert audited == ([ticket.job_id] if failures < 4 else [])
