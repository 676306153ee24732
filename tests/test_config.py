"""Settings: one object from LIKENESS_* variables or .env; tokens never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from likeness.config import DEFAULT_REDIS_URL, Settings

TG = "123456789:AAEhBP0av28sdkfjhsdkfjhsdkfj-sdkfjh"


def test_environment_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_MODEL", "tiny")
    monkeypatch.setenv("LIKENESS_ADMINS", "1, 2 ,3")
    monkeypatch.setenv("LIKENESS_ALLOWED_CHATS", "-100123")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model == "tiny"
    assert settings.admins == ["1", "2", "3"] and settings.allowed_chats == ["-100123"]
    assert settings.redis_url is None and settings.redis_dsn == DEFAULT_REDIS_URL


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("LIKENESS_MODEL=tiny-sd15\nLIKENESS_MAX_BATCH=2\n")
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert (settings.model, settings.max_batch) == ("tiny-sd15", 2)


def test_tokens_never_appear_in_reprs_or_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_TELEGRAM_TOKEN", TG)
    monkeypatch.setenv("LIKENESS_DISCORD_TOKEN", "secret-discord-token")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert TG not in text and "secret-discord-token" not in text
    assert settings.telegram_token is not None and settings.telegram_token.get_secret_value() == TG


def test_invalid_values_name_the_setting_without_echoing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_TELEGRAM_TOKEN", TG)
    monkeypatch.setenv("LIKENESS_DEVICE", "tpu")
    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "device" in str(err.value) and TG not in str(err.value)


@pytest.mark.parametrize("command", ["telegram", "discord", "worker", "presets", "moderate", "generate", "up"])
def test_every_command_answers_invalid_settings_plainly_without_the_rejected_value(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from likeness.cli import main

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("LIKENESS_TELEGRAM_TOKEN", TG)
    monkeypatch.setenv("LIKENESS_MAX_BATCH", "secret-looking-value")
    argv = {"moderate": ["moderate", "bans"], "generate": ["generate", "x.jpg"]}.get(command, [command])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"likeness {command}: invalid configuration: LIKENESS_MAX_BATCH:" in err
    assert "secret-looking-value" not in err and "Traceback" not in err
