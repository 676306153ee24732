"""End to end with the real tiny engine: a portrait through queue and worker, and micro-batching that
gives the same pixels (within one level) as running each job alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from likeness.config import Settings
from likeness.queue import QueueClient
from likeness.requests import PortraitSpec
from tests.helpers.faces import astronaut, colour_jitter, grace_hopper
from tests.helpers.queue import next_deliveries, origin
from tests.helpers.stack import serving_worker

pytest.importorskip("diffusers")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# Selfies need a face (the engine analyses each one): three different photos.
SELFIES = {
    "astronaut": lambda: _png(astronaut()),
    "hopper": lambda: _png(grace_hopper()),
    "astronaut-warm": lambda: _png(colour_jitter(astronaut(), brightness=1.1, contrast=0.9, saturation=1.3)),
}
JOBS = [("a", "astronaut", 11), ("b", "hopper", 22), ("c", "astronaut-warm", 33)]


async def _run_jobs(settings: Settings) -> dict[str, tuple[int, np.ndarray]]:
    async with QueueClient(settings) as queue:
        tickets = {}
        for user, photo, seed in JOBS:
            params = PortraitSpec(preset="ghibli", prompt="smiling", seed=seed)
            tickets[user] = await queue.submit_portrait(origin(user), SELFIES[photo](), params)
        async with serving_worker(settings):
            events = [e async for e in queue.progress(tickets["a"].job_id, idle_timeout_s=120)]
            deliveries = await next_deliveries(settings, 3, timeout=120)
        out = {}
        for d in deliveries:
            assert d.ok, d.user_message
            assert d.result.metadata.model == "tiny" and d.result.seeds == (
                dict((u, s) for u, _, s in JOBS)[d.origin.user_id],
            )
            image = Image.open(io.BytesIO(await queue.get_image(d.result.image_blob_ids[0])))
            assert image.format == "PNG" and image.mode == "RGB"
            out[d.origin.user_id] = (d.result.metadata.batch_size, np.asarray(image, dtype=np.int16))
    stages = [e.stage for e in events]
    assert stages[0] == "queued" and "step" in stages and stages[-1] == "done"
    return out


async def test_batched_jobs_match_unbatched_jobs_through_the_worker(make_settings, redis_url):
    batched = await _run_jobs(make_settings(redis_url=redis_url, max_batch=4, batch_window_ms=300, job_timeout_s=120))
    alone = await _run_jobs(make_settings(redis_url=redis_url, max_batch=1, job_timeout_s=120))
    assert {size for size, _ in batched.values()} == {3}
    assert {size for size, _ in alone.values()} == {1}
    for user in batched:
        diff = np.abs(batched[user][1] - alone[user][1]).max()
        assert diff <= 1, f"{user}: batched output differs by {diff} levels"
    assert np.abs(batched["a"][1] - batched["b"][1]).max() > 1, "different selfies and seeds give different images"
