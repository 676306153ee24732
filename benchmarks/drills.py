"""Load + chaos drill (`python -m benchmarks --only chaos`): nothing lost, nothing duplicated.

1000 requests from 100 simulated Telegram users (each sends a captioned selfie, waits for the answer, sends
the next) through the fake Bot API → the real bot → Redis with AOF → 2 `likeness worker` subprocesses on
the tiny model. During the run a busy worker is SIGKILLed twice (a supervisor restarts it, like
`restart: always`) and Redis is restarted once. Every request must get exactly one answer: a result photo
or one clear `⚠️` error. `--quick` runs the reduced drill of the test suite (60 requests, 12 users).
"""

from __future__ import annotations

import asyncio

from benchmarks._common import BenchContext, BenchResult, Target, summary_ms

NAME = "chaos"
TITLE = "Load + chaos drill: Telegram users → bot → Redis (AOF, restarted) → 2 workers (SIGKILLed)"


def run(ctx: BenchContext) -> BenchResult:
    from tests.helpers.drills import ChaosConfig, run_chaos

    if ctx.quick:
        config = ChaosConfig(requests=60, users=12, kills=1, redis_restarts=1, job_timeout_s=8)
    else:
        config = ChaosConfig(requests=1000, users=100, kills=2, redis_restarts=1, job_timeout_s=20,
                             answer_timeout_s=300)  # fmt: skip
    report = asyncio.run(run_chaos(config, data_dir=ctx.data_dir, work_dir=ctx.work_dir / "chaos"))
    counts = report.counts
    if not report.ok:
        ctx.keep_work_dir = True  # worker logs for the post-mortem
    result = BenchResult(NAME, TITLE)
    result.rows = [
        {**counts, "drain_s": report.drain_s, "worker_starts": report.worker_starts},
        {"answer latency": "first answer", **summary_ms(report.latency_s)},
    ]
    result.targets = [
        Target("lost requests", counts["lost"], 0, "<="),
        Target("duplicated answers", counts["duplicated"], 0, "<="),
        Target("requests answered", counts["results"] + counts["errors"], config.requests, ">="),
    ]
    result.details = {
        "config": vars(config),
        "events": report.events,
        "worker_exit_codes": report.worker_exits,
        "error_texts": report.error_texts,
        "duplicates": report.duplicates,
    }
    result.notes += [f"t={t:.1f} s: {what}" for t, what in report.events]
    result.notes += [f"error shown {n}×: {text}" for text, n in report.error_texts.items()]
    result.notes += [f"duplicated: {' | '.join(answers)}" for answers in report.duplicates]
    return result
