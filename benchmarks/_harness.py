"""Running queue workers inside the benchmark process, and small inputs (selfies, origins)."""

from __future__ import annotations

import asyncio
import functools
import io
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from PIL import Image

from likeness.config import Settings
from likeness.queue import Origin
from likeness.queue._worker import LikenessWorker, worker_settings

__all__ = ["in_process_worker", "origin", "selfie_bytes", "selfie_image"]


@functools.cache
def _astronaut() -> Image.Image:
    from skimage import data  # a real face that ships with scikit-image (the test extra)

    return Image.fromarray(data.astronaut()).convert("RGB")


def selfie_image() -> Image.Image:
    """A real face photo (the engine analyses every selfie; the face must be ≥ 64 px), 512²."""
    return _astronaut().copy()


def selfie_bytes() -> bytes:
    """`selfie_image` as a JPEG upload."""
    buf = io.BytesIO()
    selfie_image().save(buf, "JPEG", quality=90)
    return buf.getvalue()


def origin(user: str, *, chat: str | None = None) -> Origin:
    return Origin(platform="telegram", chat_id=chat or user, user_id=user, message_id="1")


@asynccontextmanager
async def in_process_worker(
    settings: Settings, engine: Any, *, request_factory: Any = None, **arq_overrides: Any
) -> AsyncIterator[LikenessWorker]:
    """An arq worker serving `settings.redis_url` with `engine` on this event loop; stopped like SIGTERM."""
    options = worker_settings(settings, engine_factory=lambda _s: engine, request_factory=request_factory)
    options.update(arq_overrides)
    worker = LikenessWorker(**options, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        await worker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
