"""The bot-facing client without a worker: validation, limits, idempotency, ordering, outages."""

from __future__ import annotations

import pytest

from likeness.errors import (
    InvalidImage,
    QueueFull,
    QueueUnavailable,
    RateLimited,
    ResultExpired,
    TooManyActiveJobs,
)
from likeness.queue import QueueClient
from likeness.redis_server import RedisServer
from likeness.requests import PortraitSpec
from tests.helpers.queue import origin, selfie

GHIBLI = PortraitSpec(preset="ghibli")


@pytest.mark.parametrize(
    "image", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"0" * 100, b""], ids=["text", "broken-png", "empty"]
)
async def test_bad_images_are_refused_before_anything_is_stored(make_settings, redis_url, image):
    """The spec was validated by the bot; the queue checks only what it stores: the image."""
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:
        with pytest.raises(InvalidImage) as caught:
            await queue.submit_portrait(origin(), image, GHIBLI)
        assert caught.value.user_message
        assert await queue.redis.dbsize() == 0


async def test_active_job_cap_per_user(make_settings, redis_url):
    async with QueueClient(make_settings(redis_url=redis_url, max_active_jobs_per_user=2)) as queue:
        for _ in range(2):
            await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)
        with pytest.raises(TooManyActiveJobs) as caught:
            await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)
        assert "2 portraits in progress" in caught.value.user_message
        await queue.submit_portrait(origin("u2"), selfie(), GHIBLI)
        await queue.cancel("u1")
        await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)


async def test_rate_limit_says_when_to_retry(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, rate_limit="2/minute", max_active_jobs_per_user=10, admins=["boss"])
    async with QueueClient(settings) as queue:
        for _ in range(2):
            await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)
        with pytest.raises(RateLimited) as caught:
            await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)
        assert 1 <= caught.value.retry_after <= 60
        assert f"{caught.value.retry_after} s" in caught.value.user_message
        for _ in range(3):  # admins bypass limits
            await queue.submit_portrait(origin("boss"), selfie(), GHIBLI)


async def test_global_queue_cap(make_settings, redis_url):
    async with QueueClient(make_settings(redis_url=redis_url, queue_cap=2)) as queue:
        await queue.submit_portrait(origin("u1"), selfie(), GHIBLI)
        await queue.submit_portrait(origin("u2"), selfie(), GHIBLI)
        with pytest.raises(QueueFull) as caught:
            await queue.submit_portrait(origin("u3"), selfie(), GHIBLI)
        assert caught.value.retry_after >= 5 and "busy" in caught.value.user_message


async def test_idempotency_key_makes_a_double_click_one_job(make_settings, redis_url):
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:
        first = await queue.submit_portrait(origin(), selfie(), GHIBLI, idempotency_key="press-42")
        second = await queue.submit_portrait(origin(), selfie(), GHIBLI, idempotency_key="press-42")
        other = await queue.submit_portrait(origin("u2"), selfie(), GHIBLI, idempotency_key="press-42")
        assert second.job_id == first.job_id and second.duplicate and not first.duplicate
        assert other.job_id != first.job_id
        assert await queue.redis.zcard("arq:queue") == 2


async def test_positions_eta_and_fair_order(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, max_active_jobs_per_user=10)
    async with QueueClient(settings) as queue:
        await queue.redis.lpush("likeness:durations", 2.0, 4.0)
        heavy = [await queue.submit_portrait(origin("heavy"), selfie(), GHIBLI) for _ in range(5)]
        light = await queue.submit_portrait(origin("light"), selfie(), GHIBLI)
        assert [t.position for t in heavy] == [1, 2, 3, 4, 5]
        assert [t.eta_s for t in heavy] == [3.0, 6.0, 9.0, 12.0, 15.0]
        assert light.position == 2, "one user's backlog must not push another user's job back"
        assert await queue.position(heavy[1].job_id) == 3
        stats = await queue.stats()
        assert (stats.queued, stats.running, stats.jobs_today, stats.avg_job_s) == (6, 0, 6, 3.0)


async def test_results_and_images_expire_cleanly(make_settings, redis_url):
    async with QueueClient(make_settings(redis_url=redis_url)) as queue:
        with pytest.raises(ResultExpired):
            await queue.get_result("r-gone")
        with pytest.raises(ResultExpired):
            await queue.get_image("img-gone-0")
        with pytest.raises(ResultExpired):
            await queue.submit_reroll(origin(), "r-gone")


async def test_outage_raises_queue_unavailable_and_the_client_recovers(make_settings, tmp_path):
    with RedisServer(tmp_path / "r", appendonly=False) as server:
        async with QueueClient(make_settings(redis_url=server.url)) as queue:
            await queue.submit_portrait(origin(), selfie(), GHIBLI)
            server.stop()
            with pytest.raises(QueueUnavailable) as caught:
                await queue.submit_portrait(origin(), selfie(), GHIBLI)
            assert caught.value.__cause__ is not None
            with pytest.raises(QueueUnavailable):
                await queue.stats()
            server.start()
            ticket = await queue.submit_portrait(origin(), selfie(), GHIBLI)
            assert ticket.position == 1


async def test_ids_that_grant_access_are_random_and_keys_map_to_them(make_settings, redis_url):
    """Job, result and blob ids are 128 random bits, unrelated to the chat, user or message they came from;
    a repeated request key finds its first job through the mapping, not by recomputing an id."""
    import hashlib
    import re

    from likeness.queue import keys

    async with QueueClient(make_settings(redis_url=redis_url)) as queue:
        first = await queue.submit_portrait(origin("u1"), selfie(), GHIBLI, idempotency_key="msg:c1:7")
        same_key_other_user = await queue.submit_portrait(origin("u2"), selfie(), GHIBLI, idempotency_key="msg:c1:7")
        again = await queue.submit_portrait(origin("u1"), selfie(), GHIBLI, idempotency_key="msg:c1:7")
        assert again.duplicate and again.job_id == first.job_id and not same_key_other_user.duplicate
        jobs = [await queue.get_job(t.job_id) for t in (first, same_key_other_user)]
        ids = [t.job_id for t in (first, same_key_other_user)] + [j.result_id.removeprefix("r-") for j in jobs]
        ids += [j.selfie_blob_id.removeprefix("s-") for j in jobs]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)
        derived = hashlib.sha256(b"telegram\0u1\0msg:c1:7").hexdigest()
        assert not any(i in derived or derived[:31] in i for i in ids), "nothing derives from public values"
        assert await queue.redis.get(keys.idem("telegram", "u1", "msg:c1:7")) == first.job_id.encode()
        assert await queue.redis.ttl(keys.idem("telegram", "u1", "msg:c1:7")) > 0
