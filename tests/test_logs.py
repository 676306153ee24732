"""Logging: text and JSON formats, and no secret ever reaching a log line."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.logs import MASK, RedactingFilter, setup_logging

TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
REDIS_PASSWORD = "s3cret-pa55word"


@pytest.fixture
def capture() -> Iterator[Callable[[Settings], io.StringIO]]:
    """Install `setup_logging` on a StringIO; remove our handler afterwards."""
    installed: list[logging.Handler] = []
    level = logging.getLogger().level

    def install(settings: Settings) -> io.StringIO:
        stream = io.StringIO()
        installed.append(setup_logging(settings, stream=stream))
        return stream

    yield install
    root = logging.getLogger()
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def secret_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return make_settings(
            telegram_token=TELEGRAM_TOKEN,
            discord_token=DISCORD_TOKEN,
            redis_url=f"redis://default:{REDIS_PASSWORD}@redis.internal:6379/0",
            **overrides,
        )

    return make


def test_text_format_is_readable_and_carries_extras(capture, make_settings) -> None:
    stream = capture(make_settings())
    logging.getLogger("likeness.test").info("job %s done in %.1f s", "abc", 1.5, extra={"job_id": "abc"})
    line = stream.getvalue().strip()
    assert "INFO" in line and "likeness.test" in line
    assert "job abc done in 1.5 s" in line
    assert line.endswith("job_id=abc")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_json_format_is_one_object_per_line(capture, make_settings) -> None:
    stream = capture(make_settings(log_format="json"))
    log = logging.getLogger("likeness.queue")
    log.info("queued", extra={"job_id": "j1", "user": 42})
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("job %s failed", "j2", extra={"job_id": "j2"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "likeness.queue" and first["message"] == "queued"
    assert first["job_id"] == "j1" and first["user"] == 42
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and second["message"] == "job j2 failed"
    assert "RuntimeError: boom" in second["exc"]


def test_level_filters_and_bad_level_is_a_config_error(capture, make_settings) -> None:
    stream = capture(make_settings(log_level="warning"))
    logging.getLogger("likeness.test").info("hidden")
    logging.getLogger("likeness.test").warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ConfigError, match="LIKENESS_LOG_LEVEL"):
        setup_logging(make_settings(log_level="chatty"))


def test_setup_twice_does_not_double_lines(capture, make_settings) -> None:
    capture(make_settings())
    stream = capture(make_settings())
    logging.getLogger("likeness.test").warning("once")
    assert stream.getvalue().count("once") == 1
    assert sum(h.get_name() == "likeness" for h in logging.getLogger().handlers) == 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configured_secrets_are_redacted_everywhere(capture, secret_settings, log_format: str) -> None:
    settings = secret_settings(log_format=log_format)
    stream = capture(settings)
    log = logging.getLogger("httpx")  # a library logger: PTB's HTTP client logs URLs with the token
    log.warning("HTTP Request: POST https://api.telegram.org/bot%s/getMe", TELEGRAM_TOKEN)
    logging.getLogger("likeness.bot").warning(
        "discord login with %r failed", DISCORD_TOKEN, extra={"detail": f"token={DISCORD_TOKEN}"}
    )
    logging.getLogger("likeness.queue").error("cannot reach %s", settings.redis_url)
    try:
        raise ConnectionError(f"auth failed for {REDIS_PASSWORD} / {TELEGRAM_TOKEN}")
    except ConnectionError:
        logging.getLogger("likeness.queue").exception("redis down")
    out = stream.getvalue()
    for secret in (TELEGRAM_TOKEN, DISCORD_TOKEN, REDIS_PASSWORD):
        assert secret not in out
    assert out.count(MASK) >= 6
    assert "redis://default:***@redis.internal:6379/0" in out  # still useful: user, host and port survive
    assert "ConnectionError: auth failed for ***" in out


def test_token_shaped_strings_are_redacted_without_configuration(capture, make_settings) -> None:
    stream = capture(make_settings())
    other_telegram = "987654321:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw9"
    logging.getLogger("likeness").warning("pasted %s and %s", other_telegram, DISCORD_TOKEN)
    logging.getLogger("likeness").warning("proxy http://bob:hunter2@proxy:3128 in use")
    out = stream.getvalue()
    assert other_telegram not in out and DISCORD_TOKEN not in out and "hunter2" not in out
    assert "http://bob:***@proxy:3128" in out


def test_redaction_keeps_ordinary_text() -> None:
    redact = RedactingFilter(["tok"]).redact
    text = "job 1f2e finished at 04:10:00 in 12.5 s; module likeness.generation._engine; http://host:80/x"
    assert redact(text) == text
    assert redact("the tok is here") == f"the {MASK} is here"


def test_url_encoded_and_hub_tokens_are_redacted(capture, secret_settings) -> None:
    stream = capture(secret_settings())
    bot_id, secret = TELEGRAM_TOKEN.split(":")
    hf_token = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    log = logging.getLogger("httpx")
    log.warning("POST https://api.telegram.org/bot%s%%3A%s/getUpdates", bot_id, secret)
    log.warning("secret part alone: %s; hub token %s", secret, hf_token)
    out = stream.getvalue()
    assert secret not in out and hf_token not in out and out.count(MASK) == 3


def test_replaces_an_unredacted_console_handler(capture, secret_settings) -> None:
    """A `basicConfig`-style handler left by a command would print tokens in clear: it is removed."""
    root = logging.getLogger()
    plain = logging.StreamHandler(sys.stderr)
    root.addHandler(plain)
    try:
        capture(secret_settings())
        assert plain not in root.handlers
    finally:
        root.removeHandler(plain)
