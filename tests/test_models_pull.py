"""`likeness models pull`: tiny builds locally, local paths are checked, hub weights land in the HF cache.

Nothing here reaches the network: the HF cache is a temp folder with `HF_HUB_OFFLINE`, and the one test
of real downloads replaces `snapshot_download` (the network edge) with a fake that records what it asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from likeness.cli import main
from likeness.config import Settings
from likeness.presets import PresetCatalog

pytest.importorskip("torch")  # the model registry lives in likeness.generation (worker extra)

from likeness.commands.models import CLIPSEG_REPO, Weight, find_weight, planned_weights
from likeness.generation import get_model_spec
from tests.helpers.models import local_model_toml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache, offline: any attempt to reach the Hub fails instead of downloading."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _touch_pattern_files(folder: Path, patterns: list[str] | None) -> None:
    """Create one file per pattern (`*` → `x`), as a download with those `allow_patterns` would."""
    for pattern in patterns or ["model.safetensors"]:
        path = folder / pattern.replace("*", "x")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def _cache_snapshot(cache: Path, weight: Weight) -> None:
    """Lay out `weight` in the HF cache exactly where huggingface_hub looks for it offline."""
    repo = cache / ("models--" + weight.ref.repo_or_path.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    _touch_pattern_files(repo / "snapshots" / commit, weight.patterns)


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Configure the process like an operator would (env, no .env file) for model `mine`."""
    monkeypatch.chdir(tmp_path)
    toml = local_model_toml(tmp_path)

    def configure(**extra: str) -> Settings:
        values = {
            "LIKENESS_MODELS_FILE": str(toml),
            "LIKENESS_MODEL": "mine",
            "LIKENESS_DATA_DIR": str(tmp_path / "data"),
            "LIKENESS_NSFW_MODEL": "acme/nsfw-check",
            **extra,
        }
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        return Settings()

    return configure


def _hub_weights(settings: Settings) -> list[Weight]:
    spec = get_model_spec(settings.model, settings.models_file)
    return [w for w in planned_weights(settings, spec) if not w.ref.is_local]


def test_local_model_is_checked_and_hub_weights_come_from_the_cache(hub_cache, local_env, capsys) -> None:
    settings = local_env()
    hub = _hub_weights(settings)
    assert {w.ref.repo_or_path for w in hub} >= {CLIPSEG_REPO, "acme/nsfw-check"}  # extras, with the setting's model
    for weight in hub:
        _cache_snapshot(hub_cache, weight)

    assert main(["models", "pull"]) == 0
    out = capsys.readouterr().out
    for label in ("checkpoint", "identity adapter", "image encoder", "region masks (CLIPSeg)", "NSFW classifier"):
        assert any(line.startswith(f"✓ {label}") for line in out.splitlines()), f"{label} missing from:\n{out}"
    assert "✗" not in out and "HF_HUB_OFFLINE=1" in out


def test_missing_local_weights_fail_and_name_the_path(hub_cache, local_env, tmp_path: Path, capsys) -> None:
    settings = local_env()
    for weight in _hub_weights(settings):
        _cache_snapshot(hub_cache, weight)
    (tmp_path / "weights" / "adapter" / "models" / "ip.safetensors").unlink()

    assert main(["models", "pull", "mine"]) == 1
    out = capsys.readouterr().out
    (bad,) = [line for line in out.splitlines() if line.startswith("✗")]
    assert "identity adapter" in bad and str(tmp_path / "weights" / "adapter") in bad and "does not exist" in bad
    assert any(line.startswith("✓ checkpoint") for line in out.splitlines())


