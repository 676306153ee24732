"""Workers are woken by new jobs and aborts instead of polling fast: prompt pickup, little idle Redis traffic."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from likeness.queue import QueueClient
from likeness.redis_server import RedisServer
from likeness.requests import PortraitSpec
from tests.helpers.queue import next_deliveries, origin, running_worker, selfie

SLOW_POLL_S = 30.0  # far longer than any wait below: only a wake-up can explain a prompt start


async def _commands(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int((await client.info("stats"))["total_commands_processed"])
    finally:
        await client.aclose()


async def _subscribers(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        ((_, count),) = await client.pubsub_numsub("likeness:wake")
        return int(count)
    finally:
        await client.aclose()


async def _until_listening(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await _subscribers(url) < 1:
        assert time.monotonic() < deadline, "the worker never subscribed to the wake-up channel"
        await asyncio.sleep(0.05)


async def test_an_idle_worker_starts_a_new_job_at_once_not_at_its_next_poll(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, poll_delay_s=SLOW_POLL_S, batch_window_ms=0)
    async with QueueClient(settings) as queue, running_worker(settings):
        await _until_listening(redis_url)
        await asyncio.sleep(0.3)  # the worker has polled once and now waits
        started = time.monotonic()
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
        (delivery,) = await next_deliveries(settings, 1, timeout=5)
        took = time.monotonic() - started
    assert delivery.ok and delivery.job_id == ticket.job_id
    assert took < 3, f"picked up after {took:.1f} s"


async def test_cancelling_a_running_job_aborts_it_before_the_next_poll(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url, poll_delay_s=SLOW_POLL_S)
    async with QueueClient(settings) as queue, running_worker(settings):
        await _until_listening(redis_url)
        running = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=4"))
        async for event in queue.progress(running.job_id, idle_timeout_s=5):
            if event.stage == "step":
                break
        assert await queue.redis.exists(f"arq:in-progress:{running.job_id}")
        assert await queue.cancel("u1", running.job_id) == [running.job_id]
        deadline = time.monotonic() + 2
        while await queue.redis.exists(f"arq:in-progress:{running.job_id}"):
            assert time.monotonic() < deadline, "the running job was not aborted within 2 s"
            await asyncio.sleep(0.05)


async def test_idle_and_busy_workers_make_few_redis_calls(make_settings, redis_url):
    settings = make_settings(redis_url=redis_url)  # default safety-net poll (0.5 s)
    async with QueueClient(settings) as queue, running_worker(settings):
        await _until_listening(redis_url)
        before = await _commands(redis_url)
        await asyncio.sleep(2)
        idle = await _commands(redis_url) - before - 1  # minus our own INFO

        await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=2"))
        await asyncio.sleep(0.3)
        before = await _commands(redis_url)
        await asyncio.sleep(1.5)  # the job is running all along
        busy = await _commands(redis_url) - before - 1
        await next_deliveries(settings, 1, timeout=10)
    # Polling every 10 ms (arq's way of starting jobs promptly) costs ~2 calls per poll when idle and ~5 while
    # a job runs (arq re-checks every job in its queue, its own running ones too): ~400 and ~750 here.
    assert idle <= 30, f"{idle} Redis calls in 2 s of idling"
    assert busy <= 80, f"{busy} Redis calls in 1.5 s of running one job"


async def test_the_wake_up_channel_survives_a_redis_restart(make_settings, tmp_path):
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        settings = make_settings(redis_url=server.url, poll_delay_s=SLOW_POLL_S, batch_window_ms=0)
        async with running_worker(settings):
            await _until_listening(server.url)
            server.restart()
            await _until_listening(server.url, timeout=20)
            async with QueueClient(settings) as queue:
                ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli"))
                (delivery,) = await next_deliveries(settings, 1, timeout=5)
    assert delivery.ok and delivery.job_id == ticket.job_id
