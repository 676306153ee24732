"""pytest fixtures for the Telegram end-to-end tests (registered in tests/conftest.py).

`tg` is the fake Bot API, `tg_settings` points the bot at it and at the private Redis, `h` runs the bot and
an in-process worker on the session's tiny engine. A module sets `TELEGRAM_HARNESS = {...}` for extra
harness options (e.g. `claim_idle_s`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from likeness.config import Settings
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.telegram import TOKEN, TelegramHarness, assert_no_unexpected_errors, harness


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture
def tg_settings(make_settings: Callable[..., Settings], redis_url: str, tg: FakeTelegram) -> Settings:
    return make_settings(redis_url=redis_url, telegram_token=TOKEN, telegram_api_url=tg.api_url, job_timeout_s=60)


@pytest.fixture
async def h(
    request: pytest.FixtureRequest, tg: FakeTelegram, tg_settings: Settings, tiny_engine: Any, caplog: Any
) -> AsyncIterator[TelegramHarness]:
    options = getattr(request.module, "TELEGRAM_HARNESS", {})
    async with harness(tg, tg_settings, tiny_engine, **options) as running:
        yield running
    assert_no_unexpected_errors(caplog)
