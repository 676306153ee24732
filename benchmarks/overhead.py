"""1. Worker overhead: one portrait through Redis + an arq worker vs. the same engine called directly.

Both paths make the same PNG from the same upload on the same loaded tiny engine: decode the upload,
generate, then what every image gets before it leaves a worker (`finish_images`: the NSFW output guard and
the AI-generated marker, encoded as PNG); the direct path also reports that last step alone. The queue path
adds: submit (validation, a regular user's limits, blob store, enqueue, wake-up), the worker's pickup, the
micro-batch decision, progress events, storing the result, the delivery stream and reading it back. Direct
and queued runs alternate, so drift (thermal, caches) hits both; overhead = queued − direct per pair.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._common import BenchContext, BenchResult, Target, summary_ms, tiny_settings
from benchmarks._harness import in_process_worker, origin, selfie_bytes

NAME = "overhead"
TITLE = "Worker overhead: Redis + worker vs direct engine call (tiny model, CPU)"
PRESET = "ghibli"
SEED = 7


def run(ctx: BenchContext) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: BenchContext) -> BenchResult:
    from likeness.generation import PortraitRequest
    from likeness.generation._nsfw import load_nsfw_guard
    from likeness.generation._output import finish_images
    from likeness.images import load_image
    from likeness.queue import DeliveryConsumer, QueueClient
    from likeness.requests import PortraitSpec

    engine = ctx.shared_engine()
    guard = load_nsfw_guard(tiny_settings(ctx.data_dir))
    upload = selfie_bytes()
    iterations = 6 if ctx.quick else 25
    windows = (30,) if ctx.quick else (30, 0)
    result = BenchResult(NAME, TITLE)
    # The worker calls the engine from a one-thread executor; the direct call does too, so both run in
    # the same kind of thread (torch's thread settings and the GIL behave alike).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="direct")
    loop = asyncio.get_running_loop()

    finish_s: list[float] = []

    def direct_call() -> float:
        start = time.perf_counter()
        selfie = load_image(upload, max_bytes=20 * 2**20, max_pixels=40_000_000)
        request = PortraitRequest(selfie=selfie, preset=engine.presets.resolve(PRESET), seeds=(SEED,))
        out = engine.portrait(request)
        finished = time.perf_counter()
        finish_images(out.images, out.metadata, guard=guard, watermark=True)
        end = time.perf_counter()
        finish_s.append(end - finished)
        return end - start

    async def direct() -> float:
        return await loop.run_in_executor(executor, direct_call)

    for window_ms in windows:
        # A regular user (limits checked), with room for every request of the run.
        settings = tiny_settings(
            ctx.data_dir, redis_url=ctx.redis_url(), batch_window_ms=window_ms, rate_limit="100000/minute"
        )
        async with (
            in_process_worker(settings, engine),
            QueueClient(settings, presets=engine.presets) as queue,
            DeliveryConsumer(queue.redis, "telegram", "bench", block_s=0.5) as consumer,
        ):
            deliveries = consumer.__aiter__()

            async def queued(deliveries: Any = deliveries, queue: Any = queue, consumer: Any = consumer) -> float:
                start = time.perf_counter()
                ticket = await queue.submit_portrait(origin("bench"), upload, PortraitSpec(preset=PRESET, seed=SEED))
                delivery = await asyncio.wait_for(deliveries.__anext__(), 120)
                elapsed = time.perf_counter() - start
                await consumer.ack(delivery)
                if delivery.job_id != ticket.job_id or not delivery.ok:
                    raise RuntimeError(f"unexpected delivery {delivery.job_id}: {delivery.user_message}")
                return elapsed

            for _ in range(2):  # warm-up: LoRA slot, scheduler, Redis connections
                await direct()
                await queued()
            direct_s: list[float] = []
            queued_s: list[float] = []
            for i in range(iterations):
                # Alternate which goes first, so neither path always follows the other.
                if i % 2:
                    queued_s.append(await queued())
                    direct_s.append(await direct())
                else:
                    direct_s.append(await direct())
                    queued_s.append(await queued())
        overhead = [q - d for q, d in zip(queued_s, direct_s, strict=True)]
        ratio = statistics.median(queued_s) / statistics.median(direct_s)
        over = summary_ms(overhead)
        label = f"window {window_ms} ms"
        result.rows += [
            {"path": "direct", "batch_window_ms": window_ms, **summary_ms(direct_s)},
            {"path": "direct: guard+marker", "batch_window_ms": window_ms, **summary_ms(finish_s[-iterations:])},
            {"path": "queue+worker", "batch_window_ms": window_ms, **summary_ms(queued_s), "ratio": round(ratio, 3)},
            {"path": "overhead", "batch_window_ms": window_ms, **over},
        ]
        result.targets += [
            Target(f"median ratio queued/direct ({label})", ratio, 1.05, "<="),
            Target(f"p50 overhead ({label})", over["p50_ms"], 30, "<=", " ms"),
        ]
        result.details[label] = _raw(direct_s, queued_s)
    executor.shutdown()
    result.notes.append(
        "The batch window (default 30 ms) is a deliberate wait for batch-mates; window 0 shows the rest of the cost."
    )
    return result


def _raw(direct_s: list[float], queued_s: list[float]) -> dict[str, Any]:
    return {"direct_s": [round(x, 4) for x in direct_s], "queued_s": [round(x, 4) for x in queued_s]}
