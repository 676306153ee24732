"""4. Bot path: request → progress message → result through the fake Telegram server, generation excluded.

The real bot (`run_telegram`: PTB, long polling, handlers, progress tracker, delivery loop), real Redis and
the real worker code run against the fake Bot API over loopback HTTP; only the engine is an instant stub
(defined here). 50 simulated users each send a captioned photo, wait for the answer, and send the next.
Latency: from injecting the update to the progress message, and to the result photo.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Hashable
from typing import Any

from PIL import Image

from benchmarks._common import BenchContext, BenchResult, summary_ms, tiny_settings
from benchmarks._harness import in_process_worker
from likeness.generation import GenerationResult, PortraitRequest
from likeness.presets import PresetCatalog

NAME = "bot"
TITLE = "Bot path: Telegram update → progress → result photo, instant stub engine, 50 concurrent users"
USERS = 50
TOKEN = "123456:BENCH-token"


class StubEngine:
    """Answers at once with a small flat image per seed: measures everything except generation."""

    model_key = "stub"

    def __init__(self, presets: PresetCatalog) -> None:
        self.presets = presets
        self.calls = 0

    def batch_key(self, request: PortraitRequest) -> Hashable:
        return request.preset.spec

    def portrait_batch(
        self, requests: list[PortraitRequest], progress: list[Any] | None = None
    ) -> list[GenerationResult]:
        self.calls += 1
        for fn in progress or []:
            if fn is not None:
                fn(1, 1)
        results = []
        for request in requests:
            images = []
            for seed in request.seeds:
                tag = hashlib.sha256(f"{request.preset.spec}{seed}".encode()).digest()
                images.append(Image.new("RGB", (64, 64), (tag[0], tag[1], tag[2])))
            meta = {"model": "stub", "preset": request.preset.spec, "prompt": request.prompt}
            results.append(GenerationResult(images, list(request.seeds), meta))
        return results

    def portrait(self, request: PortraitRequest, progress: Any = None) -> GenerationResult:
        return self.portrait_batch([request], [progress])[0]

    def close(self) -> None:
        """Nothing to free."""


def run(ctx: BenchContext) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: BenchContext) -> BenchResult:
    from tests.helpers.drills import RecordingTelegram, run_bot, simulate_users

    per_user = 1 if ctx.quick else 4
    total = USERS * per_user
    presets = PresetCatalog.load(None)
    engine = StubEngine(presets)
    async with RecordingTelegram(TOKEN) as tg:
        settings = tiny_settings(
            ctx.data_dir,
            redis_url=ctx.redis_url(),
            telegram_token=TOKEN,
            telegram_api_url=tg.api_url,
        )
        async with in_process_worker(settings, engine), run_bot(settings, tg):
            start = time.monotonic()
            await simulate_users(tg, users=USERS, requests=total, answer_timeout_s=60)
            wall = time.monotonic() - start
    counts = tg.counts()
    tracked = list(tg.requests.values())
    to_progress = [t.progress_at - t.sent_at for t in tracked if t.progress_at is not None]
    to_answer = [t.first_answer_at - t.sent_at for t in tracked if t.first_answer_at is not None]
    result = BenchResult(NAME, TITLE)
    result.rows = [
        {"measure": "update → progress message", **summary_ms(to_progress)},
        {"measure": "update → result photo", **summary_ms(to_answer)},
    ]
    result.details = {
        "users": USERS,
        "requests": total,
        "wall_s": round(wall, 2),
        "requests_per_s": round(total / wall, 2),
        "counts": counts,
        "engine_calls": engine.calls,
        "bot_api_calls_per_request": round(sum(1 for c in tg.calls if c.method != "getUpdates") / total, 2),
        "mean_batch": round(total / max(1, engine.calls), 2),
        "median_result_s": round(statistics.median(to_answer), 3) if to_answer else None,
    }
    throughput = {"n": total, "requests_per_s": round(total / wall, 2), "wall_s": round(wall, 2)}
    result.rows.append({"measure": "throughput", **throughput, "lost": counts["lost"], "dup": counts["duplicated"]})
    result.notes.append(
        "PTB's AIORateLimiter (Telegram's flood limits: 30 calls/s overall) is on, as in production; each request "
        "costs ~4 Bot API calls (progress, edit, photo, delete)."
    )
    return result
