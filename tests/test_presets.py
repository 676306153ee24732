"""Built-in presets, the operator folder and the `likeness presets` command."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from likeness.errors import ConfigError
from likeness.presets import PresetCatalog, load_preset_file, render_prompt
from likeness.requests import FORMATS

REPO = Path(__file__).parents[1]
REQUIRED = [
    "ghibli", "viking", "graduation", "action-figure", "headshot", "anime", "pixar-3d", "comic",
    "oil-painting", "watercolor", "cyberpunk", "renaissance", "fantasy-elf", "astronaut", "vintage-film", "superhero",
]  # fmt: skip
PHOTOREAL = {"photo"}
STYLISED = {"illustration", "painting", "3d"}
CATALOG = PresetCatalog.load()
BUILTIN_NAMES = CATALOG.names()

VALID = """\
title = "Test Style"
emoji = "🧪"
description = "A preset written by an operator."
category = "photo"
prompt = "{subject} in a lab coat, {prompt}, studio light"
"""


def builtin_files() -> list[Path]:
    with resources.as_file(resources.files("likeness.presets") / "data") as folder:
        return sorted(folder.glob("*.toml"))


def test_the_required_presets_exist() -> None:
    assert len(CATALOG) >= 16
    assert [name for name in REQUIRED if name not in CATALOG] == []


def test_every_builtin_file_is_a_preset_named_after_it() -> None:
    files = builtin_files()
    assert sorted(f.stem for f in files) == BUILTIN_NAMES
    for path in files:
        assert load_preset_file(path).name == path.stem


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.parametrize("user_prompt", ["", "wearing a red scarf", "  red scarf, , golden earrings,\n "])
def test_builtin_prompts_render_cleanly(name: str, user_prompt: str) -> None:
    effective = CATALOG.resolve(name)
    [(weight, prompt, negative)] = effective.render("a young woman", user_prompt, FORMATS["instagram"].framing)
    assert weight == 1.0
    assert "a young woman" in prompt
    assert "{" not in prompt and "}" not in prompt
    assert not re.search(r",\s*,|^\s*,|,\s*$|\s{2,}", prompt), prompt
    for fragment in ("red scarf", "golden earrings") if user_prompt.strip() else ():
        if fragment in user_prompt:
            assert prompt.count(fragment) == 1
    assert prompt.endswith(FORMATS["instagram"].framing)
    for word in (w for lora in effective.loras for w in lora.trigger_words):
        assert prompt.startswith(word) or f", {word}," in prompt  # triggers lead, before CLIP's 77-token cut
    assert negative and "{" not in negative


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_presets_are_tuned_for_sdxl(name: str) -> None:
    preset = CATALOG.get(name)
    d = preset.defaults
    assert 25 <= d.steps <= 35
    assert 4.0 <= d.guidance <= 7.0
    if preset.category in PHOTOREAL:
        assert 0.75 <= d.identity_strength <= 0.9
    if preset.category in STYLISED:
        assert 0.5 <= d.identity_strength <= 0.65
    assert d.format in FORMATS
    assert len(preset.description) <= 140
    negatives = {w.strip() for w in preset.negative_prompt.split(",")}
    assert {"watermark", "text", "extra limbs"} <= negatives
    assert any("deformed" in w for w in negatives)
    if preset.category in {"illustration", "painting"}:
        assert "photo" in negatives or "photorealistic" in negatives  # a painting must not drift into a photo


def test_headshot_defaults_to_the_linkedin_format() -> None:
    assert CATALOG.get("headshot").defaults.format == "linkedin"


def test_hub_loras_name_their_weight_file() -> None:
    loras = [lora for preset in CATALOG for lora in preset.loras]
    assert CATALOG.get("ghibli").loras, "ghibli keeps its style LoRA"
    for lora in loras:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", lora.source), lora.source
        assert lora.weight_name and lora.weight_name.endswith(".safetensors")


@pytest.mark.parametrize(
    ("template", "user", "expected"),
    [
        ("{subject}, {prompt}, soft light", "", "a man, soft light"),
        ("{subject}, {prompt}, soft light", "blue hair", "a man, blue hair, soft light"),
        ("{subject}, wearing {prompt}, soft light", "", "a man, soft light"),  # the whole fragment goes
        ("portrait of {subject} {prompt}, soft light", "", "portrait of a man, soft light"),
        ("{subject}, soft light", "blue hair", "a man, soft light, blue hair"),  # no slot: appended
        ("{subject}, {prompt}", " ,blue hair,,\n red eyes, ", "a man, blue hair, red eyes"),
        ("{subject}, {prompt}", "say {subject} and {prompt}", "a man, say {subject} and {prompt}"),
    ],
)
def test_render_prompt(template: str, user: str, expected: str) -> None:
    assert render_prompt(template, "a man", user) == expected


# ---- operator folder ----


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_operator_folder_adds_a_preset(tmp_path: Path) -> None:
    write(tmp_path, "lab", VALID)
    catalog = PresetCatalog.load(tmp_path)
    assert len(catalog) == len(CATALOG) + 1
    assert catalog.get("lab").title == "Test Style"
    assert catalog.resolve("lab+headshot").parts == (("lab", 0.5), ("headshot", 0.5))


def test_operator_folder_skips_editor_files(tmp_path: Path) -> None:
    write(tmp_path, ".#lab", "half-written = [")
    write(tmp_path, "lab", VALID)
    assert "lab" in PresetCatalog.load(tmp_path)


def test_operator_folder_overrides_a_builtin(tmp_path: Path) -> None:
    write(tmp_path, "ghibli", VALID.replace("Test Style", "House Ghibli"))
    catalog = PresetCatalog.load(tmp_path)
    assert len(catalog) == len(CATALOG)
    assert catalog.get("ghibli").title == "House Ghibli"
    assert catalog.get("ghibli").loras == ()


def test_a_missing_operator_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        PresetCatalog.load(tmp_path / "nope")


def test_style_image_paths_are_relative_to_the_preset_file(tmp_path: Path) -> None:
    (tmp_path / "ref.png").write_bytes(b"png")
    write(tmp_path, "lab", VALID + 'style_image = "ref.png"\n')
    assert PresetCatalog.load(tmp_path).get("lab").style_image == str((tmp_path / "ref.png").resolve())
    write(tmp_path, "lab", VALID + 'style_image = "missing.png"\n')
    with pytest.raises(ConfigError, match=r"lab\.toml.*style_image.*no file"):
        PresetCatalog.load(tmp_path)


LORA = '\n[[loras]]\nsource = "org/style"\nweight = {weight}\n'

BROKEN = {
    "bad-toml": (VALID + "steps = = 3\n", ["not valid TOML", "line"]),
    "missing-title": (VALID.replace('title = "Test Style"\n', ""), ["'title'", "required"]),
    "unknown-format": (VALID + '[defaults]\nformat = "poster"\n', ["'defaults.format'", "unknown format 'poster'"]),
    "no-subject": (VALID.replace("{subject} in", "someone in"), ["'prompt'", "{subject}"]),
    "unknown-slot": (VALID.replace("studio light", "{style} light"), ["'prompt'", "unknown slot", "style"]),
    "zero-lora-weight": (VALID + LORA.format(weight=0), ["'loras.0.weight'", "greater than 0"]),
    "negative-lora-weight": (VALID + LORA.format(weight=-0.5), ["'loras.0.weight'", "greater than 0"]),
    "name-mismatch": ('name = "other"\n' + VALID, ["'name'", "'other'", "named 'name-mismatch'"]),
    "unknown-key": (VALID + 'colour = "red"\n', ["'colour'", "unknown key"]),
    "unknown-default": (VALID + "[defaults]\nsteps = 30\ncfg = 5\n", ["'defaults.cfg'", "unknown key"]),
    "bad-scheduler": (VALID + '[defaults]\nscheduler = "magic"\n', ["'defaults.scheduler'", "unknown scheduler"]),
    "bad-layers": (VALID + "[defaults]\nidentity_layers = { top = 0.5 }\n", ["identity_layers", "top"]),
    "slot-in-negative": (VALID + 'negative_prompt = "ugly {subject}"\n', ["'negative_prompt'", "slots"]),
    "long-description": (VALID.replace("A preset written by an operator.", "x" * 141), ["'description'", "140"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_invalid_operator_files_stop_loading_with_a_precise_error(tmp_path: Path, name: str) -> None:
    text, words = BROKEN[name]
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        PresetCatalog.load(tmp_path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_the_valid_template_itself_loads(tmp_path: Path) -> None:
    # Guards the table above: each broken file differs from a valid one only by its defect.
    assert load_preset_file(write(tmp_path, "lab", VALID)).name == "lab"


# ---- CLI ----


def test_presets_command_lists_every_preset() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "likeness", "presets"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for preset in CATALOG:
        assert any(line.startswith(preset.name + " ") and preset.description in line for line in lines), preset.name


def test_presets_command_reports_a_broken_operator_file(tmp_path: Path) -> None:
    write(tmp_path, "lab", VALID.replace('title = "Test Style"\n', ""))
    env = {"PATH": "/usr/bin:/bin", "LIKENESS_PRESETS_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "likeness", "presets"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 1
    assert "lab.toml" in result.stderr and "'title'" in result.stderr
    assert "Traceback" not in result.stderr
