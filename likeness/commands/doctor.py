"""`likeness doctor`: check the configuration and the machine, print what is wrong and how to fix it.

Each check is a small function `(Settings) -> Check`; the report lists them with ✓ (ok), ! (works, but
look at it) and ✗ (blocks startup). The exit code is 1 when any check fails, so scripts and container
health checks can use it (`likeness doctor --only redis,device`). Secrets are never printed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from likeness.config import Settings

if TYPE_CHECKING:
    from likeness.generation import ModelSpec

__all__ = ["CHECKS", "Check", "add_arguments", "run", "run_checks"]

Status = Literal["ok", "warn", "fail"]
SYMBOLS: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗"}

_TELEGRAM_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{35}$")
_DISCORD_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
# Approximate GPU memory (GiB) one worker needs per model family, with the identity adapter loaded
# (docs/operations.md has the sizing table). Below it, expect out-of-memory errors or CPU offload.
MIN_GPU_GIB = {"sd15": 6.0, "sdxl": 12.0}


@dataclass(frozen=True)
class Check:
    """Outcome of one check: a status, a short title, what was found, and how to fix it."""

    status: Status
    title: str
    detail: str
    fix: str = ""


# --- Redis ------------------------------------------------------------------------------------------------


def _redacted(url: str) -> str:
    from likeness.logs import RedactingFilter

    return RedactingFilter().redact(url)


def check_redis(settings: Settings, timeout: float = 2.0) -> Check:
    """Redis answers PING at `settings.redis_dsn`, and does not evict keys (a queue must not lose jobs)."""
    import redis

    dsn = settings.redis_dsn
    shown = _redacted(dsn)
    try:
        # Any: redis-py types every reply as `Awaitable | Any` (sync and async clients share stubs).
        client: Any = redis.Redis.from_url(dsn, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        return Check(
            "fail", "Redis", f"LIKENESS_REDIS_URL is not a Redis URL: {exc}", "use redis://[:password@]host:port/db"
        )
    try:
        client.ping()
        version = str(client.info("server").get("redis_version", "?"))
        policy = _eviction_policy(client)
    except redis.AuthenticationError:
        return Check("fail", "Redis", f"{shown} refused the password", "check the password in LIKENESS_REDIS_URL")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        if settings.redis_url is None:
            return Check(
                "warn",
                "Redis",
                f"LIKENESS_REDIS_URL is unset: `likeness up` runs a private Redis; nothing answers at {shown} "
                "for a separate worker or bot",
                "for separate processes, set LIKENESS_REDIS_URL to a shared Redis",
            )
        reason = _redacted(str(exc)) or type(exc).__name__
        return Check(
            "fail",
            "Redis",
            f"no answer from {shown} within {timeout:g} s ({reason})",
            "start Redis, or fix host/port in LIKENESS_REDIS_URL (in docker compose: redis://redis:6379/0)",
        )
    finally:
        client.close()
    if policy not in (None, "noeviction"):
        return Check(
            "warn",
            "Redis",
            f"{shown} answers (Redis {version}) but evicts keys (maxmemory-policy {policy}): queued jobs can vanish",
            "set `maxmemory-policy noeviction` on this Redis",
        )
    return Check("ok", "Redis", f"{shown} answers (Redis {version})")


def _eviction_policy(client: Any) -> str | None:
    import redis

    try:
        reply: dict[str, str] = client.config_get("maxmemory-policy")
    except redis.ResponseError:
        return None  # managed Redis services often forbid CONFIG: nothing to learn
    return reply.get("maxmemory-policy")


def check_redis_server(settings: Settings) -> Check:
    """`likeness up` needs the `redis-server` binary when no Redis URL is configured."""
    if settings.redis_url is not None:
        return Check("ok", "redis-server", "not needed: LIKENESS_REDIS_URL points at a Redis")
    path = shutil.which("redis-server")
    if path is None:
        from likeness.redis_server import INSTALL_HINT

        return Check(
            "fail", "redis-server", "LIKENESS_REDIS_URL is unset and redis-server is not installed", INSTALL_HINT
        )
    return Check("ok", "redis-server", f"{path} (for the private Redis of `likeness up`)")


# --- chat platforms ---------------------------------------------------------------------------------------


def _token_shape_fix(token: str) -> str | None:
    if token != token.strip():
        return "remove the spaces or line breaks around the token"
    if token[:1] in "\"'" or token[-1:] in "\"'":
        return "remove the quotes around the token"
    return None


def check_telegram(settings: Settings) -> Check:
    """The Telegram token, if set, has BotFather's shape `<digits>:<35 characters>`."""
    if settings.telegram_token is None or not settings.telegram_token.get_secret_value():
        return Check("ok", "Telegram token", "not set: the Telegram bot stays off")
    token = settings.telegram_token.get_secret_value()
    match = _TELEGRAM_TOKEN.match(token)
    if match is None:
        fix = _token_shape_fix(token) or "copy the whole token from @BotFather (/token): digits, a colon, 35 characters"
        return Check(
            "fail",
            "Telegram token",
            f"LIKENESS_TELEGRAM_TOKEN does not look like a bot token ({len(token)} characters)",
            fix,
        )
    return Check("ok", "Telegram token", f"looks valid (bot id {match[1]})")


