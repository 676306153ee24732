"""Running queue workers inside the benchmark process, and small inputs (selfies, origins)."""

from __future__ import annotations

import functools
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from PIL import Image

from likeness.config import Settings
from likeness.queue import Origin
from likeness.worker import LikenessWorker, worker_in_loop

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
async def in_process_worker(settings: Settings, engine: Any, **arq_overrides: Any) -> AsyncIterator[LikenessWorker]:
    """An arq worker serving `settings.redis_url` with `engine` on this event loop; stopped like SIGTERM."""
    async with worker_in_loop(settings, arq_options=arq_overrides, engine_factory=lambda _s: engine) as worker:
        yield worker
