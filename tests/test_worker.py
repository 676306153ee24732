"""The worker with the fake engine: round trip, lineage, progress, errors and retries, batching."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from likeness.queue import QueueClient
from likeness.requests import PortraitSpec
from tests.helpers.queue import STEPS, next_deliveries, origin, running_worker, selfie


@pytest.fixture
def settings(make_settings, redis_url):
    return make_settings(redis_url=redis_url, batch_window_ms=30, max_batch=4, job_timeout_s=20)


async def test_round_trip_delivers_result_with_images_and_progress(settings):
    async with QueueClient(settings) as queue, running_worker(settings) as engine:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", count=2, seed=7))
        events = [e async for e in queue.progress(ticket.job_id, idle_timeout_s=10)]
        (delivery,) = await next_deliveries(settings, 1)

    assert [e.stage for e in events][:2] == ["queued", "started"]
    assert events[-1].stage == "done"
    steps = [e.step for e in events if e.stage == "step"]
    assert steps and steps == sorted(steps) and steps[-1] == STEPS
    assert delivery.ok and delivery.job_id == ticket.job_id and delivery.origin == origin()
    record = delivery.result
    assert record.seeds == (7, 8) and len(record.image_blob_ids) == 2
    assert record.request.portrait.preset == "ghibli" and record.owner_user_id == "u1"
    images = [Image.open(io.BytesIO(await _image(settings, b))) for b in record.image_blob_ids]
    assert all(img.size == (32, 32) for img in images) and images[0].tobytes() != images[1].tobytes()
    assert engine.calls == 1


async def _image(settings, blob_id):
    async with QueueClient(settings) as queue:
        return await queue.get_image(blob_id)


async def test_reroll_repeats_the_request_with_new_seeds_and_keeps_lineage(settings):
    async with QueueClient(settings) as queue, running_worker(settings):
        params = PortraitSpec(preset="ghibli", prompt="in a garden", format="story", seed=1)
        await queue.submit_portrait(origin(), selfie(), params)
        (first,) = await next_deliveries(settings, 1)
        reroll = await queue.submit_reroll(origin("u2"), first.result.result_id)
        (second,) = await next_deliveries(settings, 1)
        again = await queue.submit_reroll(origin(), second.result.result_id)
        (third,) = await next_deliveries(settings, 1)
        parent = await queue.get_result(second.result.parent_id)

    assert second.job_id == reroll.job_id and second.kind == "reroll"
    assert second.result.parent_id == first.result.result_id and parent == first.result
    assert third.job_id == again.job_id and third.result.parent_id == second.result.result_id
    for later in (second, third):
        req = later.result.request
        assert (req.portrait.prompt, req.portrait.format, req.portrait.preset) == ("in a garden", "story", "ghibli")
        assert req.selfie_blob_id == first.result.request.selfie_blob_id
    assert len({first.result.seeds, second.result.seeds, third.result.seeds}) == 3
    assert second.origin.user_id == "u2"


async def test_variations_make_count_new_images(settings):
    async with QueueClient(settings) as queue, running_worker(settings):
        await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
        (first,) = await next_deliveries(settings, 1)
        await queue.submit_variations(origin(), first.result.result_id, count=3)
        (var,) = await next_deliveries(settings, 1)
        await queue.submit_reroll(origin(), var.result.result_id)
        (again,) = await next_deliveries(settings, 1)
    assert var.kind == "variations" and len(var.result.image_blob_ids) == 3
    assert var.result.parent_id == first.result.result_id
    assert var.result.request.mode == "variation"
    assert var.result.request.source_blob_id == first.result.image_blob_ids[0]
    assert again.ok and again.result.request.mode == "variation" and len(again.result.image_blob_ids) == 3


async def test_user_error_is_delivered_at_once_without_retry(settings):
    async with QueueClient(settings) as queue, running_worker(settings) as engine:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="noface"))
        (delivery,) = await next_deliveries(settings, 1)
        events = [e.stage async for e in queue.progress(ticket.job_id, idle_timeout_s=5)]
        stats = await queue.stats()
    assert not delivery.ok and delivery.error_code == "no_face"
    assert "face" in delivery.user_message
    assert engine.calls == 1 and events[-1] == "failed"
    assert stats.failures_today == {"no_face": 1}
    assert await _active(settings, "u1") == 0


async def _active(settings, user):
    async with QueueClient(settings) as queue:
        return await queue.redis.zcard(f"likeness:user:{user}:active")


async def test_transient_failure_is_retried_then_succeeds(settings):
    async with QueueClient(settings) as queue, running_worker(settings) as engine:
        await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="flaky"))
        (delivery,) = await next_deliveries(settings, 1, timeout=15)
    assert delivery.ok and engine.calls == 2


async def test_persistent_failure_is_delivered_as_error_after_max_tries(settings):
    async with QueueClient(settings) as queue, running_worker(settings, max_tries=2) as engine:
        await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="fail"))
        (delivery,) = await next_deliveries(settings, 1, timeout=15)
    assert not delivery.ok and delivery.error_code == "generation_failed"
    assert delivery.job_id[:8] in delivery.user_message
    assert engine.calls == 2


async def test_concurrent_compatible_jobs_share_one_engine_call(settings):
    async with QueueClient(settings) as queue:
        for i in range(3):
            await queue.submit_portrait(origin(f"u{i}"), selfie(), PortraitSpec(preset="ghibli", prompt=f"p{i}"))
        async with running_worker(settings) as engine:
            deliveries = await next_deliveries(settings, 3)
    assert engine.batches == [["p0", "p1", "p2"]] or sorted(map(len, engine.batches)) == [3]
    assert {d.result.metadata.batch_size for d in deliveries} == {3}


async def test_incompatible_jobs_are_not_batched(settings):
    async with QueueClient(settings) as queue:
        await queue.submit_portrait(origin("a"), selfie(), PortraitSpec(preset="ghibli", prompt="sq"))
        await queue.submit_portrait(origin("b"), selfie(), PortraitSpec(preset="ghibli", prompt="st", format="story"))
        await queue.submit_portrait(origin("c"), selfie(), PortraitSpec(preset="ghibli", prompt="sq2"))
        async with running_worker(settings) as engine:
            deliveries = await next_deliveries(settings, 3)
    assert sorted(sorted(b) for b in engine.batches) == [["sq", "sq2"], ["st"]]
    sizes = {d.result.request.portrait.prompt: d.result.metadata.batch_size for d in deliveries}
    assert sizes == {"sq": 2, "sq2": 2, "st": 1}


async def test_out_of_memory_splits_the_batch(settings):
    async with QueueClient(settings) as queue:
        for i in range(4):
            await queue.submit_portrait(origin(f"u{i}"), selfie(), PortraitSpec(preset="ghibli", prompt=f"oom{i}"))
        async with running_worker(settings) as engine:
            deliveries = await next_deliveries(settings, 4)
    assert all(d.ok for d in deliveries)
    sizes = [len(b) for b in engine.batches]
    assert max(sizes) > 1, "the jobs were batched"
    # The fake engine runs out of memory for any batch > 1: each batch was halved until every job ran alone.
    assert sizes.count(1) == 4
    for size in (n for n in sizes if n > 1):
        later = sizes[sizes.index(size) + 1 :]
        assert (size + 1) // 2 in later and size // 2 in later


async def test_one_bad_selfie_fails_only_its_own_job_in_a_batch(settings):
    async with QueueClient(settings) as queue:
        for i, prompt in enumerate(["fine", "noface", "also fine"]):
            await queue.submit_portrait(origin(f"u{i}"), selfie(), PortraitSpec(preset="ghibli", prompt=prompt))
        async with running_worker(settings):
            deliveries = await next_deliveries(settings, 3)
    outcome = {d.origin.user_id: d.error_code for d in deliveries}
    assert outcome == {"u0": None, "u1": "no_face", "u2": None}


async def test_cancel_queued_and_running_jobs(settings):
    async with QueueClient(settings) as queue:
        running = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=3"))
        queued = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", format="story"))
        async with running_worker(settings, max_jobs=1):
            async for event in queue.progress(running.job_id):
                if event.stage == "step":
                    break
            assert await queue.cancel("u1", queued.job_id) == [queued.job_id]
            assert await queue.position(queued.job_id) is None
            assert await queue.cancel("u1") == [running.job_id]
            stages = [e.stage async for e in queue.progress(running.job_id, idle_timeout_s=5)]
            await asyncio.sleep(1.0)
            assert await queue.position(running.job_id) is None
        pending = (
            await queue.redis.xlen("likeness:deliveries:telegram")
            if await queue.redis.exists("likeness:deliveries:telegram")
            else 0
        )
        assert stages[-1] == "cancelled" and pending == 0
        assert await queue.redis.zcard("likeness:user:u1:active") == 0


async def test_metrics_endpoint_reports_jobs_batches_and_failures(make_settings, redis_url):
    import urllib.request

    from likeness.redis_server import free_port

    port = free_port()
    settings = make_settings(redis_url=redis_url, metrics_port=port)
    async with QueueClient(settings) as queue, running_worker(settings):
        await queue.submit_portrait(origin("a"), selfie(), PortraitSpec(preset="ghibli"))
        await queue.submit_portrait(origin("b"), selfie(), PortraitSpec(preset="ghibli", prompt="noface"))
        await next_deliveries(settings, 2)
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'likeness_job_seconds_count{kind="portrait"} 1.0' in body
    assert 'likeness_job_failures_total{cause="no_face"} 1.0' in body
    assert "likeness_batch_size_count" in body and "likeness_queue_depth" in body


async def test_a_job_whose_selfie_expired_is_answered_not_dropped(settings):
    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
        job = await queue.get_job(ticket.job_id)
        await queue.redis.delete(f"likeness:blob:{job.selfie_blob_id}")
        async with running_worker(settings):
            (delivery,) = await next_deliveries(settings, 1)
    assert delivery.error_code == "result_expired" and "expired" in delivery.user_message


async def test_a_job_over_its_deadline_is_answered_with_a_timeout(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, job_timeout_s=3)  # our deadline: 3 s - 2 s margin
    async with QueueClient(settings) as queue, running_worker(settings):
        await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=2"))
        (delivery,) = await next_deliveries(settings, 1)
    assert delivery.error_code == "job_timeout" and "too long" in delivery.user_message


async def test_a_job_killed_on_every_try_is_answered_after_the_last(settings):
    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
        await queue.redis.set(f"arq:retry:{ticket.job_id}", 3, ex=60)  # as if 3 tries died with their worker
        async with running_worker(settings, max_tries=3) as engine:
            (delivery,) = await next_deliveries(settings, 1)
    assert delivery.error_code == "generation_failed" and engine.calls == 0