def check_discord(settings: Settings) -> Check:
    """The Discord token, if set, is three dot-separated base64url parts, the first one the bot's id."""
    if settings.discord_token is None or not settings.discord_token.get_secret_value():
        return Check("ok", "Discord token", "not set: the Discord bot stays off")
    token = settings.discord_token.get_secret_value()
    if token.lower().startswith("bot "):
        return Check("fail", "Discord token", "LIKENESS_DISCORD_TOKEN starts with 'Bot '", "remove the 'Bot ' prefix")
    match = _DISCORD_TOKEN.match(token)
    bot_id = _decode_id(match[1]) if match else None
    if bot_id is None:
        fix = (
            _token_shape_fix(token)
            or "copy the token from the Developer Portal (Bot → Reset Token), not the client secret"
        )
        return Check(
            "fail",
            "Discord token",
            f"LIKENESS_DISCORD_TOKEN does not look like a bot token ({len(token)} characters)",
            fix,
        )
    return Check("ok", "Discord token", f"looks valid (bot id {bot_id})")


def _decode_id(part: str) -> str | None:
    try:
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.isdigit() else None


def check_platforms(settings: Settings) -> Check:
    """At least one chat platform is configured (otherwise only the playground works)."""
    names = [
        name
        for name, token in (("Telegram", settings.telegram_token), ("Discord", settings.discord_token))
        if token is not None and token.get_secret_value()
    ]
    if not names:
        return Check(
            "warn",
            "Chat platforms",
            "no bot token is set: only the playground of `likeness up` will answer",
            "set LIKENESS_TELEGRAM_TOKEN and/or LIKENESS_DISCORD_TOKEN in .env",
        )
    return Check("ok", "Chat platforms", " and ".join(names))


def check_webhook(settings: Settings) -> Check:
    """A Telegram webhook URL must be public HTTPS (Telegram refuses anything else)."""
    url = settings.telegram_webhook_url
    if not url:
        return Check("ok", "Telegram updates", "long polling (no public URL needed)")
    if not url.startswith("https://"):
        return Check(
            "fail", "Telegram updates", f"webhook URL {url!r} is not https://", "Telegram only posts to HTTPS URLs"
        )
    where = f"{settings.telegram_webhook_listen}:{settings.telegram_webhook_port}"
    return Check("ok", "Telegram updates", f"webhook {url} → proxy → {where}")


# --- machine and weights ----------------------------------------------------------------------------------


def _model_spec(settings: Settings) -> ModelSpec:
    """The configured ModelSpec; ImportError without the worker extra, ConfigError for a bad key/file."""
    from likeness.generation import get_model_spec

    return get_model_spec(settings.model, settings.models_file)


