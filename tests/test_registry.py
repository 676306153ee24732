"""Model registry: built-in specs, operator TOML overrides, and the weights a spec needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.generation import BUILTIN_MODELS, get_model_spec, load_model_specs, required_weights
from likeness.presets import PresetCatalog
from likeness.requests import FORMATS, size_for


def test_builtin_specs_cover_the_default_and_tiny_models() -> None:
    default = Settings(_env_file=None).model  # type: ignore[call-arg]
    assert {default, "sdxl-base", "sd15", "tiny", "tiny-sd15"} <= set(BUILTIN_MODELS)
    realvis = BUILTIN_MODELS["sdxl-realvis"]
    assert realvis.checkpoint == "SG161222/RealVisXL_V4.0"
    assert realvis.identity_adapter.model_dump() == {
        "repo": "h94/IP-Adapter",
        "subfolder": "sdxl_models",
        "weight_name": "ip-adapter-plus-face_sdxl_vit-h.safetensors",
        "kind": "plus-face",
    }
    assert (realvis.image_encoder.repo, realvis.image_encoder.subfolder) == ("h94/IP-Adapter", "models/image_encoder")
    assert BUILTIN_MODELS["sd15"].identity_adapter.weight_name == "ip-adapter-plus-face_sd15.safetensors"
    assert BUILTIN_MODELS["tiny"].family == "sdxl" and BUILTIN_MODELS["tiny-sd15"].family == "sd15"
    for spec in BUILTIN_MODELS.values():
        for fmt in FORMATS:
            width, height = size_for(fmt, spec.base, spec.multiple)
            assert width % spec.multiple == 0 and height % spec.multiple == 0
            if not spec.tiny:  # a 64 px grid in steps of 16 is too coarse to hold the pixel count too
                assert 0.75 < width * height / spec.base**2 < 1.3


def test_models_file_overrides_fields_and_adds_models(tmp_path: Path) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        """
[models.sdxl-realvis]
vae = "madebyollin/sdxl-vae-fp16-fix"

[models.my-juggernaut]
family = "sdxl"
checkpoint = "/srv/models/juggernaut"
base = 1024
identity_adapter = { repo = "/srv/models/ip-adapter", subfolder = "sdxl_models", weight_name = "face.safetensors" }
image_encoder = { repo = "/srv/models/ip-adapter", subfolder = "models/image_encoder" }
"""
    )
    specs = load_model_specs(models_file)
    realvis = specs["sdxl-realvis"]
    assert realvis.vae == "madebyollin/sdxl-vae-fp16-fix"
    assert realvis.checkpoint == BUILTIN_MODELS["sdxl-realvis"].checkpoint  # untouched fields stay
    settings = Settings(_env_file=None, model="my-juggernaut", models_file=models_file)  # type: ignore[call-arg]
    mine = get_model_spec(settings.model, settings.models_file)
    assert (mine.family, mine.checkpoint, mine.identity_adapter.weight_name) == (
        "sdxl",
        "/srv/models/juggernaut",
        "face.safetensors",
    )
    assert mine.identity_adapter.kind == "plus-face" and mine.multiple == 64


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[models.sd15]\nfamily = "sd3"\n', "field 'models.sd15.family'"),
        ('[models.new]\nfamily = "sdxl"\ncheckpoint = "x/y"\nbase = 1024\n', "field 'models.new.identity_adapter'"),
        ("[models.sd15]\nbase = 32\n", "field 'models.sd15.base'"),
        ('[models.sd15]\ncheckpoint = "a/b"\nwhatever = 1\n', "field 'models.sd15.whatever'"),
        ("[models.sd15\n", "not valid TOML"),
        ('[model.sd15]\ncheckpoint = "a/b"\n', "expected only [models.<key>] tables"),
    ],
)
def test_invalid_models_file_names_file_and_field(tmp_path: Path, body: str, expected: str) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(body)
    with pytest.raises(ConfigError) as exc_info:
        load_model_specs(models_file)
    assert str(models_file) in str(exc_info.value)
    assert expected in str(exc_info.value)


def test_unknown_model_key_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'sdxl-turbo'.*sdxl-realvis"):
        get_model_spec("sdxl-turbo")
    with pytest.raises(ConfigError, match="cannot read"):
        get_model_spec("tiny", tmp_path / "missing.toml")


def test_required_weights_lists_checkpoint_adapter_encoder_and_preset_loras() -> None:
    catalog = PresetCatalog.load(None)
    refs = required_weights(BUILTIN_MODELS["sdxl-realvis"], catalog)
    by_repo = {(ref.repo_or_path, ref.subfolder): ref for ref in refs}
    checkpoint = by_repo[("SG161222/RealVisXL_V4.0", None)]
    assert "model_index.json" in checkpoint.filenames and "*/*.safetensors" in checkpoint.filenames
    assert by_repo[("h94/IP-Adapter", "sdxl_models")].filenames == ("ip-adapter-plus-face_sdxl_vit-h.safetensors",)
    assert "model.safetensors" in by_repo[("h94/IP-Adapter", "models/image_encoder")].filenames
    lora_sources = {lora.source for preset in catalog for lora in preset.loras}
    assert lora_sources and lora_sources <= {ref.repo_or_path for ref in refs}
    assert len(refs) == len(by_repo)  # each LoRA once, even when several presets share it
    base = required_weights(BUILTIN_MODELS["sdxl-base"], [])
    assert "*/*.fp16.safetensors" in base[0].filenames
    assert required_weights(BUILTIN_MODELS["tiny"], catalog) == []
