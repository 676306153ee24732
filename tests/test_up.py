"""`likeness up` start-up decisions: which Redis, which model, and clear words when either is missing; chat bots
that can't start (API down, token refused) never take the playground and the worker down with them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from likeness.commands.up import _discord_failure, _Failure, _supervise, _telegram_failure
from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.redis_server import free_port
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.telegram import TOKEN, text_message, user

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        LIKENESS_DATA_DIR=str(tmp_path / "data"),
        LIKENESS_PLAYGROUND_PORT=str(free_port()),
        LIKENESS_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _up(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "likeness", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_without_redis_url_or_binary_it_says_how_to_get_redis(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    out = _up(_env(tmp_path, LIKENESS_MODEL="tiny", PATH=str(bin_dir)))
    assert out.returncode == 1
    assert "redis-server" in out.stderr and "apt-get install redis-server" in out.stderr
    assert "LIKENESS_REDIS_URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_model_that_cannot_be_loaded_offers_the_tiny_model(tmp_path: Path) -> None:
    out = _up(_env(tmp_path, LIKENESS_MODEL="sdxl-base"))
    assert out.returncode == 1
    assert "could not be loaded" in out.stderr
    assert "LIKENESS_MODEL=tiny likeness up" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_explicit_redis_url_wins_over_a_private_redis(tmp_path: Path, redis_url: str) -> None:
    env = _env(tmp_path, LIKENESS_MODEL="tiny", LIKENESS_REDIS_URL=redis_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "likeness", "up", "--no-playground"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        lines = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Likeness is up" in line or not line:
                break
        text = "".join(lines)
        assert "Likeness is up" in text, text
        assert "private Redis" not in text and redis_url.split("//")[1].split("/")[0] in text
        assert "Playground" not in text
        assert not (tmp_path / "data" / "redis").exists(), "no private Redis was started"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_playground_listens_on_loopback_unless_asked(host: str) -> None:
    from likeness.commands.up import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback(host)


# --- chat bots under supervision -------------------------------------------------------------------------


@dataclass
class _Up:
    proc: asyncio.subprocess.Process
    log_path: Path
    playground: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, *, count: int = 1, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (log := self.log()).count(text) < count:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"no {text!r} in the log of likeness up (rc {self.proc.returncode}):\n{log[-3000:]}")
            await asyncio.sleep(0.1)
        return log

    async def stop(self) -> int:
        """SIGTERM, as Ctrl-C or systemd would; `likeness up` must be gone within seconds."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 15)


@asynccontextmanager
async def _running_up(env: dict[str, str], tmp_path: Path) -> AsyncIterator[_Up]:
    """`likeness up` in the background, its output in a file (a pipe nobody reads would block it)."""
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "likeness", "up", cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
        up = _Up(proc, log_path, f"http://127.0.0.1:{env['LIKENESS_PLAYGROUND_PORT']}")
        try:
            await up.wait_log("Likeness is up", timeout=120)
            yield up
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _assert_playground_serves(up: _Up) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    url = f"{up.playground}/api/presets"
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        assert await response.json()


@pytest.mark.timeout(90)
async def test_a_bot_whose_api_is_down_is_retried_and_comes_up_by_itself(tmp_path: Path, redis_url: str) -> None:
    api_port = free_port()  # nothing listens there yet: the Bot API server is "down"
    env = _env(
        tmp_path,
        LIKENESS_MODEL="tiny",
        LIKENESS_REDIS_URL=redis_url,
        LIKENESS_TELEGRAM_TOKEN=TOKEN,
        LIKENESS_TELEGRAM_API_URL=f"http://127.0.0.1:{api_port}",
        LIKENESS_DISCORD_TOKEN="discord-test-token",
        LIKENESS_DISCORD_API_URL=f"http://127.0.0.1:{free_port()}/api/v10",
    )
    async with _running_up(env, tmp_path) as up:
        retry = f"Telegram bot could not start: cannot reach the Bot API at http://127.0.0.1:{api_port} ("
        log = await up.wait_log(retry, count=2)  # tried, waited ~1 s, tried again: now waits ~2 s
        assert "; retrying in " in log
        await up.wait_log("Discord bot could not start: cannot reach Discord at http://127.0.0.1:")
        await _assert_playground_serves(up)
        async with FakeTelegram(TOKEN, port=api_port) as tg:  # the API comes back, likeness up goes on
            await tg.wait_for(lambda: tg.allowed_updates_seen, timeout=30, what="polling after the retry")
            assert tg.calls_of("getMe")
            await up.wait_log("Telegram bot @likeness_test_bot is running", timeout=10)
            await tg.inject("message", text_message(tg, tg.chat(101), user(101, "Alice"), "/help"))
            await tg.wait_call("sendMessage", chat_id=101)
            await _assert_playground_serves(up)
            assert up.proc.returncode is None
            started = time.monotonic()
            assert await up.stop() == 0, up.log()[-3000:]
            assert time.monotonic() - started < 15
    log = up.log()
    assert "Stopped." in log
    assert log.count("Telegram bot could not start") >= 2 and "Telegram bot stopped" not in log
    assert "Traceback" not in log, log[-3000:]
    assert TOKEN.split(":")[1] not in log and "discord-test-token" not in log


