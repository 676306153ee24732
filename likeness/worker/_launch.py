"""Building, embedding and running workers: arq settings from `Settings`, the engine and guard loaded once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from likeness.config import Settings
from likeness.generation import Engine
from likeness.queue import keys, worker_retry
from likeness.worker._arq import LikenessWorker, run_job
from likeness.worker._runner import DEFAULT_MAX_TRIES, JobRunner

__all__ = ["EngineFactory", "GuardFactory", "run_worker", "worker_in_loop", "worker_settings"]

log = logging.getLogger("likeness.worker")
_keys = keys

EngineFactory = Callable[[Settings], Engine]
GuardFactory = Callable[[Settings], Any]


def _default_engine(settings: Settings) -> Engine:
    from likeness.generation import load_engine

    return load_engine(settings)


def _default_guard(settings: Settings) -> Any:
    from likeness.generation import load_nsfw_guard

    return load_nsfw_guard(settings)


def worker_settings(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    guard_factory: GuardFactory | None = None,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> dict[str, Any]:
    """Keyword arguments for `LikenessWorker` (an `arq.worker.Worker`), built from `settings`.

    The engine is loaded once in `on_startup` (in a thread, so the health check keeps ticking) and
    closed on shutdown, with the output guard (NSFW classifier). `engine_factory` / `guard_factory` default
    to `likeness.generation.load_engine` / `load_nsfw_guard`; tests pass fakes that implement `Engine`.
    """
    make_engine = engine_factory or _default_engine
    make_guard = guard_factory or _default_guard

    async def on_startup(ctx: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(None, make_engine, settings)
        guard = await loop.run_in_executor(None, make_guard, settings)
        runner = JobRunner(settings, ctx["redis"], engine, guard, max_tries)
        ctx["likeness"] = runner
        if settings.metrics_port:
            runner.metrics.serve(settings.metrics_port)
        log.info("worker ready: model %s, max batch %d", engine.model_key, settings.max_batch)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runner: JobRunner | None = ctx.get("likeness")
        if runner is not None:
            await runner.close()
            runner.engine.close()

    # Ride out a Redis restart (~30 s) instead of crashing the worker on the first refused command.
    redis_settings = dataclasses.replace(RedisSettings.from_dsn(settings.redis_dsn), **worker_retry())
    return {
        "functions": [func(run_job, name=_keys.ARQ_FUNCTION, max_tries=max_tries + 1)],
        "redis_settings": redis_settings,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "poll_delay": settings.poll_delay_s,
        "job_timeout": settings.job_timeout_s,
        # One batch worth of jobs per worker: enough to batch, and a backlog stays in the (fair) arq queue
        # instead of being pulled ahead of other users' jobs or away from other workers.
        "max_jobs": max(1, settings.max_batch),
        "allow_abort_jobs": True,
        "keep_result": 60,
        "health_check_interval": 10,
        "max_tries": max_tries + 1,
    }


@contextlib.asynccontextmanager
async def worker_in_loop(
    settings: Settings, *, arq_options: dict[str, Any] | None = None, **factories: Any
) -> AsyncIterator[LikenessWorker]:
    """A worker running on this event loop for the block (`factories`: see `worker_settings`; `arq_options`
    override its arq settings), then stopped as SIGTERM stops it: running jobs are cancelled and go back on
    the queue. Raises `RuntimeError` if the worker crashed meanwhile. For tests, benchmarks and embedding."""
    worker = LikenessWorker(**{**worker_settings(settings, **factories), **(arq_options or {})}, handle_signals=False)
    task = asyncio.get_running_loop().create_task(worker.async_run(), name="likeness-worker")
    try:
        yield worker
    finally:
        worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        await worker.close()
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception):
        raise RuntimeError("the worker crashed") from outcome


def run_worker(settings: Settings, **factories: Any) -> None:
    """Run a worker until SIGTERM/SIGINT (blocking)."""
    asyncio.run(_main(settings, **factories))


async def _main(settings: Settings, **factories: Any) -> None:
    worker = LikenessWorker(**worker_settings(settings, **factories))
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.close()
