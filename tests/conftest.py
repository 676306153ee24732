"""Shared fixtures: a private redis-server, Settings built for tests, pinned torch threads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from likeness.config import Settings
from likeness.redis_server import INSTALL_HINT, RedisServer

pytest_plugins = ["tests.helpers.telegram_fixtures", "tests.helpers.discord_fixtures"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; an operator's LIKENESS_* variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("LIKENESS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run, on a free loopback port (never a user's Redis)."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the private Redis, emptied before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir shared by the session, so the tiny model is built once per test run."""
    return tmp_path_factory.mktemp("likeness-data")


@pytest.fixture
def make_settings(shared_data_dir: Path) -> Callable[..., Settings]:
    """Factory: Settings for tests (tiny model, CPU, shared data dir), with overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"model": "tiny", "device": "cpu", "dtype": "float32", "data_dir": shared_data_dir}
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


def pytest_configure(config: pytest.Config) -> None:
    # huggingface_hub reads this once at import, before any fixture runs: set it before torch/diffusers load.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)  # same seed -> same bytes needs the same thread count (FIELD-NOTES)


@pytest.fixture(scope="session")
def tiny_engine(shared_data_dir: Path) -> Iterator[Any]:
    """One real tiny engine for the frontends' end-to-end tests (built offline once per run)."""
    from likeness.generation import load_engine

    settings = Settings(_env_file=None, model="tiny", device="cpu", dtype="float32", data_dir=shared_data_dir)  # type: ignore[call-arg]
    engine = load_engine(settings)
    yield engine
    engine.close()
