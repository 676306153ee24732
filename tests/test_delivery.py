"""Reliable delivery: exactly one entry per job, redelivery after a crash, no duplicates across replicas."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from likeness.queue import Delivery, DeliveryConsumer, append_delivery
from tests.helpers.queue import origin


def _delivery(job_id: str) -> Delivery:
    return Delivery(job_id=job_id, kind="portrait", origin=origin(), error_code="no_face", user_message="no face")


async def _read(consumer: DeliveryConsumer, n: int, timeout: float = 3.0) -> list[Delivery]:
    got: list[Delivery] = []

    async def read() -> None:
        async for delivery in consumer:
            got.append(delivery)
            if len(got) == n:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), timeout)
    return got


async def test_a_job_is_appended_once_even_when_its_worker_repeats_it(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    first = await append_delivery(redis, _delivery("j1"), marker_ttl_s=60)
    again = await append_delivery(redis, _delivery("j1"), marker_ttl_s=60)
    assert first and again is None
    assert await redis.xlen("likeness:deliveries:telegram") == 1
    await redis.aclose()


async def test_a_bot_that_was_down_gets_the_delivery_on_start_and_again_after_a_crash(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    await append_delivery(redis, _delivery("j1"), marker_ttl_s=60)  # finished while no bot was running

    async with DeliveryConsumer(redis, "telegram", "bot-1", block_s=0.1) as bot:
        (got,) = await _read(bot, 1)
        assert got.job_id == "j1" and got.delivery_id  # crashed before sending: never acked

    async with DeliveryConsumer(redis, "telegram", "bot-1", block_s=0.1) as restarted:
        (again,) = await _read(restarted, 1)
        assert again.job_id == "j1" and again.delivery_id == got.delivery_id
        assert await restarted.ack(again) and await restarted.pending() == 0
        assert not await restarted.ack(again)

    async with DeliveryConsumer(redis, "telegram", "bot-1", block_s=0.1) as later:
        assert await _read(later, 1, timeout=0.5) == []
    await redis.aclose()


async def test_two_replicas_never_deliver_the_same_entry(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    for i in range(20):
        await append_delivery(redis, _delivery(f"j{i}"), marker_ttl_s=60)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def replica(name: str) -> None:
        async with DeliveryConsumer(redis, "telegram", name, block_s=0.1, batch=2) as consumer:
            for delivery in await _read(consumer, 20, timeout=1.5):
                seen[name].append(delivery.job_id)
                await consumer.ack(delivery)
                await asyncio.sleep(0)

    await asyncio.gather(replica("a"), replica("b"))
    assert not set(seen["a"]) & set(seen["b"])
    assert sorted(seen["a"] + seen["b"]) == sorted(f"j{i}" for i in range(20))
    await redis.aclose()


async def test_entries_of_a_dead_replica_are_taken_over_after_the_idle_time(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    await append_delivery(redis, _delivery("j1"), marker_ttl_s=60)
    async with DeliveryConsumer(redis, "telegram", "dead", block_s=0.1) as dead:
        assert len(await _read(dead, 1)) == 1  # never acks, never comes back
    async with DeliveryConsumer(redis, "telegram", "alive", block_s=0.1, claim_idle_s=0.3) as alive:
        assert await _read(alive, 1, timeout=0.1) == [], "not taken over before the idle time"
        (taken,) = await _read(alive, 1, timeout=3)
        assert taken.job_id == "j1"
        await alive.ack(taken)
        assert await alive.pending() == 0
    await redis.aclose()


async def test_platforms_have_separate_streams(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    discord = _delivery("d1").model_copy(update={"origin": origin(platform="discord")})
    await append_delivery(redis, discord, marker_ttl_s=60)
    async with DeliveryConsumer(redis, "telegram", "tg", block_s=0.1) as tg:
        assert await _read(tg, 1, timeout=0.3) == []
    async with DeliveryConsumer(redis, "discord", "dc", block_s=0.1) as dc:
        (got,) = await _read(dc, 1)
        assert got.origin.platform == "discord"
    await redis.aclose()