@pytest.mark.timeout(90)
async def test_a_refused_token_is_said_once_and_not_retried(tmp_path: Path, redis_url: str) -> None:
    wrong = "999999:WRONG-secret-token-xyz"
    async with FakeTelegram(TOKEN) as tg:
        env = _env(
            tmp_path,
            LIKENESS_MODEL="tiny",
            LIKENESS_REDIS_URL=redis_url,
            LIKENESS_TELEGRAM_TOKEN=wrong,
            LIKENESS_TELEGRAM_API_URL=tg.api_url,
        )
        async with _running_up(env, tmp_path) as up:
            await up.wait_log("refused LIKENESS_TELEGRAM_TOKEN")
            await asyncio.sleep(4)  # a retry loop would have asked again after ~1 s and ~3 s
            assert tg.refused == ["getMe"] and not tg.calls
            await _assert_playground_serves(up)
            assert up.proc.returncode is None
            assert await up.stop() == 0, up.log()[-3000:]
    log = up.log()
    assert log.count("refused LIKENESS_TELEGRAM_TOKEN") == 1 and "It stays off" in log
    assert "retrying" not in log and "Traceback" not in log, log[-3000:]
    assert "WRONG-secret-token-xyz" not in log


async def test_the_supervisor_backs_off_and_stops_at_once_when_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[float] = []

    async def down() -> None:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("refused")

    supervisor = asyncio.create_task(
        _supervise("Test bot", down, lambda exc: _Failure("down"), first_delay_s=0.05, max_delay_s=0.2)
    )
    while len(attempts) < 6:
        await asyncio.sleep(0.01)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
        assert delay * 0.85 <= gap <= delay * 1.1 + 0.1, gaps
    cancelled = time.monotonic()
    supervisor.cancel()  # in its backoff
    with pytest.raises(asyncio.CancelledError):
        await supervisor
    assert time.monotonic() - cancelled < 0.1
    retries = [r.getMessage() for r in caplog.records if r.name == "likeness.up"]
    assert retries[0].startswith("Test bot could not start: down; retrying in ")


async def test_the_supervisor_leaves_a_refused_bot_off_and_says_it_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConfigError(message="LIKENESS_TELEGRAM_TOKEN is not set")

    await asyncio.wait_for(_supervise("Test bot", refused, lambda exc: _Failure(str(exc), retry=False)), 1)
    assert calls == 1
    [record] = [r for r in caplog.records if r.name == "likeness.up"]
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert "LIKENESS_TELEGRAM_TOKEN is not set. It stays off" in record.getMessage()


async def test_the_supervisor_restarts_a_bot_that_fails_later_after_the_first_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.sleep(0.3)  # ran long enough to count as healthy
        raise ValueError("surprise")

    supervisor = asyncio.create_task(
        _supervise("Test bot", flaky, lambda exc: None, first_delay_s=0.1, max_delay_s=5, healthy_after_s=0.25)
    )
    while runs < 3:
        await asyncio.sleep(0.01)
    supervisor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervisor
    records = [r for r in caplog.records if r.name == "likeness.up"]
    assert records[0].getMessage().startswith("Test bot could not start: ValueError: surprise; retrying in 0.1 s")
    assert records[1].getMessage().startswith("Test bot stopped: ValueError: surprise; retrying in 0.1 s")
    # an unexpected error shows its traceback once, not at every retry
    assert records[0].exc_info is not None and records[1].exc_info is None


def test_telegram_and_discord_failures_are_read_as_retry_or_stay_off(make_settings) -> None:
    import discord
    from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TimedOut

    settings: Settings = make_settings(telegram_api_url="http://bot-api.local:8081/")
    for exc in (NetworkError("httpx.ConnectError: All connection attempts failed"), TimedOut()):
        failure = _telegram_failure(settings, exc)
        assert failure is not None and failure.retry
        assert failure.reason.startswith("cannot reach the Bot API at http://bot-api.local:8081 (")
    assert _telegram_failure(settings, RetryAfter(30)) == _Failure(
        "the Bot API at http://bot-api.local:8081 asks to wait 30 s", wait_s=30
    )
    bad = _telegram_failure(settings, BadRequest("Bad Request: chat not found"))
    assert bad is not None and bad.retry and "answered: Chat not found" in bad.reason
    for stays_off in (InvalidToken("Unauthorized"), ConfigError(message="no token")):
        failure = _telegram_failure(settings, stays_off)
        assert failure is not None and not failure.retry
    assert _telegram_failure(settings, ValueError("a bug")) is None

    for exc in (ConnectionRefusedError(111, "refused"), TimeoutError(), discord.GatewayNotFound()):
        failure = _discord_failure(settings, exc)
        assert failure is not None and failure.retry and failure.reason.startswith("cannot reach Discord at ")
    for stays_off in (discord.LoginFailure("Improper token has been passed."), ConfigError(message="no token")):
        failure = _discord_failure(settings, stays_off)
        assert failure is not None and not failure.retry
