"""Operators ban users from the command line; a banned user is refused before any job is queued."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from likeness.bot import BotCore
from likeness.config import Settings
from likeness.errors import Banned
from likeness.queue import Origin, QueueClient
from likeness.requests import PortraitArgs
from tests.helpers.queue import selfie

ROOT = Path(__file__).resolve().parents[1]


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "likeness", "moderate", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


async def test_ban_refuses_requests_before_enqueue_and_unban_lifts_it(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    out = _cli(redis_url, "ban", "666", "--platform", "telegram", "--reason", "spam")
    assert out.returncode == 0, out.stderr
    listed = _cli(redis_url, "bans")
    assert "666" in listed.stdout and "spam" in listed.stdout

    settings = make_settings(redis_url=redis_url)
    origin = Origin(platform="telegram", chat_id="c1", user_id="666")
    async with QueueClient(settings) as queue:
        core = BotCore(settings, queue)
        try:
            await core.check_portrait(origin, PortraitArgs(preset="ghibli"))
        except Banned as exc:
            assert "can't use this bot" in exc.user_message
        else:
            raise AssertionError("a banned user got a job")
        assert (await queue.stats()).queued == 0
        other_platform = origin.model_copy(update={"platform": "discord"})
        spec = await core.check_portrait(other_platform, PortraitArgs(preset="ghibli"))
        assert (await core.portrait(other_platform, spec, selfie())).job_id

    log = _cli(redis_url, "log", "--kind", "refusal")
    assert "666" in log.stdout and "banned" in log.stdout
    assert _cli(redis_url, "unban", "666", "--platform", "telegram").returncode == 0
    assert _cli(redis_url, "unban", "666", "--platform", "telegram").returncode == 1
    async with QueueClient(settings) as queue:
        core = BotCore(settings, queue)
        spec = await core.check_portrait(origin, PortraitArgs(preset="ghibli"))
        assert (await core.portrait(origin, spec, selfie())).job_id
