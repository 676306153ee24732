"""pytest fixtures for the Discord end-to-end tests (registered in tests/conftest.py).

`fake` is the fake Discord (REST + gateway on 127.0.0.1); `make(**overrides)` builds Settings pointing the bot
at it and at the private Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from likeness.config import Settings
from tests.fakes.discord_api import FakeDiscord
from tests.helpers.discord import TOKEN


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def make(make_settings: Callable[..., Settings], redis_url: str, fake: FakeDiscord) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"redis_url": redis_url, "discord_api_url": fake.api_url, "discord_token": TOKEN}
        return make_settings(**{**values, **overrides})

    return build
