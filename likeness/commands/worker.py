"""`likeness worker`: serve the queue with the generation engine (needs the `worker` extra)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from likeness.config import Settings

from likeness.logs import setup_logging

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check", action="store_true", help="Health check: exit 0 if a worker reported in the last minute"
    )


def run(args: argparse.Namespace) -> int:
    from likeness.config import Settings

    settings = Settings()  # type: ignore[call-arg]
    setup_logging(settings)
    if args.check:
        import asyncio

        return asyncio.run(_check(settings))
    from redis.exceptions import ConnectionError as RedisConnectionError

    from likeness.errors import LikenessError
    from likeness.worker import run_worker, worker_settings

    log = logging.getLogger("likeness.worker")
    try:
        run_worker(settings)
    except LikenessError as exc:  # e.g. the model can't be loaded: say why, no traceback
        log.error("%s", exc)
        return 1
    except (RedisConnectionError, OSError) as exc:
        redis = worker_settings(settings)["redis_settings"]  # host and port only: the DSN may hold a password
        log.error("Redis at %s:%s is not reachable (%s). Check LIKENESS_REDIS_URL.", redis.host, redis.port, exc)
        return 1
    return 0


async def _check(settings: Settings) -> int:
    from arq.connections import create_pool
    from arq.constants import default_queue_name, health_check_key_suffix
    from redis.exceptions import RedisError

    from likeness.worker import worker_settings

    try:
        redis = await create_pool(worker_settings(settings)["redis_settings"], retry=0)
        try:
            value = await redis.get(default_queue_name + health_check_key_suffix)
        finally:
            await redis.aclose()
    except (RedisError, OSError) as exc:
        print(f"Redis is not reachable: {exc}")
        return 1
    if value is None:
        print("No worker has reported recently.")
        return 1
    print(value.decode())
    return 0
