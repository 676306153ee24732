"""Per-community settings on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from likeness.bot._community import ChatSettings, CommunitySettings
from likeness.bot._policy import PromptPolicy
from likeness.bot._safety import Decision, Place, decide
from likeness.errors import PromptRefused, UserError


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_defaults_are_safe_and_follow_the_operator(redis: aioredis.Redis, make_settings) -> None:
    plain = await CommunitySettings(redis).get("discord", 1)
    assert plain == ChatSettings()
    assert not plain.allow_nsfw and not plain.age_restricted and plain.extra_blocked_words == []
    collaborative = await CommunitySettings(redis, make_settings(collaborate=True)).get("discord", 1)
    assert collaborative.collaborate


async def test_update_persists_per_community(redis: aioredis.Redis, make_settings) -> None:
    store = CommunitySettings(redis, make_settings(collaborate=True))
    updated = await store.update("telegram", -100123, allow_nsfw=True, extra_blocked_words=[" Clown ", "clown", ""])
    assert updated.allow_nsfw and updated.extra_blocked_words == ["clown"]
    again = await CommunitySettings(redis, make_settings(collaborate=True)).get("telegram", -100123)
    assert again == updated and again.collaborate  # operator default still applies to untouched fields
    assert not (await store.get("telegram", -100999)).allow_nsfw  # other chats unaffected
    assert not (await store.get("discord", -100123)).allow_nsfw  # other platform unaffected
    await store.update("telegram", -100123, collaborate=False)
    assert not (await store.get("telegram", -100123)).collaborate
    await store.reset("telegram", -100123)
    assert await store.get("telegram", -100123) == ChatSettings(collaborate=True)


async def test_bad_changes_are_user_errors(redis: aioredis.Redis) -> None:
    store = CommunitySettings(redis)
    with pytest.raises(UserError, match="Unknown setting 'nsfw'"):
        await store.update("discord", 1, nsfw=True)
    with pytest.raises(UserError, match="extra_blocked_words"):
        await store.update("discord", 1, extra_blocked_words=["x" * 65])
    with pytest.raises(UserError):
        await store.update("discord", 1, extra_blocked_words=[f"w{i}" for i in range(201)])
    assert await store.get("discord", 1) == ChatSettings()  # nothing half-written


async def test_community_settings_feed_policy_and_delivery(redis: aioredis.Redis, make_settings) -> None:
    settings = make_settings(allow_nsfw_age_restricted=True)
    store = CommunitySettings(redis, settings)
    policy = PromptPolicy.from_settings(settings)
    chat = await store.update("telegram", 5, extra_blocked_words=["spider"], age_restricted=True)
    with pytest.raises(PromptRefused):
        policy.check("giant spiders", extra_words=chat.extra_blocked_words)
    place = Place(age_restricted=chat.age_restricted, allow_nsfw=chat.allow_nsfw)
    assert decide(0.9, place, settings) is Decision.WITHHOLD  # 18+ chat, but not opted in
    chat = await store.update("telegram", 5, allow_nsfw=True)
    place = Place(age_restricted=chat.age_restricted, allow_nsfw=chat.allow_nsfw)
    assert decide(0.9, place, settings) is Decision.SPOILER
