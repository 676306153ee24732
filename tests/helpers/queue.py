"""Builders for queue tests: a fake engine that implements `likeness.generation.Engine`, selfies, origins, workers.

The fake engine is fast and deterministic; the prompt steers it, so subprocess workers can be steered too:
`noface` raises NoFace, `fail` always raises GenerationFailed, `flaky` fails the first try of each seed,
`oom` raises OutOfMemory for any batch larger than one, `sleep=<s>` spreads `<s>` seconds over the steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import threading
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from likeness.config import Settings
from likeness.errors import GenerationFailed, NoFace, OutOfMemory
from likeness.generation import EditRequest, GenerationResult, PortraitRequest
from likeness.presets import EffectivePreset, PresetCatalog
from likeness.queue import Delivery, DeliveryConsumer, Origin
from likeness.worker import worker_in_loop

STEPS = 4


@dataclass
class FakeEngine:
    """Contract double: records every engine call (`batches`: the prompts of each call)."""

    settings: Settings
    model_key: str = "fake"
    batches: list[list[str]] = field(default_factory=list)
    calls: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.presets = PresetCatalog.load(self.settings.presets_dir)
        self._lock = threading.Lock()
        self._flaky_seen: set[tuple[int, ...]] = set()

    def batch_key(self, request: PortraitRequest) -> Hashable:
        return (request.preset.spec, request.format or request.preset.defaults.format)

    def portrait(self, request: PortraitRequest, progress: Any = None) -> GenerationResult:
        return self.portrait_batch([request], [progress])[0]

    def portrait_batch(
        self, requests: list[PortraitRequest], progress: list[Any] | None = None
    ) -> list[GenerationResult]:
        if not self._lock.acquire(blocking=False):
            raise AssertionError("engine called from two threads at once")
        try:
            return self._run(requests, progress or [None] * len(requests))
        finally:
            self._lock.release()

    def _run(self, requests: list[PortraitRequest], progress: list[Any]) -> list[GenerationResult]:
        if len({self.batch_key(r) for r in requests}) > 1:
            raise ValueError("batch keys differ")
        self.calls += 1
        self.batches.append([r.prompt for r in requests])
        prompts = " ".join(r.prompt for r in requests)
        if "oom" in prompts and len(requests) > 1:
            raise OutOfMemory(batch=len(requests))
        if "noface" in prompts:
            raise NoFace()
        if "fail" in prompts:
            raise GenerationFailed()
        for r in requests:
            if "flaky" in r.prompt and r.seeds not in self._flaky_seen:
                self._flaky_seen.add(r.seeds)
                raise GenerationFailed()
        sleep = max((_sleep_of(r.prompt) for r in requests), default=0.0)
        for step in range(1, STEPS + 1):
            time.sleep(sleep / STEPS)
            for fn in progress:
                if fn is not None:
                    fn(step, STEPS)
        return [_render(r) for r in requests]

    def variation(
        self, source: Image.Image, selfie: Image.Image, preset: EffectivePreset, seeds: tuple[int, ...] = (0,),
        strength: float = 0.55, progress: Any = None, *, prompt: str = "", identity_scale: float | None = None,
    ) -> GenerationResult:  # fmt: skip
        """Variations as the real engine makes them: one call, one image per seed, from `source`."""
        return self.portrait_batch([PortraitRequest(source, preset, f"variation {prompt}", seeds=seeds)], [progress])[0]

    def edit(self, request: EditRequest, progress: Any = None) -> GenerationResult:
        """An edit: the source with the instruction's fingerprint (metadata records the instruction)."""
        fake = PortraitRequest(request.source, request.preset, request.instruction.text, seeds=request.seeds)
        result = self.portrait_batch([fake], [progress])[0]
        result.metadata["instruction"] = request.instruction.text
        return result

    def close(self) -> None:
        self.closed = True


def _sleep_of(prompt: str) -> float:
    match = re.search(r"sleep=([0-9.]+)", prompt)
    return float(match.group(1)) if match else 0.0


def _render(request: PortraitRequest) -> GenerationResult:
    mean = request.selfie.resize((1, 1)).getpixel((0, 0))
    images = []
    for seed in request.seeds:
        tag = hashlib.sha256(f"{request.preset.spec}|{request.prompt}|{seed}".encode()).digest()
        images.append(Image.new("RGB", (32, 32), (tag[0], tag[1], mean[0])))  # type: ignore[index]
    metadata = {"model": "fake", "preset": request.preset.spec, "prompt": request.prompt}
    return GenerationResult(images=images, seeds=list(request.seeds), metadata=metadata)


def selfie(color: str = "peachpuff", size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def origin(user: str = "u1", platform: str = "telegram", chat: str = "c1") -> Origin:
    return Origin(platform=platform, chat_id=chat, user_id=user, message_id="m1")  # type: ignore[arg-type]


@asynccontextmanager
async def running_worker(
    settings: Settings, engine: FakeEngine | None = None, *, max_tries: int = 3, **overrides: Any
) -> AsyncIterator[FakeEngine]:
    """An arq worker with the fake engine on this event loop, closed on exit (`overrides`: arq options)."""
    engine = engine or FakeEngine(settings)
    async with worker_in_loop(
        settings, arq_options=overrides, engine_factory=lambda _s: engine, max_tries=max_tries,
    ):  # fmt: skip
        yield engine


async def next_deliveries(
    settings: Settings, n: int, *, platform: str = "telegram", timeout: float = 10.0, consumer: str = "test"
) -> list[Delivery]:
    """Read and ack `n` deliveries (fails after `timeout`)."""
    got: list[Delivery] = []
    async with DeliveryConsumer(settings, platform, consumer, block_s=0.1) as consumer_:  # type: ignore[arg-type]

        async def read() -> None:
            async for delivery in consumer_:
                got.append(delivery)
                await consumer_.ack(delivery)
                if len(got) == n:
                    return

        await asyncio.wait_for(read(), timeout)
    return got
