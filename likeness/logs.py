"""Logging for every entrypoint: readable text by default, one JSON object per line with `log_format=json`.

Secrets never reach a log line: a filter on the handler replaces the configured tokens, the Redis password
and anything shaped like a Telegram or Discord bot token with `***` — in the message, its arguments and
tracebacks — whichever library logged it (httpx, for one, logs Telegram URLs that contain the token).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from likeness.config import Settings
from likeness.errors import ConfigError

__all__ = ["MASK", "JsonFormatter", "RedactingFilter", "TextFormatter", "configured_secrets", "setup_logging"]

MASK = "***"

# A Telegram bot token is `<bot id>:<35 url-safe chars>`; a Discord token is three base64url parts
# (user id, timestamp, HMAC). Both are matched even when nobody configured them (a pasted token, a wrong bot).
# A URL-encoded colon (`%3A`) counts too: HTTP clients log request URLs that carry the token.
_TELEGRAM_TOKEN = re.compile(r"\d+(?::|%3[Aa])[A-Za-z0-9_-]{35}")
_DISCORD_TOKEN = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
# Hugging Face access tokens (HF_TOKEN, used by `likeness models pull` for gated repos).
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}")
# `scheme://user:password@host` in any URL (Redis, proxies): keep the user, hide the password.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)")

# Attributes every LogRecord has; anything else came from `extra=` and is worth printing.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# Libraries that log each HTTP request at INFO: useful when debugging, noise in production.
_CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3", "aiohttp.access")


def configured_secrets(settings: Settings) -> list[str]:
    """Secret values in `settings`: bot tokens and the Redis password (longest first, so none is cut)."""
    secrets = [
        token.get_secret_value()
        for token in (settings.telegram_token, settings.discord_token)
        if token is not None and token.get_secret_value()
    ]
    if settings.telegram_token is not None and ":" in settings.telegram_token.get_secret_value():
        # The part after the bot id is the secret; it also shows up alone (URL-encoded, in PTB's logs).
        secrets.append(settings.telegram_token.get_secret_value().split(":", 1)[1])
    if settings.redis_url:
        password = urlsplit(settings.redis_url).password
        if password:
            secrets.append(password)
    return sorted(set(secrets), key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Replace secrets in a record's message, arguments and traceback with `***` (never drops a record)."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """`text` with every known secret and every token-shaped string masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
        text = _TELEGRAM_TOKEN.sub(MASK, text)
        text = _HF_TOKEN.sub(MASK, text)
        return _DISCORD_TOKEN.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        # Format once, then redact the result: a secret may sit in an argument, or be split between
        # the template and an argument; afterwards the record carries no arguments at all.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`2026-11-26 04:10:00,123 INFO    likeness.queue: message key=value …` (extras appended)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        first, newline, rest = line.partition("\n")  # keep key=value on the message line, before a traceback
        pairs = " ".join(f"{k}={v}" for k, v in extras.items())
        return f"{first} {pairs}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras, exc (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def _is_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)


def setup_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Send all logging (ours and libraries') to `stream` (stderr) in the configured format, redacted.

    Replaces the handler a previous call installed, and plain console handlers such as `basicConfig`'s
    (they would print unredacted), so calling it twice does not double lines. Other handlers (files,
    test capture) stay. Raises `ConfigError` for an unknown `log_level`.
    """
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(
            message=f"LIKENESS_LOG_LEVEL={settings.log_level!r} is not a level; use DEBUG, INFO, WARNING or ERROR"
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name("likeness")
    handler.addFilter(RedactingFilter(configured_secrets(settings)))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "likeness" or _is_console(h)]:
        root.removeHandler(old)
        if old.get_name() == "likeness":
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    logging.captureWarnings(True)
    return handler
