"""2. Micro-batching: throughput of N concurrent compatible requests, batching on (max_batch = N) vs off (1).

N users submit one portrait each at the same moment (same preset and format, so one batch key; different
seeds); the wall time runs from the first submit to the last delivery. Same worker code, same engine; only
`max_batch` differs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from benchmarks._common import BenchContext, BenchResult, Target, tiny_settings
from benchmarks._harness import in_process_worker, origin, selfie_bytes, selfie_image

NAME = "batching"
TITLE = "Micro-batching: N concurrent compatible requests, max_batch=N vs max_batch=1 (tiny model, CPU)"
PRESET = "ghibli"


def run(ctx: BenchContext) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: BenchContext) -> BenchResult:
    engine = ctx.shared_engine()
    repeats = 1 if ctx.quick else 3
    result = BenchResult(NAME, TITLE)
    for n in (4, 8):
        walls: dict[str, float] = {}
        sizes: dict[str, list[int]] = {}
        for label, max_batch in (("off", 1), ("on", n)):
            runs, sizes[label] = await _measure(ctx, engine, n, max_batch, repeats)
            walls[label] = statistics.median(runs)
            result.rows.append(
                {
                    "requests": n,
                    "batching": label,
                    "max_batch": max_batch,
                    "wall_s": round(walls[label], 3),
                    "images_per_s": round(n / walls[label], 2),
                    "batch_sizes": "+".join(map(str, sizes[label])),
                }
            )
        gain = walls["off"] / walls["on"]
        result.rows[-1]["gain"] = round(gain, 2)
        result.targets.append(Target(f"throughput gain with batching, {n} requests", gain, 2.0, ">=", "×"))
        result.rows.append(await asyncio.to_thread(_engine_only, engine, n, repeats))
    result.notes.append(
        "engine-only rows: N portrait() calls vs one portrait_batch(N) on the same engine, without the queue; "
        "the gap to the queue rows is requests that miss the batch window (batch_sizes shows the split)."
    )
    return result


def _engine_only(engine: Any, n: int, repeats: int) -> dict[str, Any]:
    """The engine's own batching gain, for reference: N single calls vs one batched call (same requests)."""

    from likeness.generation import PortraitRequest

    selfie = selfie_image()
    requests = [
        PortraitRequest(selfie=selfie, preset=engine.presets.resolve(PRESET), seeds=(1000 + i,)) for i in range(n)
    ]
    engine.portrait_batch(requests)  # warm-up
    singles, batched = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for request in requests:
            engine.portrait(request)
        singles.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.portrait_batch(requests)
        batched.append(time.perf_counter() - start)
    single, batch = statistics.median(singles), statistics.median(batched)
    return {
        "requests": n,
        "batching": "engine only",
        "max_batch": n,
        "wall_s": round(batch, 3),
        "images_per_s": round(n / batch, 2),
        "batch_sizes": f"{n} vs {n}×1 ({single:.3f} s)",
        "gain": round(single / batch, 2),
    }


async def _measure(
    ctx: BenchContext, engine: Any, n: int, max_batch: int, repeats: int
) -> tuple[list[float], list[int]]:
    from likeness.queue import DeliveryConsumer, QueueClient
    from likeness.requests import PortraitSpec

    users = [f"user{i}" for i in range(n)]
    settings = tiny_settings(ctx.data_dir, redis_url=ctx.redis_url(), max_batch=max_batch, admins=users)
    upload = selfie_bytes()
    walls: list[float] = []
    sizes: list[int] = []
    async with (
        in_process_worker(settings, engine),
        QueueClient(settings, presets=engine.presets) as queue,
        DeliveryConsumer(queue.redis, "telegram", "bench", block_s=0.5) as consumer,
    ):
        deliveries = consumer.__aiter__()

        async def once() -> tuple[float, list[int]]:
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    queue.submit_portrait(origin(user), upload, PortraitSpec(preset=PRESET, seed=1000 + i))
                    for i, user in enumerate(users)
                )
            )
            got = []
            for _ in range(n):
                delivery = await asyncio.wait_for(deliveries.__anext__(), 300)
                await consumer.ack(delivery)
                if not delivery.ok:
                    raise RuntimeError(f"job failed: {delivery.user_message}")
                got.append(delivery)
            wall = time.perf_counter() - start
            sizes = {int(str(d.result.metadata["batch_size"])) for d in got if d.result is not None}
            return wall, sorted(sizes, reverse=True)

        await once()  # warm-up (LoRA slot, batch shapes)
        for _ in range(repeats):
            wall, batch_sizes = await once()
            walls.append(wall)
            sizes = batch_sizes
    return walls, sizes