def check_device(settings: Settings) -> Check:
    """PyTorch, the accelerator and the dtype fit together (a bot-only host without torch is fine)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return Check(
            "warn",
            "GPU / dtype",
            "PyTorch is not installed: this host can run the bots, not a worker",
            "on worker hosts: pip install 'likeness-bot[worker]' (or use the worker Docker image)",
        )
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if settings.device == "cuda" and not cuda:
        return Check(
            "fail",
            "GPU / dtype",
            f"LIKENESS_DEVICE=cuda but torch {torch.__version__} sees no CUDA device",
            "check `nvidia-smi`, the NVIDIA Container Toolkit and CUDA_VISIBLE_DEVICES, or set LIKENESS_DEVICE=auto",
        )
    if settings.device == "mps" and not mps:
        return Check(
            "fail", "GPU / dtype", "LIKENESS_DEVICE=mps but Apple MPS is not available", "set LIKENESS_DEVICE=auto"
        )
    device = settings.device if settings.device != "auto" else "cuda" if cuda else "mps" if mps else "cpu"
    dtype = settings.dtype if settings.dtype != "auto" else "float32" if device == "cpu" else "float16"
    spec: ModelSpec | None
    try:
        spec = _model_spec(settings)
    except Exception:  # reported by the weights check
        spec = None
    tiny = spec is not None and spec.tiny
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gib = props.total_memory / 2**30
        found = f"{props.name} ({gib:.0f} GiB), torch {torch.__version__}, {dtype}"
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return Check("fail", "GPU / dtype", f"{props.name} has no bfloat16 support", "set LIKENESS_DTYPE=float16")
        need = MIN_GPU_GIB.get(spec.family) if spec is not None else None
        if need and not tiny and gib < need:
            return Check(
                "warn",
                "GPU / dtype",
                f"{found}: {settings.model} needs about {need:g} GiB",
                "use a smaller model family (LIKENESS_MODEL=sd15) or a larger GPU; lower LIKENESS_MAX_BATCH",
            )
        return Check("ok", "GPU / dtype", found)
    found = f"{device}, torch {torch.__version__}, {dtype}"
    if device == "cpu" and dtype != "float32":
        return Check(
            "warn", "GPU / dtype", f"{found}: half precision on the CPU is slow and lossy", "set LIKENESS_DTYPE=auto"
        )
    if device == "cpu" and not tiny:
        return Check(
            "warn",
            "GPU / dtype",
            f"{found}: no GPU, a real model takes minutes per image",
            "run workers on a CUDA GPU (LIKENESS_DEVICE=auto finds it)",
        )
    return Check("ok", "GPU / dtype", found)


def check_weights(settings: Settings) -> Check:
    """The configured model exists and its weights are on disk (HF cache or local paths)."""
    from likeness.errors import ConfigError

    try:
        spec = _model_spec(settings)
    except ImportError:
        return Check(
            "warn",
            "Model weights",
            "cannot check without the worker extra (bot-only host)",
            "run the doctor on a worker host",
        )
    except ConfigError as exc:
        return Check("fail", "Model weights", str(exc), "set LIKENESS_MODEL to a known key or fix LIKENESS_MODELS_FILE")
    from likeness.commands.models import missing_weights, offline

    if spec.tiny:
        return Check("ok", "Model weights", f"{settings.model}: tiny random weights, built offline on first use")
    try:
        missing, total = missing_weights(settings, spec)
    except ConfigError as exc:  # presets are reported by their own check
        return Check("warn", "Model weights", f"cannot list preset LoRAs: {exc}", "fix the presets first")
    if not missing:
        return Check("ok", "Model weights", f"{settings.model}: all {total} weights present")
    listed = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    if offline():
        return Check(
            "fail",
            "Model weights",
            f"{settings.model}: {len(missing)} of {total} missing with HF_HUB_OFFLINE=1: {listed}",
            f"run `likeness models pull {settings.model}` on a connected host and copy the HF cache here",
        )
    return Check(
        "warn",
        "Model weights",
        f"{settings.model}: {len(missing)} of {total} not downloaded yet ({listed}); the first start downloads them",
        f"run `likeness models pull {settings.model}` before starting workers",
    )


def check_presets(settings: Settings) -> Check:
    """Built-in and operator presets load and validate."""
    from likeness.errors import ConfigError
    from likeness.presets import PresetCatalog

    try:
        catalog = PresetCatalog.load(settings.presets_dir)
    except ConfigError as exc:
        return Check("fail", "Presets", str(exc), "fix the file and field named above (`likeness presets` lists them)")
    extra = f", with {settings.presets_dir}" if settings.presets_dir else ""
    count = f"{len(catalog)} preset" + ("s" if len(catalog) != 1 else "")
    return Check("ok", "Presets", f"{count}{extra}")


def check_data_dir(settings: Settings) -> Check:
    """The data folder exists (or can be created) and is writable."""
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "fail",
            "Data folder",
            f"{folder} is not writable ({exc.strerror or exc})",
            "fix its owner/permissions or set LIKENESS_DATA_DIR",
        )
    return Check("ok", "Data folder", str(folder))


def check_logging(settings: Settings) -> Check:
    """The log level is one Python knows."""
    import logging

    if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
        return Check(
            "fail",
            "Logging",
            f"LIKENESS_LOG_LEVEL={settings.log_level!r} is not a level",
            "use DEBUG, INFO, WARNING or ERROR",
        )
    return Check("ok", "Logging", f"{settings.log_format}, {settings.log_level.upper()}, secrets masked")


CHECKS: dict[str, Callable[[Settings], Check]] = {
    "redis": check_redis,
    "redis-server": check_redis_server,
    "telegram": check_telegram,
    "discord": check_discord,
    "platforms": check_platforms,
    "webhook": check_webhook,
    "device": check_device,
    "weights": check_weights,
    "presets": check_presets,
    "data-dir": check_data_dir,
    "logging": check_logging,
}


def run_checks(settings: Settings, names: list[str] | None = None) -> list[Check]:
    """Run the named checks (all by default); a check that crashes becomes a failure, not a traceback."""
    results = []
    for name in names or list(CHECKS):
        try:
            results.append(CHECKS[name](settings))
        except Exception as exc:
            results.append(
                Check("fail", name, f"the check itself crashed: {type(exc).__name__}: {_redacted(str(exc))}")
            )
    return results


# --- command ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        metavar="CHECKS",
        help=f"comma-separated checks to run (default: all): {', '.join(CHECKS)}",
    )


def _load_settings() -> tuple[Settings | None, Check | None]:
    from pydantic import ValidationError

    from likeness.config import describe_invalid

    try:
        return Settings(), None
    except ValidationError as exc:
        return None, Check("fail", "Settings", describe_invalid(exc), "fix these values in .env (see .env.example)")


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = sorted(set(names or ()) - CHECKS.keys())
    if unknown:
        print(f"likeness doctor: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    _ensure_utf8_stdout()
    settings, problem = _load_settings()
    results = run_checks(settings, names) if settings is not None else [problem] if problem else []
    print(_report(settings, results))
    return 1 if any(r.status == "fail" for r in results) else 0


def _report(settings: Settings | None, results: list[Check]) -> str:
    width = max(len(r.title) for r in results)
    lines = [
        "Likeness doctor" + (f": model {settings.model}, Redis {_redacted(settings.redis_dsn)}" if settings else "")
    ]
    lines.append("")
    for r in results:
        lines.append(f"{SYMBOLS[r.status]} {r.title:<{width}}  {r.detail}")
        if r.fix and r.status != "ok":
            lines.append(f"  {'':<{width}}  fix: {r.fix}")
    fails = sum(r.status == "fail" for r in results)
    warns = sum(r.status == "warn" for r in results)
    lines.append("")
    if fails:
        lines.append(f"{fails} problem(s) (✗) must be fixed before starting; {warns} warning(s) (!).")
    elif warns:
        lines.append(f"Ready, with {warns} warning(s) (!) worth a look.")
    else:
        lines.append("All checks passed.")
    return "\n".join(lines)


def _ensure_utf8_stdout() -> None:
    # ✓ ✗ on a C/POSIX-locale terminal would raise UnicodeEncodeError; fall back to replacement characters.
    if (sys.stdout.encoding or "").lower().replace("-", "") != "utf8" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