def test_offline_without_the_cache_says_what_is_missing(hub_cache, local_env, capsys) -> None:
    local_env()
    assert main(["models", "pull", "--no-extras"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("✗")]
    assert failed and all("HF_HUB_OFFLINE=1" in line for line in failed)
    assert "CLIPSeg" not in out  # --no-extras


def test_dry_run_lists_without_fetching(hub_cache, local_env, capsys) -> None:
    local_env()
    assert main(["models", "pull", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "to download" in out and "Dry run" in out
    assert not hub_cache.exists()


def test_hub_model_downloads_every_weight(local_env, tmp_path: Path, monkeypatch, capsys) -> None:
    """A hub model: each weight is requested once with its allow_patterns; a gated repo is explained."""
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    settings = local_env(LIKENESS_MODEL="sdxl-realvis")
    spec = get_model_spec("sdxl-realvis")
    calls: list[tuple[str, list[str] | None]] = []

    def fake_snapshot_download(repo_id: str, *, allow_patterns=None, local_files_only=False, **kw) -> str:
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        calls.append((repo_id, allow_patterns))
        if repo_id == "acme/nsfw-check":
            response = httpx2.Response(403, request=httpx2.Request("GET", "https://hub.invalid/acme/nsfw-check"))
            raise GatedRepoError("gated", response=response)
        folder = tmp_path / "downloads" / repo_id.replace("/", "--") / str(len(calls))
        _touch_pattern_files(folder, allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert main(["models", "pull"]) == 1
    out = capsys.readouterr().out

    assert len(calls) == len({(repo, tuple(p or ())) for repo, p in calls}) == len(planned_weights(settings, spec))
    requested = {repo: patterns or [] for repo, patterns in calls if repo != spec.identity_adapter.repo}
    assert "model_index.json" in requested[spec.checkpoint]
    adapter, encoder = spec.identity_adapter, spec.image_encoder
    h94 = [patterns or [] for repo, patterns in calls if repo == adapter.repo]
    assert [f"{adapter.subfolder}/{adapter.weight_name}"] in h94
    assert any(all(p.startswith(encoder.subfolder + "/") for p in patterns) for patterns in h94)
    assert CLIPSEG_REPO in requested and "acme/nsfw-check" in requested
    assert {lora.source for preset in PresetCatalog.load() for lora in preset.loras} <= requested.keys()
    (gated,) = [line for line in out.splitlines() if line.startswith("✗")]
    assert "NSFW classifier" in gated and "HF_TOKEN" in gated


def test_tiny_is_built_locally_without_download(tmp_path: Path) -> None:
    """The real CLI in a fresh process: tiny weights appear in the data dir, the HF cache stays empty."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "LIKENESS_MODEL": "tiny",
        "LIKENESS_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "likeness", "models", "pull"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no download needed" in done.stdout
    (index,) = (tmp_path / "data").glob("models/tiny-*/checkpoint/model_index.json")
    assert index.is_file()
    hub = tmp_path / "hf" / "hub"
    assert not hub.exists() or not any(hub.glob("models--*"))


def test_find_weight_accepts_single_file_loras_and_rejects_configs_without_weights(tmp_path: Path) -> None:
    from likeness.generation import WeightRef

    lora = tmp_path / "style.safetensors"
    lora.write_text("{}")
    assert find_weight(Weight("LoRA", WeightRef(repo_or_path=str(lora)))) == lora
    folder = tmp_path / "encoder"
    _touch_pattern_files(folder, ["config.json"])
    encoder = Weight("image encoder", WeightRef(repo_or_path=str(folder), filenames=("config.json", "*.safetensors")))
    assert find_weight(encoder) is None
    _touch_pattern_files(folder, ["model.safetensors"])
    assert find_weight(encoder) == folder


def test_unknown_model_is_a_clear_error(local_env, capsys) -> None:
    local_env()
    assert main(["models", "pull", "sdxl-realviz"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'sdxl-realviz'" in err and "sdxl-realvis" in err and "mine" in err


def test_list_marks_the_configured_model(local_env, hub_cache, capsys) -> None:
    local_env()
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (mine,) = [line for line in lines if line.split()[:2] == ["*", "mine"]]
    assert "weights missing" in mine  # the local files are there, the hub LoRA and extras are not
    assert any(line.split()[:1] == ["tiny"] and "built locally" in line for line in lines)
