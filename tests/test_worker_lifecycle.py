"""Whole-system behaviour with the fake engine: fair order, data lifetime (TTLs, forget)."""

from __future__ import annotations

import time

import pytest

from likeness.errors import ResultExpired
from likeness.queue import DeliveryConsumer, QueueClient
from likeness.requests import PortraitSpec, edit_spec
from tests.helpers.queue import next_deliveries, origin, running_worker, selfie


async def test_a_users_backlog_delays_another_user_by_at_most_about_one_job(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, max_active_jobs_per_user=10, max_batch=1)
    job_s = 0.25
    async with QueueClient(settings) as queue:
        await queue.redis.lpush("likeness:durations", job_s)
        for i in range(8):
            await queue.submit_portrait(
                origin("heavy"), selfie(), PortraitSpec(preset="ghibli", prompt=f"h{i} sleep={job_s}")
            )
        submitted = time.monotonic()
        await queue.submit_portrait(
            origin("light"), selfie(), PortraitSpec(preset="ghibli", prompt=f"light sleep={job_s}")
        )
        async with running_worker(settings) as engine:
            deliveries = await next_deliveries(settings, 9, timeout=20)
            light_done = next(i for i, d in enumerate(deliveries) if d.origin.user_id == "light")
            waited = time.monotonic() - submitted
    order = [batch[0].split()[0] for batch in engine.batches]
    assert order.index("light") == 1, order  # FIFO would make it 9th
    assert light_done == 1
    assert waited < 20


async def test_every_key_written_has_a_ttl(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url)
    async with QueueClient(settings) as queue:
        async with running_worker(settings):
            first = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
            (done,) = await next_deliveries(settings, 1)
            await queue.submit_reroll(origin(), done.result.result_id)
            blue = edit_spec("blue hair", has_mask=True, max_chars=400)
            await queue.submit_edit(origin(), done.result.result_id, blue, mask=selfie("white"))
            await next_deliveries(settings, 2)
            _ = [e async for e in queue.progress(first.job_id)]
        queued = await queue.submit_portrait(origin("u2"), selfie(), PortraitSpec(preset="ghibli"))
        await queue.cancel("u2", queued.job_id)
        async with DeliveryConsumer(settings, "discord", "bot") as consumer:
            await consumer.pending()  # creates the discord stream and group
        await queue.stats()
        keys = [k.decode() async for k in queue.redis.scan_iter(count=1000)]
        ttls = {k: await queue.redis.ttl(k) for k in keys}
    assert any(k.startswith("likeness:blob:img-") for k in keys) and any("limits" in k for k in keys)
    assert any(k.startswith("likeness:deliveries:") for k in keys)
    assert {k: t for k, t in ttls.items() if t < 0} == {}


async def test_forget_deletes_a_users_data_and_nothing_else(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url)
    async with QueueClient(settings) as queue:
        async with running_worker(settings):
            await queue.submit_portrait(origin("me"), selfie(), PortraitSpec(preset="ghibli", count=2))
            await queue.submit_portrait(origin("other"), selfie(), PortraitSpec(preset="ghibli"))
            deliveries = {d.origin.user_id: d for d in await next_deliveries(settings, 2)}
        pending = await queue.submit_portrait(origin("me"), selfie(), PortraitSpec(preset="ghibli"))
        counts = await queue.forget("me")
        mine, theirs = deliveries["me"].result, deliveries["other"].result
        with pytest.raises(ResultExpired):
            await queue.get_result(mine.result_id)
        for blob in mine.image_blob_ids:
            with pytest.raises(ResultExpired):
                await queue.get_image(blob)
        assert await queue.get_result(theirs.result_id) == theirs
        assert await queue.get_image(theirs.image_blob_ids[0])
        assert await queue.position(pending.job_id) is None
        leftovers = [k.decode() async for k in queue.redis.scan_iter(match="likeness:*me*")]
    assert counts == {"cancelled": 1, "results": 1, "images": 2, "uploads": 2, "jobs": 2, "messages": 0}
    # Only the rate-limit window stays (it expires within the window): forgetting must not reset limits.
    assert [k for k in leftovers if not k.startswith("likeness:limits:")] == []


async def test_worker_and_client_ride_out_a_redis_restart(make_settings, tmp_path):
    from likeness.redis_server import RedisServer

    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        settings = make_settings(redis_url=server.url)
        async with QueueClient(settings) as queue, running_worker(settings):
            await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
            (before,) = await next_deliveries(settings, 1)
            server.restart()
            ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="after"))
            (after,) = await next_deliveries(settings, 1, timeout=20)
    assert before.ok and after.ok and after.job_id == ticket.job_id


async def test_forget_stops_a_running_remix_of_the_users_face(make_settings, redis_url):
    """Bob rerolls Alice's result (collaboration); Alice's /forget while it runs: nothing of it is stored or sent."""
    import asyncio

    from likeness.queue import keys

    settings = make_settings(redis_url=redis_url)
    async with QueueClient(settings) as queue, running_worker(settings):
        await queue.submit_portrait(origin("alice"), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=1.5"))
        (done,) = await next_deliveries(settings, 1)
        remix = await queue.submit_reroll(origin("bob"), done.result.result_id)
        for _ in range(100):  # until the worker runs it
            if await queue.position(remix.job_id) == 0:
                break
            await asyncio.sleep(0.05)
        await queue.forget("alice")
        await asyncio.sleep(2.5)  # longer than the remix would take
        remix_payload_gone = await queue.get_job(remix.job_id) is None
        results = [k async for k in queue.redis.scan_iter(match=keys.result("*"))]
        bobs = await queue.cancel("bob")
    assert remix_payload_gone and results == [] and bobs == []
    with pytest.raises(TimeoutError):
        await next_deliveries(settings, 1, timeout=1)  # no delivery for the remix
