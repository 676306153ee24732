"""Load and chaos drills: simulated Telegram users, answer accounting, supervised workers, a Redis restart.

Shared by `tests/test_drills.py` (reduced) and `python -m benchmarks --only chaos` (full size).

Accounting is per request message: its answers are photos that reply to it, plus `⚠️` texts that reply
to it or that its progress message was edited into. Every request must end with exactly one answer:
none is a lost request, two or more a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from likeness.config import Settings
from likeness.redis_server import RedisServer
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.faces import astronaut, jpeg_with_exif
from tests.helpers.telegram import photo_message, user

__all__ = [
    "ChaosConfig",
    "ChaosReport",
    "RecordingTelegram",
    "Tracked",
    "WorkerPool",
    "ensure_tiny_weights",
    "run_bot",
    "run_chaos",
    "simulate_users",
]

log = logging.getLogger("drills")
ROOT = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "⚠️"
# Worker log lines: "job <id>: portrait (portrait) try 1", "job <id>: done in ...", "job <id>: failed ..."
_JOB_LINE = re.compile(r"job (\w+): (?:\w+ \(\w+\) )?(try|done|failed|already delivered)")


@dataclass
class Tracked:
    """One request message and what the bot answered to it (monotonic times)."""

    chat_id: int
    message_id: int
    sent_at: float
    progress_at: float | None = None
    answers: list[tuple[str, float, str]] = field(default_factory=list)  # (kind, at, text)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def first_answer_at(self) -> float | None:
        return self.answers[0][1] if self.answers else None


class RecordingTelegram(FakeTelegram):
    """The fake Bot API, plus per-request answer accounting done as the bot's calls arrive (O(1) each)."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.requests: dict[tuple[int, int], Tracked] = {}
        self._progress_of: dict[tuple[int, int], tuple[int, int]] = {}  # progress message -> request
        self._albums: set[str] = set()

    async def __aenter__(self) -> RecordingTelegram:
        await super().__aenter__()
        return self

    def track(self, message: dict[str, Any]) -> Tracked:
        key = (message["chat"]["id"], message["message_id"])
        tracked = Tracked(*key, sent_at=time.monotonic())
        self.requests[key] = tracked
        return tracked

    def _new_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        message = super()._new_message(params, **content)
        reply = params.get("reply_parameters")
        if reply is None:
            return message
        chat_id = int(params["chat_id"])
        target = self.requests.get((chat_id, int(reply["message_id"])))
        if target is None:
            return message
        now = time.monotonic()
        if "photo" in content:
            album = content.get("media_group_id")
            if album is None or album not in self._albums:
                if album is not None:
                    self._albums.add(album)
                self._answer(target, "result", now, str(content.get("caption") or ""))
        elif str(content.get("text", "")).startswith(ERROR_PREFIX):
            self._answer(target, "error", now, str(content["text"]))
        elif "text" in content and target.progress_at is None:
            target.progress_at = now
            self._progress_of[(chat_id, message["message_id"])] = (chat_id, target.message_id)
        return message

    async def _m_editMessageText(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        edited = await super()._m_editMessageText(params, files)
        text = str(params["text"])
        request = self._progress_of.get((int(params["chat_id"]), int(params["message_id"])))
        if request is not None and text.startswith(ERROR_PREFIX):
            self._answer(self.requests[request], "error", time.monotonic(), text)
        return edited

    @staticmethod
    def _answer(target: Tracked, kind: str, at: float, text: str) -> None:
        target.answers.append((kind, at, text))
        target.answered.set()

    def counts(self) -> dict[str, int]:
        """Requests by outcome: results, errors, lost (no answer), duplicated (more than one answer)."""
        tracked = list(self.requests.values())
        return {
            "requests": len(tracked),
            "results": sum(1 for t in tracked if len(t.answers) == 1 and t.answers[0][0] == "result"),
            "errors": sum(1 for t in tracked if len(t.answers) == 1 and t.answers[0][0] == "error"),
            "lost": sum(1 for t in tracked if not t.answers),
            "duplicated": sum(1 for t in tracked if len(t.answers) > 1),
        }

    def error_texts(self) -> dict[str, int]:
        texts: dict[str, int] = {}
        for tracked in self.requests.values():
            for kind, _, text in tracked.answers:
                if kind == "error":
                    texts[text] = texts.get(text, 0) + 1
        return texts


@contextlib.asynccontextmanager
async def run_bot(settings: Settings, tg: FakeTelegram, *, claim_idle_s: float = 60.0) -> AsyncIterator[None]:
    """The real Telegram bot (`run_telegram`, long polling) against `tg`, until the block ends."""
    from likeness.bot.telegram import run_telegram

    stop = asyncio.Event()
    seen = len(tg.allowed_updates_seen)
    task = asyncio.create_task(
        run_telegram(settings, stop=stop, consumer_name="drill-bot", poll_timeout_s=0.5, claim_idle_s=claim_idle_s)
    )
    deadline = time.monotonic() + 30
    while len(tg.allowed_updates_seen) <= seen:  # polling has started
        if task.done():
            await task
        if time.monotonic() > deadline:
            raise TimeoutError("the bot did not start polling")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def simulate_users(
    tg: RecordingTelegram,
    *,
    users: int,
    requests: int,
    caption: str = "/portrait ghibli",
    answer_timeout_s: float = 120.0,
    first_user_id: int = 5000,
) -> None:
    """`users` people share `requests` requests; each sends one, waits for its answer (or the timeout), repeats."""
    selfie = jpeg_with_exif(astronaut())
    per_user = [requests // users + (1 if i < requests % users else 0) for i in range(users)]

    async def one_user(index: int, count: int) -> None:
        sender = user(first_user_id + index)
        chat = tg.chat(sender["id"])
        for _ in range(count):
            message = photo_message(tg, chat, sender, caption=caption, image=selfie)
            tracked = tg.track(message)
            await tg.inject("message", message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracked.answered.wait(), answer_timeout_s)

    await asyncio.gather(*(one_user(i, n) for i, n in enumerate(per_user) if n))


class WorkerPool:
    """Worker subprocesses (`likeness worker`, tiny model) restarted when they exit, like `restart: always`."""

    def __init__(self, env: dict[str, str], log_dir: Path, size: int) -> None:
        self.env = env
        self.log_dir = log_dir
        self.size = size
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.starts = 0
        self.exits: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        self.starts += 1
        path = self.log_dir / f"worker-{self.starts}.log"
        if slot < len(self.logs):
            self.logs[slot] = path
        else:
            self.logs.append(path)
        out = open(path, "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "likeness", "worker"], cwd=ROOT, env=self.env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip

    async def __aenter__(self) -> WorkerPool:
        self.procs = [self._spawn(i) for i in range(self.size)]
        self._task = asyncio.create_task(self._supervise())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def _supervise(self) -> None:
        while True:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    self.exits.append(proc.returncode)
                    log.info("worker %d exited with %s; restarting it", proc.pid, proc.returncode)
                    self.procs[i] = self._spawn(i)
            await asyncio.sleep(0.2)

    def busy(self) -> list[int]:
        """Slots whose worker is running a job now (its log shows a job started and not finished)."""
        slots = []
        for slot, path in enumerate(self.logs):
            running: set[str] = set()
            for line in path.read_text(errors="replace").splitlines():
                if match := _JOB_LINE.search(line):
                    job, what = match.groups()
                    if what == "try":
                        running.add(job)
                    else:
                        running.discard(job)
            if running and self.procs[slot].poll() is None:
                slots.append(slot)
        return slots

    async def kill_busy(self, prefer: int = 0, timeout: float = 30.0) -> int:
        """SIGKILL a worker in the middle of a job (no cleanup); the supervisor starts a new one. Its pid."""
        deadline = time.monotonic() + timeout
        while not (slots := self.busy()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        slot = slots[prefer % len(slots)] if slots else prefer % len(self.procs)
        proc = self.procs[slot]
        proc.send_signal(signal.SIGKILL)
        return proc.pid

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every worker has logged "worker ready" (its engine is loaded)."""
        deadline = time.monotonic() + timeout
        while True:
            logs = [self.log_dir / f"worker-{i}.log" for i in range(1, self.starts + 1)]
            if sum(1 for p in logs if p.exists() and b"worker ready" in p.read_bytes()) >= self.size:
                return
            if any(proc.poll() is not None for proc in self.procs):
                raise RuntimeError(f"a worker exited at start; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready after {timeout} s; see {self.log_dir}")
            await asyncio.sleep(0.2)


def ensure_tiny_weights(data_dir: Path) -> None:
    """Build the tiny model and its LoRAs under `data_dir` once, before several workers would race to."""
    from likeness.generation import get_model_spec
    from likeness.generation._tiny import ensure_tiny_model
    from likeness.presets import PresetCatalog

    sources = sorted({lora.source for preset in PresetCatalog.load(None) for lora in preset.loras})
    ensure_tiny_model(data_dir, get_model_spec("tiny").family, sources)


@dataclass
class ChaosConfig:
    requests: int = 60
    users: int = 12
    workers: int = 2
    kills: int = 1  # SIGKILLs of a worker, spread over the run
    redis_restarts: int = 1
    job_timeout_s: int = 8  # a SIGKILLed worker's job is re-run after job_timeout_s + 10 s
    answer_timeout_s: float = 120.0
    claim_idle_s: float = 10.0


@dataclass
class ChaosReport:
    counts: dict[str, int]
    drain_s: float
    events: list[tuple[float, str]]
    worker_starts: int
    worker_exits: list[int]
    error_texts: dict[str, int]
    latency_s: list[float]
    duplicates: list[list[str]] = field(default_factory=list)  # per duplicated request: "kind: text" answers

    @property
    def ok(self) -> bool:
        return self.counts["lost"] == 0 and self.counts["duplicated"] == 0


async def run_chaos(config: ChaosConfig, *, data_dir: Path, work_dir: Path) -> ChaosReport:
    """Run the drill: users → fake Telegram → bot → Redis (AOF) → worker subprocesses, with kills and a restart.

    `data_dir` holds the tiny model (built once; the workers share it). Times are from the first request.
    """
    await asyncio.to_thread(ensure_tiny_weights, data_dir)
    token = "123456:DRILL-token"
    redis_dir = work_dir / "redis"
    server = RedisServer(redis_dir, appendonly=True).start()
    events: list[tuple[float, str]] = []
    try:
        async with RecordingTelegram(token) as tg:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                redis_url=server.url,
                telegram_token=SecretStr(token),
                telegram_api_url=tg.api_url,
                model="tiny",
                data_dir=data_dir,
                job_timeout_s=config.job_timeout_s,
                queue_cap=max(200, config.requests),
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
            env.update(
                LIKENESS_REDIS_URL=server.url,
                LIKENESS_MODEL="tiny",
                LIKENESS_DEVICE="cpu",
                LIKENESS_DTYPE="float32",
                LIKENESS_DATA_DIR=str(data_dir),
                LIKENESS_JOB_TIMEOUT_S=str(config.job_timeout_s),
                LIKENESS_POLL_DELAY_S="0.02",
                LIKENESS_LOG_LEVEL="INFO",
                OMP_NUM_THREADS="1",  # two workers on a small box: one thread each
                HF_HUB_OFFLINE="1",
                PYTHONPATH=str(ROOT),
            )
            (work_dir / "logs").mkdir(parents=True, exist_ok=True)
            async with WorkerPool(env, work_dir / "logs", config.workers) as pool:
                await pool.wait_ready()
                async with run_bot(settings, tg, claim_idle_s=config.claim_idle_s):
                    start = time.monotonic()

                    def note(what: str) -> None:
                        events.append((round(time.monotonic() - start, 2), what))
                        log.info("%s", what)

                    users = asyncio.create_task(
                        simulate_users(
                            tg,
                            users=config.users,
                            requests=config.requests,
                            answer_timeout_s=config.answer_timeout_s,
                        )
                    )
                    chaos = asyncio.create_task(_chaos(config, tg, pool, server, note))
                    await users
                    drain_s = time.monotonic() - start
                    note("all users done")
                    chaos.cancel()
                    await asyncio.gather(chaos, return_exceptions=True)
                    await asyncio.sleep(2.0)  # a late duplicate would show up here
        latencies = [t.first_answer_at - t.sent_at for t in tg.requests.values() if t.first_answer_at is not None]
        return ChaosReport(
            counts=tg.counts(),
            drain_s=round(drain_s, 2),
            events=events,
            worker_starts=pool.starts,
            worker_exits=pool.exits,
            error_texts=tg.error_texts(),
            latency_s=latencies,
            duplicates=[
                [f"{kind}: {text[:80]}" for kind, _, text in t.answers]
                for t in tg.requests.values()
                if len(t.answers) > 1
            ],
        )
    finally:
        server.stop()


async def _chaos(config: ChaosConfig, tg: RecordingTelegram, pool: WorkerPool, server: RedisServer, note: Any) -> None:
    """Spread kills and Redis restarts over the run, triggered by how many requests were answered."""
    actions: list[tuple[float, str]] = []
    for k in range(config.kills):
        actions.append(((k + 1) / (config.kills + config.redis_restarts + 1), "kill"))
    for r in range(config.redis_restarts):
        actions.append(((config.kills + r + 1) / (config.kills + config.redis_restarts + 1) - 0.1, "redis"))
    actions.sort()
    for k, (fraction, action) in enumerate(actions):
        threshold = int(config.requests * fraction)
        while sum(1 for t in tg.requests.values() if t.answers) < threshold:
            await asyncio.sleep(0.05)
        if action == "kill":
            pid = await pool.kill_busy(k)
            note(f"SIGKILL worker pid {pid} (mid-job)")
        else:
            note("redis restart begins")
            await asyncio.to_thread(server.restart)
            note("redis restart done")
