"""Deployment files: `.env.example` documents every setting, compose and the Dockerfile keep their promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from likeness.config import Settings

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

_SETTING_LINE = re.compile(r"^#?\s*(LIKENESS_[A-Z0-9_]+)=(.*)$")
_ANY_VAR_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def _documented(pattern: re.Pattern[str] = _SETTING_LINE) -> dict[str, tuple[str, str]]:
    """name -> (value, the comment line just above it)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    found: dict[str, tuple[str, str]] = {}
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            found[match[1]] = (match[2], lines[i - 1] if i else "")
    return found


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


# --- .env.example ---------------------------------------------------------------------------------------


def test_env_example_lists_every_setting_with_a_comment() -> None:
    documented = _documented()
    expected = {f"LIKENESS_{name.upper()}" for name in Settings.model_fields}
    assert sorted(expected - documented.keys()) == [], "settings missing from .env.example"
    assert sorted(documented.keys() - expected) == [], ".env.example names settings that do not exist"
    for name, (_value, comment) in documented.items():
        assert comment.startswith("# ") and not _SETTING_LINE.match(comment), f"{name} has no comment line"


def test_env_example_as_copied_is_valid_and_sets_nothing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env)
    assert Settings(_env_file=env) == Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_example_value_is_valid_and_read(tmp_path: Path) -> None:
    """Uncommenting every line as written gives a valid configuration, and each line takes effect."""
    env = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    env.write_text("\n".join(line.removeprefix("# ") if _SETTING_LINE.match(line) else line for line in lines))
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, (value, comment) in _documented().items():
        field = name.removeprefix("LIKENESS_").lower()
        default, got = getattr(defaults, field), getattr(settings, field)
        if default is None or default == []:
            assert got not in (None, []), f"{name}={value} was not read"
        elif f"Default: {value}" not in comment and str(default).lower() != value.lower():
            assert got != default, f"{name}={value} was not read"
    assert settings.telegram_token is not None and settings.redis_url is not None


# --- docker-compose.yml -------------------------------------------------------------------------------


def test_compose_interpolated_variables_are_documented() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text(encoding="utf-8")))
    assert used, "compose should be configurable from .env"
    assert sorted(used - _documented(_ANY_VAR_LINE).keys()) == []


def test_compose_redis_persists_and_reports_health() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert redis["image"].startswith("redis:7")
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    volume, target = redis["volumes"][0].split(":")[:2]
    assert target == "/data" and volume in compose["volumes"]


def test_compose_worker_reserves_a_gpu_and_can_scale() -> None:
    compose = _compose()
    worker = compose["services"]["worker"]
    assert worker["build"]["target"] == "worker"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    hf_home = worker["environment"]["HF_HOME"]
    mounts = dict(reversed(v.split(":")[:2]) for v in worker["volumes"])
    assert mounts[hf_home] in compose["volumes"], "the HF cache must be a named volume"
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N needs both unset"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["LIKENESS_REDIS_URL"].endswith(":-redis://redis:6379/0}")


@pytest.mark.parametrize("service", ["worker", "telegram", "discord"])
def test_compose_services_read_optional_env_file(service: str) -> None:
    spec = _compose()["services"][service]
    assert spec["env_file"] == [{"path": ".env", "required": False}]
    assert spec["build"]["target"] == ("worker" if service == "worker" else "bot")


