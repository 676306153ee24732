"""Stopping background tasks without losing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; re-raise what it failed with (other than the cancel).

    Not `task.cancel(); with suppress(CancelledError): await task`: that also swallows a cancellation of the
    CALLER arriving meanwhile, which then runs on (found as a Discord delivery loop that never stopped).
    """
    task.cancel()
    await asyncio.wait([task])  # raises CancelledError only when the caller itself is cancelled
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
