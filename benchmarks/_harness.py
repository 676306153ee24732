"""Running queue workers inside the benchmark process, and small inputs (selfies, origins)."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq.worker import Worker
from PIL import Image

from likeness.config import Settings
from likeness.queue import Origin
from likeness.queue._worker import worker_settings

__all__ = ["in_process_worker", "origin", "selfie_bytes"]


def selfie_bytes(color: str = "peachpuff", size: int = 96) -> bytes:
    """A small PNG upload (the tiny engine has no face check)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def origin(user: str, *, chat: str | None = None) -> Origin:
    return Origin(platform="telegram", chat_id=chat or user, user_id=user, message_id="1")


@asynccontextmanager
async def in_process_worker(
    settings: Settings, engine: Any, *, request_factory: Any = None, **arq_overrides: Any
) -> AsyncIterator[Worker]:
    """An arq worker serving `settings.redis_url` with `engine` on this event loop; stopped like SIGTERM."""
    options = worker_settings(settings, engine_factory=lambda _s: engine, request_factory=request_factory)
    options.update(arq_overrides)
    worker = Worker(**options, handle_signals=False)
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
