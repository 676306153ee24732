"""`likeness doctor`: each check on good and bad setups, the report, and the exit code."""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from likeness.commands import doctor
from likeness.config import Settings
from likeness.redis_server import free_port
from tests.helpers.models import local_model_toml

ROOT = Path(__file__).resolve().parents[1]
TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
DISCORD_BOT_ID = "1098765432109876543"
DISCORD_TOKEN = (
    base64.urlsafe_b64encode(DISCORD_BOT_ID.encode()).decode().rstrip("=")
    + ".GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
)


def _doctor(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    return doctor.run(parser.parse_args(list(argv)))


# --- tokens -----------------------------------------------------------------------------------------------


def test_valid_tokens_pass_and_are_never_shown(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(telegram_token=TELEGRAM_TOKEN, discord_token=DISCORD_TOKEN)
    telegram, discord = doctor.check_telegram(settings), doctor.check_discord(settings)
    assert telegram.status == "ok" and "123456789" in telegram.detail
    assert discord.status == "ok" and DISCORD_BOT_ID in discord.detail
    assert doctor.check_platforms(settings).status == "ok"
    for check in (telegram, discord):
        assert TELEGRAM_TOKEN not in repr(check) and DISCORD_TOKEN not in repr(check)


@pytest.mark.parametrize(
    ("token", "fix_mentions"),
    [
        ("123456789:short", "@BotFather"),
        (f'"{TELEGRAM_TOKEN}"', "quotes"),
        (f"{TELEGRAM_TOKEN} ", "spaces"),
        ("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1", "@BotFather"),
    ],
)
def test_malformed_telegram_token_fails_with_a_fix(make_settings, token: str, fix_mentions: str) -> None:
    check = doctor.check_telegram(make_settings(telegram_token=token))
    assert check.status == "fail" and fix_mentions in check.fix
    assert token.strip().strip('"') not in check.detail + check.fix


@pytest.mark.parametrize(
    ("token", "fix_mentions"),
    [
        (f"Bot {DISCORD_TOKEN}", "'Bot ' prefix"),
        ("k3jH8sQ1xYvZ0pL2mN4bR6tW9cE5fG7a", "client secret"),  # an OAuth2 client secret: one part
        ("bm90LWRpZ2l0cw.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB", "client secret"),  # first part not an id
    ],
)
def test_malformed_discord_token_fails_with_a_fix(make_settings, token: str, fix_mentions: str) -> None:
    check = doctor.check_discord(make_settings(discord_token=token))
    assert check.status == "fail" and fix_mentions in check.fix


def test_no_token_at_all_is_a_warning(make_settings) -> None:
    settings = make_settings()
    assert doctor.check_telegram(settings).status == "ok"
    assert doctor.check_platforms(settings).status == "warn"


def test_webhook_must_be_https(make_settings) -> None:
    assert doctor.check_webhook(make_settings(telegram_webhook_url="http://bot.example.com/tg")).status == "fail"
    ok = doctor.check_webhook(make_settings(telegram_webhook_url="https://bot.example.com/tg"))
    assert ok.status == "ok" and "8443" in ok.detail


# --- Redis ------------------------------------------------------------------------------------------------


def test_redis_reachable(make_settings, redis_url: str) -> None:
    check = doctor.check_redis(make_settings(redis_url=redis_url))
    assert check.status == "ok" and "answers (Redis " in check.detail


def test_redis_unreachable_fails_fast(make_settings) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    check = doctor.check_redis(make_settings(redis_url=url), timeout=0.5)
    assert check.status == "fail" and "no answer" in check.detail and check.fix
    assert "hunter2" not in check.detail


def test_redis_that_evicts_keys_is_flagged(make_settings, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        check = doctor.check_redis(make_settings(redis_url=redis_url))
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
    assert check.status == "warn" and "allkeys-lru" in check.detail and "noeviction" in check.fix


def test_redis_server_binary_only_matters_without_a_url(make_settings, redis_url: str, monkeypatch) -> None:
    assert doctor.check_redis_server(make_settings(redis_url=redis_url)).status == "ok"
    assert doctor.check_redis_server(make_settings()).status == "ok"  # the test machine has redis-server
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = doctor.check_redis_server(make_settings())
    assert missing.status == "fail" and "apt-get install redis-server" in missing.fix


# --- machine, weights, presets ----------------------------------------------------------------------------


def test_device_checks(make_settings) -> None:
    torch = pytest.importorskip("torch")
    assert doctor.check_device(make_settings()).status == "ok"  # tiny on the CPU in float32
    assert doctor.check_device(make_settings(dtype="float16")).status == "warn"
    if not torch.cuda.is_available():
        cuda = doctor.check_device(make_settings(device="cuda"))
        assert cuda.status == "fail" and "nvidia-smi" in cuda.fix
        real = doctor.check_device(make_settings(model="sdxl-realvis"))
        assert real.status == "warn" and "GPU" in real.fix


def test_weights_check(make_settings, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("torch")
    from huggingface_hub import constants

    assert doctor.check_weights(make_settings()).status == "ok"  # tiny
    unknown = doctor.check_weights(make_settings(model="no-such-model"))
    assert unknown.status == "fail" and "tiny" in unknown.detail  # names the known keys

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    toml = local_model_toml(tmp_path, with_adapter=False)
    settings = make_settings(model="mine", models_file=toml, nsfw_backend="off")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    online = doctor.check_weights(settings)
    assert online.status == "warn" and "adapter" in online.detail and "models pull mine" in online.fix
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = doctor.check_weights(settings)
    assert offline.status == "fail" and "HF_HUB_OFFLINE=1" in offline.detail


def test_presets_check(make_settings, tmp_path: Path) -> None:
    assert doctor.check_presets(make_settings()).status == "ok"
    (tmp_path / "broken.toml").write_text('title = "Broken"\n[defaults]\nsteps = "many"\n')
    check = doctor.check_presets(make_settings(presets_dir=tmp_path))
    assert check.status == "fail" and "broken.toml" in check.detail and "steps" in check.detail


def test_data_dir_must_be_writable(make_settings, tmp_path: Path) -> None:
    assert doctor.check_data_dir(make_settings(data_dir=tmp_path / "new")).status == "ok"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = doctor.check_data_dir(make_settings(data_dir=blocker / "data"))
    assert check.status == "fail" and "LIKENESS_DATA_DIR" in check.fix


def test_a_crashing_check_is_reported_not_raised(make_settings, monkeypatch) -> None:
    def broken(settings: Settings) -> doctor.Check:
        raise RuntimeError(f"boom {TELEGRAM_TOKEN}")

    monkeypatch.setitem(doctor.CHECKS, "presets", broken)
    (result,) = doctor.run_checks(make_settings(), ["presets"])
    assert result.status == "fail" and "boom" in result.detail and TELEGRAM_TOKEN not in result.detail


# --- the command ------------------------------------------------------------------------------------------


def test_bad_setup_report_and_exit_code(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "oops.toml").write_text("this is not toml")
    for key, value in {
        "LIKENESS_MODEL": "tiny",
        "LIKENESS_DEVICE": "cpu",
        "LIKENESS_DATA_DIR": str(tmp_path / "data"),
        "LIKENESS_REDIS_URL": f"redis://:pw-s3cret@127.0.0.1:{free_port()}/0",
        "LIKENESS_TELEGRAM_TOKEN": "123:not-a-token-s3cret",
        "LIKENESS_PRESETS_DIR": str(tmp_path / "presets"),
    }.items():
        monkeypatch.setenv(key, value)
    assert _doctor("--only", "redis,telegram,presets,data-dir") == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(line.startswith("✗") for line in lines) == 3
    assert any(line.startswith("✓ Data folder") for line in lines)
    assert out.count("fix:") == 3 and "must be fixed" in out
    assert "s3cret" not in out


def test_invalid_settings_are_reported_without_their_values(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIKENESS_DEVICE", "gpu")
    monkeypatch.setenv("LIKENESS_TELEGRAM_WEBHOOK_PORT", "s3cret-not-a-port")
    assert _doctor() == 1
    out = capsys.readouterr().out
    assert "LIKENESS_DEVICE" in out and "LIKENESS_TELEGRAM_WEBHOOK_PORT" in out and "s3cret" not in out


def test_only_rejects_unknown_checks(capsys) -> None:
    assert _doctor("--only", "redis,colour") == 2
    assert "colour" in capsys.readouterr().err


def test_good_setup_exits_zero(redis_url: str, tmp_path: Path) -> None:
    """The real CLI in a fresh process, configured only through the environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "LIKENESS_REDIS_URL": redis_url,
        "LIKENESS_MODEL": "tiny",
        "LIKENESS_DEVICE": "cpu",
        "LIKENESS_DATA_DIR": str(tmp_path / "data"),
        "LIKENESS_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "LIKENESS_DISCORD_TOKEN": DISCORD_TOKEN,
    }
    done = subprocess.run(
        [sys.executable, "-m", "likeness", "doctor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.stdout.splitlines()
    checks = [line for line in report if line[:2] in {"✓ ", "! ", "✗ "}]
    assert len(checks) == len(doctor.CHECKS) and not any(line.startswith("✗") for line in checks)
    assert "All checks passed." in done.stdout
    assert TELEGRAM_TOKEN not in done.stdout + done.stderr and DISCORD_TOKEN not in done.stdout + done.stderr
