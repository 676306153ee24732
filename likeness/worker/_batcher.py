"""Micro-batching: concurrently running arq jobs share one `portrait_batch` call when compatible.

The worker runs several arq jobs at once (`max_jobs` = `max_batch`); each job hands its request to
the batcher and awaits its own future. The batcher waits `window_s` after the first pending request
(unless `more_coming` says no other job is on its way: then a lone job starts at once),
takes up to `max_batch` pending requests with the first one's `batch_key`, and runs them as ONE engine
call on a single engine thread (the engine is not thread-safe). Requests with other keys stay pending for
the next round. Failures: `OutOfMemory` splits the batch in halves and retries each half; any other
error of a multi-request batch re-runs the requests one by one, so one bad selfie (a `UserError`) fails
only its own job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from likeness.errors import OutOfMemory

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(eq=False)
class _Item:
    key: Hashable
    request: Any
    progress: ProgressFn | None
    future: asyncio.Future[tuple[Any, int]] = field(repr=False)


class MicroBatcher:
    """Collects requests for `window_s` and runs compatible ones as one `engine.portrait_batch` call.

    `submit` returns `(result, batch_size)`; cancelling the awaiting task drops the request if its batch
    has not started yet.
    """

    def __init__(
        self,
        engine: Any,
        *,
        window_s: float,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
        more_coming: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.more_coming = more_coming
        self.window_s = window_s
        self.max_batch = max(1, max_batch)
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likeness-engine")
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: Any, progress: ProgressFn | None = None) -> tuple[Any, int]:
        loop = asyncio.get_running_loop()
        item = _Item(self.engine.batch_key(request), request, progress, loop.create_future())
        self._pending.append(item)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="likeness-batcher")
        return await item.future

    async def close(self) -> None:
        """Stop batching and wait for a running engine call to end (a thread can't be interrupted)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                self._pending = [i for i in self._pending if not i.future.done()]
                if not self._pending:
                    break
                # Wait for batch-mates only when some may come: a lone job starts at once.
                if len(self._pending) < self.max_batch and (self.more_coming is None or await self.more_coming()):
                    await asyncio.sleep(self.window_s)
                group = self._take_group()
                if group:
                    await self._run(group)

    def _take_group(self) -> list[_Item]:
        live = [i for i in self._pending if not i.future.done()]
        if not live:
            return []
        key = live[0].key
        group = [i for i in live if i.key == key][: self.max_batch]
        self._pending = [i for i in live if i not in group]
        return group

    async def _run(self, group: list[_Item]) -> None:
        group = [i for i in group if not i.future.done()]
        if not group:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor,
                self.engine.portrait_batch,
                [i.request for i in group],
                [i.progress for i in group],
            )
        except OutOfMemory as exc:
            if len(group) == 1:
                self._fail(group, exc)
                return
            half = len(group) // 2
            log.warning("out of memory with a batch of %d; retrying as %d + %d", len(group), half, len(group) - half)
            await self._run(group[:half])
            await self._run(group[half:])
            return
        except Exception as exc:
            if len(group) == 1:
                self._fail(group, exc)
                return
            log.warning("a batch of %d failed (%s); running its requests one by one", len(group), type(exc).__name__)
            for item in group:
                await self._run([item])
            return
        if self.on_batch is not None:
            self.on_batch(len(group))
        for item, result in zip(group, results, strict=True):
            if not item.future.done():
                item.future.set_result((result, len(group)))

    @staticmethod
    def _fail(group: list[_Item], exc: BaseException) -> None:
        for item in group:
            if not item.future.done():
                item.future.set_exception(exc)