@pytest.mark.parametrize(
    ("service", "token"), [("telegram", "LIKENESS_TELEGRAM_TOKEN"), ("discord", "LIKENESS_DISCORD_TOKEN")]
)
def test_compose_bot_starts_only_with_its_token(service: str, token: str, tmp_path: Path) -> None:
    spec = _compose()["services"][service]
    assert spec["entrypoint"][:2] == ["/bin/sh", "-c"] and spec["restart"] == "on-failure"
    script = spec["command"][0].replace("$$", "$")  # what compose hands the container after interpolation
    fake = tmp_path / "likeness"  # stands in for the real CLI: prints what it was asked to run
    fake.write_text('#!/bin/sh\necho "ran likeness $*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}

    off = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert off.returncode == 0 and f"{token} is not set" in off.stdout and "ran likeness" not in off.stdout

    on = subprocess.run(["/bin/sh", "-c", script], env={**env, token: "x"}, capture_output=True, text=True, timeout=10)
    assert on.returncode == 0 and on.stdout.strip() == f"ran likeness {service}"


def _compose_cli() -> list[str] | None:
    """`docker compose` (the v2 plugin), else a standalone `docker-compose` v2; v1 lacks the features used."""
    candidates = [[path, "compose"] for path in [shutil.which("docker")] if path]
    candidates += [[path] for path in [shutil.which("docker-compose")] if path]
    for cli in candidates:
        probe = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and not probe.stdout.strip().lstrip("v").startswith("1."):
            return cli
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("Docker Compose v2 (`docker compose` plugin or `docker-compose` v2) is not installed here")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--project-directory", str(tmp_path), "config", "--quiet"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scaled = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--project-directory", str(tmp_path), "config", "--services"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert set(scaled.stdout.split()) == {"redis", "worker", "telegram", "discord"}


# --- Dockerfile -----------------------------------------------------------------------------------------


def _stages() -> dict[str, list[str]]:
    """Dockerfile stage name -> its instruction lines (continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match[1], [])
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


def test_dockerfile_targets_run_as_non_root_without_secrets() -> None:
    stages = _stages()
    assert {"bot", "worker"} <= stages.keys()
    for name in ("bot", "worker"):
        users = [line.split()[1] for line in stages[name] if line.startswith("USER ")]
        assert users and users[-1] not in {"root", "0"}, f"{name} must end as a non-root user"
        assert any(line.startswith("ENTRYPOINT") and '"likeness"' in line for line in stages[name])
    for line in (line for lines in stages.values() for line in lines):
        if line.startswith(("ENV ", "ARG ")):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|REDIS_URL", line), f"secret-like value baked in: {line}"


def test_bot_image_has_no_torch_and_worker_has_cuda() -> None:
    stages = _stages()
    bot_installs = " ".join(line for line in stages["bot"] if "pip install" in line)
    assert "[discord,telegram]" in bot_installs and "worker" not in bot_installs and "torch" not in bot_installs
    worker = " ".join(stages["worker"])
    assert "[worker]" in worker and "torch.version.cuda" in worker and "HEALTHCHECK" in worker
    base = re.search(r"^ARG WORKER_BASE=(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert base is not None and "cuda" in base[1]
    assert base[1] in COMPOSE.read_text(encoding="utf-8"), "compose and Dockerfile must default to one base image"


def test_dockerignore_keeps_secrets_out_of_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".git" in ignored


def test_operations_guide_names_only_real_settings_and_commands() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    fields = {f"LIKENESS_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"LIKENESS_[A-Z0-9_]*[A-Z0-9]", guide))
    assert named and sorted(named - fields) == []
    from likeness.cli import COMMANDS

    commands = set(re.findall(r"`likeness ([a-z]+)", guide)) | set(re.findall(r"run --rm worker ([a-z]+)", guide))
    assert commands and sorted(commands - COMMANDS.keys()) == []


def test_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    """Each `COPY` source exists and survives .dockerignore (else the image build fails)."""
    import fnmatch

    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:
        verdict = False
        for pattern in ignored:  # last match wins, `!` re-includes (Docker's rule)
            negate = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!").removeprefix("**/")):
                verdict = not negate
        return verdict

    copies = [line.split()[1:-1] for lines in _stages().values() for line in lines if line.startswith("COPY ")]
    sources = [src for args in copies if not any(a.startswith("--from") for a in args) for src in args]
    assert {"pyproject.toml", "README.md", "likeness"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not excluded(source), f"COPY {source}: excluded by .dockerignore"
