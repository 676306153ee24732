"""Worker processes and real signals: SIGTERM requeues at once, SIGKILL re-runs after the in-progress
key expires (job_timeout_s + 10 s; 3 s here), and either way the user gets exactly one delivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from likeness.queue import QueueClient
from likeness.requests import PortraitSpec
from tests.helpers.queue import next_deliveries, origin, selfie

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def spawn_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(job_timeout_s: int, name: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        env.update(
            LIKENESS_REDIS_URL=redis_url,
            LIKENESS_JOB_TIMEOUT_S=str(job_timeout_s),
            LIKENESS_POLL_DELAY_S="0.05",
            LIKENESS_DATA_DIR=str(tmp_path),
            PYTHONPATH=str(ROOT),
        )
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.queue_worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _wait_for_step(queue: QueueClient, job_id: str, timeout: float = 15.0) -> None:
    async def wait() -> None:
        async for event in queue.progress(job_id):
            if event.stage == "step":
                return
        raise AssertionError("job ended before it made progress")

    await asyncio.wait_for(wait(), timeout)


async def test_sigkilled_worker_job_is_finished_by_another_with_one_delivery(make_settings, redis_url, spawn_worker):
    settings = make_settings(redis_url=redis_url)
    first = spawn_worker(3, "first")
    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=0.8"))
        await _wait_for_step(queue, ticket.job_id)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed = time.monotonic()
        spawn_worker(3, "second")
        (delivery,) = await next_deliveries(settings, 1, timeout=30)
        recovered_after = time.monotonic() - killed
        await asyncio.sleep(0.5)
        stages = [e.stage async for e in queue.progress(ticket.job_id)]
        payload = await queue.get_job(ticket.job_id)
        assert await queue.redis.xlen("likeness:deliveries:telegram") == 1
    assert delivery.ok and delivery.job_id == ticket.job_id
    assert delivery.result.seeds == payload.seeds, "a re-run makes the same images"
    assert stages.count("started") == 2 and stages[-1] == "done"
    assert 3 <= recovered_after < 3 + 10 + 5


async def test_sigterm_requeues_at_once_and_health_check_reports(make_settings, redis_url, spawn_worker):
    settings = make_settings(redis_url=redis_url)
    first = spawn_worker(10, "first")
    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin(), selfie(), PortraitSpec(preset="ghibli", prompt="sleep=2"))
        await _wait_for_step(queue, ticket.job_id)
        check = subprocess.run(
            [sys.executable, "-m", "likeness", "worker", "--check"],
            cwd=ROOT,
            env={**os.environ, "LIKENESS_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) is not None
        stopped = time.monotonic()
        spawn_worker(10, "second")
        (delivery,) = await next_deliveries(settings, 1, timeout=20)
        requeued_after = time.monotonic() - stopped
        await asyncio.sleep(0.3)
        assert await queue.redis.xlen("likeness:deliveries:telegram") == 1
    assert delivery.ok and delivery.job_id == ticket.job_id
    assert requeued_after < 10, "SIGTERM must not wait for the in-progress key to expire"


def test_health_check_fails_without_a_worker(redis_url):
    check = subprocess.run(
        [sys.executable, "-m", "likeness", "worker", "--check"],
        cwd=ROOT,
        env={**os.environ, "LIKENESS_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=30,
    )
    assert check.returncode == 1 and b"No worker" in check.stdout


def test_worker_with_an_unknown_model_exits_with_a_clear_message(redis_url):
    proc = subprocess.run(
        [sys.executable, "-m", "likeness", "worker"],
        cwd=ROOT,
        env={**os.environ, "LIKENESS_REDIS_URL": redis_url, "LIKENESS_MODEL": "no-such-model", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "unknown model 'no-such-model'" in proc.stderr and "Traceback" not in proc.stderr
