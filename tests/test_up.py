"""`likeness up` start-up decisions: which Redis, which model, and clear words when either is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from likeness.redis_server import free_port

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
