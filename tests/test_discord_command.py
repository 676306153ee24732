"""`likeness discord` as an operator runs it: a clear refusal without a token; with one, it connects through
LIKENESS_DISCORD_API_URL, `--sync` uploads the commands even when unchanged, and the token is never logged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.helpers.discord import TOKEN

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def test_refuses_clearly_without_a_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "likeness", "discord"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "LIKENESS_DISCORD_TOKEN is not set" in out.stderr


async def test_sync_flag_uploads_unchanged_commands_and_the_token_stays_secret(redis_url: str, tmp_path: Path) -> None:
    async with FakeDiscord() as fake, Redis.from_url(redis_url) as redis:
        await redis.set(f"likeness:discord:commands:{APP_ID}", "the-same-hash-as-before")
        env = _env(
            LIKENESS_DISCORD_TOKEN=TOKEN,
            LIKENESS_DISCORD_API_URL=fake.api_url,
            LIKENESS_REDIS_URL=redis_url,
            LIKENESS_LOG_LEVEL="DEBUG",
        )
        log_file = tmp_path / "bot.log"
        with log_file.open("wb") as log:  # a file, not a pipe: debug logging must never block the bot
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "likeness", "discord", "--sync", cwd=tmp_path, env=env, stdout=log, stderr=log
            )
            try:
                await fake.wait_for(lambda: fake.identifies or proc.returncode is not None, timeout=60)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
        output = log_file.read_text()
        assert fake.command_puts == 1, output
        assert proc.returncode == 0, output
        assert "slash commands synced" in output
        assert TOKEN not in output, "the token must never reach the logs"
        assert fake.identifies[0]["token"] == TOKEN


async def test_likeness_up_serves_discord_with_its_own_worker(redis_url: str, tmp_path: Path) -> None:
    from tests.helpers.discord import portrait
    from tests.helpers.faces import astronaut, jpeg_with_exif

    async with FakeDiscord() as fake:
        env = _env(
            LIKENESS_DISCORD_TOKEN=TOKEN,
            LIKENESS_DISCORD_API_URL=fake.api_url,
            LIKENESS_REDIS_URL=redis_url,
            LIKENESS_MODEL="tiny",
            LIKENESS_DEVICE="cpu",
            LIKENESS_DATA_DIR=str(tmp_path / "data"),
            HF_HUB_OFFLINE="1",
        )
        log_file = tmp_path / "up.log"
        with log_file.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "likeness", "up", "--no-playground", cwd=tmp_path, env=env, stdout=log, stderr=log
            )
            try:
                await fake.wait_for(lambda: fake.identifies or proc.returncode is not None, timeout=90)
                selfie = fake.add_attachment(jpeg_with_exif(astronaut()), content_type="image/jpeg")
                payload = portrait(fake, selfie)
                await fake.dispatch("INTERACTION_CREATE", payload)
                record = fake.interactions[payload["token"]]
                await fake.wait_for(lambda: record["original"] and fake.message(record["original"])["attachments"], 90)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
        output = log_file.read_text()
        assert "Discord bot: on" in output and proc.returncode == 0, output
        assert TOKEN not in output
