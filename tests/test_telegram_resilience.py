"""Telegram bot resilience: restarts between request and result, buttons after a restart, Telegram refusing or
failing sends, webhook mode, and the `likeness telegram` command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from likeness.bot._texts import HELP
from likeness.bot.telegram import BOT_API_DOWNLOAD_LIMIT, download_limit
from likeness.redis_server import free_port
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.telegram import (
    assert_no_unexpected_errors,
    callback_query,
    edit_answer,
    harness,
    photo_message,
    shared_tiny_engine,
    text_message,
    user,
)

pytestmark = pytest.mark.timeout(90)

TOKEN = "777777:TEST-resilience-token"
ALICE = user(101, "Alice")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def tg():
    async with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture
def tg_settings(make_settings, redis_url, tg):
    return make_settings(redis_url=redis_url, telegram_token=TOKEN, telegram_api_url=tg.api_url, job_timeout_s=60)


@pytest.fixture
async def h(tg, tg_settings, shared_data_dir, caplog):
    async with harness(tg, tg_settings, shared_tiny_engine(shared_data_dir), claim_idle_s=1.0) as running:
        yield running
    assert_no_unexpected_errors(caplog)


async def _pending(settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        info = await client.xpending("likeness:deliveries:telegram", "bots")
        return int(info["pending"])
    finally:
        await client.aclose()


async def _delivered(settings) -> int:
    client = aioredis.Redis.from_url(settings.redis_dsn)
    try:
        return int(await client.xlen("likeness:deliveries:telegram"))
    finally:
        await client.aclose()


async def _settle(h, seconds: float = 2.5) -> None:
    """Give redelivery (claim_idle_s=1) a chance to send something twice, then check the bot still answers."""
    await asyncio.sleep(seconds)
    await h.send(text_message(h.tg, h.tg.chat(101), ALICE, "/help"))
    await h.tg.wait_for(lambda: HELP in h.texts())


async def test_result_is_delivered_once_after_a_bot_restart(h, tg, tg_settings):
    await h.start_bot()
    chat = tg.chat(101)
    request = await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    await tg.wait_for(lambda: [t for t in h.texts() if "in the queue" in t or "Starting" in t], what="ticket")
    await h.stop_bot()
    await h.start_worker()  # the job finishes while no bot is running
    for _ in range(300):
        if await _delivered(tg_settings):
            break
        await asyncio.sleep(0.05)
    assert not tg.calls_of("sendPhoto")
    await h.start_bot()
    photo = (await tg.wait_call("sendPhoto", timeout=20))[-1]
    assert int(photo.params["reply_parameters"]["message_id"]) == request["message_id"]
    await _settle(h)
    assert len(tg.calls_of("sendPhoto")) == 1
    assert await _pending(tg_settings) == 0


async def test_buttons_work_after_a_restart(h, tg):
    await h.start_bot()
    await h.start_worker()
    chat = tg.chat(101)
    await h.send(photo_message(tg, chat, ALICE, caption="/portrait ghibli"))
    photo = (await tg.wait_call("sendPhoto", timeout=30))[-1]
    result = photo.result
    data = photo.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await h.stop_bot(cancel=True)  # right after the photo went out: the delivery in flight is finished and acked
    await h.start_bot()
    await tg.inject("callback_query", callback_query(ALICE, result, data))
    rerolled = (await tg.wait_call("sendPhoto", count=2, timeout=30))[-1]
    assert int(rerolled.params["reply_parameters"]["message_id"]) == result["message_id"], tg.summary()
    # a reply to the old result is still recognised too (the message → result link lives in Redis)
    edit = await h.send(text_message(tg, chat, ALICE, "make the hair blue", reply_to=result))
    await tg.wait_for(lambda: edit_answer(tg, edit), timeout=30, what="the edit's answer")


async def test_transient_send_failure_is_retried_and_sent_once(h, tg, tg_settings):
    tg.fail_next("sendPhoto", 502, "Bad Gateway")
    await h.start_bot()
    await h.start_worker()
    await h.send(photo_message(tg, tg.chat(101), ALICE, caption="/portrait ghibli"))
    calls = await tg.wait_call("sendPhoto", count=2, timeout=30)
    assert calls[0].error == "Bad Gateway" and calls[1].error is None
    await _settle(h)
    assert len(tg.calls_of("sendPhoto")) == 2
    assert await _pending(tg_settings) == 0


async def test_permanent_send_failure_is_dropped_without_a_loop(h, tg, tg_settings):
    tg.fail_next("sendPhoto", 403, "Forbidden: bot was blocked by the user")
    await h.start_bot()
    await h.start_worker()
    await h.send(photo_message(tg, tg.chat(101), ALICE, caption="/portrait ghibli"))
    await tg.wait_call("sendPhoto", timeout=30)
    await _settle(h)
    assert len(tg.calls_of("sendPhoto")) == 1
    assert await _pending(tg_settings) == 0


async def test_webhook_mode_registers_and_serves_only_telegram(tg, tg_settings, shared_data_dir, caplog):
    port = free_port()
    settings = tg_settings.model_copy(
        update={"telegram_webhook_url": "https://bot.example.test/tg/hook", "telegram_webhook_port": port}
    )
    async with harness(tg, settings, shared_tiny_engine(shared_data_dir)) as h:
        await h.start_bot(ready=lambda: tg.webhook is not None)
        assert tg.webhook["url"] == "https://bot.example.test/tg/hook"
        assert "message_reaction" in tg.webhook["allowed_updates"]
        secret = tg.webhook["secret_token"]
        assert secret and TOKEN.split(":")[1] not in secret
        update = {"update_id": 1, "message": text_message(tg, tg.chat(101), ALICE, "/help")}
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/tg/hook"
            async with http.post(url, json=update) as forged:
                assert forged.status == 403
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
            async with http.post(url, json=update, headers=headers) as real:
                assert real.status == 200
        await tg.wait_for(lambda: HELP in h.texts())
        assert len(h.texts()) == 1
    assert_no_unexpected_errors(caplog)


def test_download_limit_follows_the_api_server(make_settings):
    assert download_limit(make_settings()) == BOT_API_DOWNLOAD_LIMIT == 20 * 1024 * 1024
    assert download_limit(make_settings(max_upload_bytes=5_000_000)) == 5_000_000
    local = make_settings(telegram_api_url="http://127.0.0.1:8081", max_upload_bytes=200_000_000)
    assert download_limit(local) == 200_000_000


def test_command_refuses_clearly_without_a_token(capsys):
    from likeness.cli import main

    assert main(["telegram"]) != 0
    assert "LIKENESS_TELEGRAM_TOKEN" in capsys.readouterr().err


async def test_command_serves_until_sigterm_and_never_logs_the_token(tg, redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        PYTHONPATH=str(ROOT),
        LIKENESS_TELEGRAM_TOKEN=TOKEN,
        LIKENESS_TELEGRAM_API_URL=tg.api_url,
        LIKENESS_REDIS_URL=redis_url,
        LIKENESS_DATA_DIR=str(tmp_path),
        LIKENESS_LOG_LEVEL="DEBUG",
    )
    log_file = (tmp_path / "bot.log").open("wb")  # a pipe nobody reads would fill up and block the bot
    command = [sys.executable, "-m", "likeness", "telegram", "--replica", "cli-test"]
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file)
    try:
        await tg.wait_for(lambda: tg.allowed_updates_seen, timeout=30, what="polling")
        await tg.inject("message", text_message(tg, tg.chat(101), ALICE, "/help"))
        await tg.wait_for(lambda: [c for c in tg.calls_of("sendMessage") if c.params["text"] == HELP])
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log_file.close()
    output = (tmp_path / "bot.log").read_bytes()
    assert proc.returncode == 0, output.decode()[-2000:]
    assert b"getUpdates" in output  # DEBUG logging was on, URLs included...
    assert TOKEN.split(":")[1].encode() not in output  # ...but never the token


async def test_result_follows_a_group_upgraded_to_a_supergroup(h, tg, tg_settings):
    await h.start_bot()
    await h.start_worker()
    tg.chat(-2000, "supergroup")
    tg.fail_next(
        "sendPhoto", 400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-1002000
    )
    await h.send(photo_message(tg, tg.chat(-200, "group"), ALICE, caption="/portrait ghibli"))
    calls = await tg.wait_call("sendPhoto", count=2, timeout=30)
    assert int(calls[1].params["chat_id"]) == -1002000 and calls[1].error is None
    for _ in range(100):  # acked right after the send
        if await _pending(tg_settings) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _pending(tg_settings) == 0


def test_the_bot_never_imports_torch():
    code = (
        "import sys, likeness.bot.telegram, likeness.commands.telegram\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'likeness.generation') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
