"""Progress edits: throttled per chat type, tolerant of Telegram's 429 and "message is not modified"."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from telegram import Bot

from likeness.bot.telegram._progress import GROUP_EDIT_INTERVAL_S, PRIVATE_EDIT_INTERVAL_S, ProgressTracker
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.timeout(30)

TOKEN = "424242:TEST-progress-token"


class ScriptedCore:
    """Stands in for `BotCore.follow`: yields progress texts on a schedule [(delay_s, text)], then ends."""

    def __init__(self, script: list[tuple[float, str]], tail_s: float) -> None:
        self.script = script
        self.tail_s = tail_s

    async def follow(self, job_id: str, *, idle_timeout_s: float | None = None) -> AsyncIterator[str]:
        for delay, text in self.script:
            await asyncio.sleep(delay)
            yield text
        await asyncio.sleep(self.tail_s)


async def _follow(tg: FakeTelegram, chat_id: int, script, tail_s: float, *, private: bool) -> float:
    progress_message = await tg._m_sendMessage({"chat_id": chat_id, "text": "⏳ queued"}, {})
    async with Bot(TOKEN, base_url=f"{tg.api_url}/bot") as bot:
        tracker = ProgressTracker(bot, ScriptedCore(script, tail_s), idle_timeout_s=60)  # type: ignore[arg-type]
        started = time.monotonic()
        tracker.start("job1", chat_id, progress_message["message_id"], "⏳ queued", private=private)
        await asyncio.sleep(sum(d for d, _ in script) + tail_s + 0.3)
        await tracker.close()
    return started


def _edits(tg: FakeTelegram) -> list:
    return [c for c in tg.calls_of("editMessageText") if c.error is None]


async def test_private_chat_edits_at_most_once_a_second_and_shows_the_latest():
    async with FakeTelegram(TOKEN) as tg:
        script = [(0.05, f"🎨 Painting… {p}%") for p in (10, 20, 30, 40, 50, 60)]
        started = await _follow(tg, 1, script, 2.4, private=True)
    edits = _edits(tg)
    assert 1 <= len(edits) <= 3
    times = [started, *(c.at for c in edits)]
    assert all(b - a >= PRIVATE_EDIT_INTERVAL_S - 0.05 for a, b in itertools.pairwise(times))
    assert edits[-1].params["text"] == "🎨 Painting… 60%"


async def test_group_edits_wait_three_seconds():
    async with FakeTelegram(TOKEN) as tg:
        tg.chat(-100, "supergroup")
        started = await _follow(tg, -100, [(0.05, "🎨 Painting… 10%"), (0.05, "🎨 Painting… 50%")], 3.3, private=False)
    edits = _edits(tg)
    assert [c.params["text"] for c in edits] == ["🎨 Painting… 50%"]
    assert edits[0].at - started >= GROUP_EDIT_INTERVAL_S - 0.05


async def test_rate_limit_and_not_modified_answers_do_not_stop_the_progress():
    async with FakeTelegram(TOKEN) as tg:
        tg.fail_next("editMessageText", 400, "Bad Request: message is not modified")
        tg.fail_next("editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1)
        script = [(0.05, "🎨 Painting… 10%"), (1.2, "🎨 Painting… 40%"), (1.2, "🎨 Painting… 80%")]
        await _follow(tg, 1, script, 2.5, private=True)
    failed = [c for c in tg.calls_of("editMessageText") if c.error]
    assert len(failed) == 2
    assert _edits(tg)[-1].params["text"] == "🎨 Painting… 80%"
