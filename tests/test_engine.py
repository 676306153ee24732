"""The generation engine on the built-in tiny models (CPU, real diffusers code paths)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.config import Settings
from likeness.errors import GenerationFailed, ModelUnavailable, OutOfMemory
from likeness.generation import PortraitRequest, StableDiffusionEngine, _tiny
from likeness.generation._prompts import encode_parts, render_parts
from likeness.presets import PresetCatalog
from likeness.requests import FORMATS, size_for
from tests.helpers.faces import astronaut, grace_hopper

PRESET_BODY = """
title = "{title}"
emoji = "🧪"
description = "Test preset."
category = "test"
prompt = "{prompt}"
negative_prompt = "blurry"

[defaults]
steps = 4
guidance = 5.0
identity_strength = 0.8
scheduler = "euler"
"""


def _write_preset(folder: Path, name: str, prompt: str, loras: str = "") -> None:
    (folder / f"{name}.toml").write_text(PRESET_BODY.format(title=name.title(), prompt=prompt) + loras)


@pytest.fixture(scope="module")
def presets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Presets of this test file: two without LoRAs, and `plain-lora` = `plain` plus a style LoRA."""
    folder = tmp_path_factory.mktemp("presets")
    _write_preset(folder, "plain", "{subject}, {prompt}, oil painting, warm colors")
    _write_preset(folder, "sketch", "pencil sketch of {subject}, {prompt}, cross hatching")
    lora = '\n[[loras]]\nsource = "someone/oil-style-lora"\nweight = 1.0\n'
    _write_preset(folder, "plain-lora", "{subject}, {prompt}, oil painting, warm colors", lora)
    return folder


def _settings(data_dir: Path, presets_dir: Path, model: str = "tiny") -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        model=model,
        device="cpu",
        dtype="float32",
        data_dir=data_dir,
        presets_dir=presets_dir,
    )


@pytest.fixture(scope="module")
def engine(shared_data_dir: Path, presets_dir: Path) -> Iterator[StableDiffusionEngine]:
    built = StableDiffusionEngine.load(_settings(shared_data_dir, presets_dir))
    yield built
    built.close()


@pytest.fixture(scope="module")
def selfie() -> Image.Image:
    return astronaut()


@pytest.fixture(scope="module")
def other_selfie() -> Image.Image:
    return grace_hopper()


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _request(
    engine: StableDiffusionEngine, selfie: Image.Image, spec: str = "plain", **kwargs: object
) -> PortraitRequest:
    return PortraitRequest(selfie=selfie, preset=engine.presets.resolve(spec), **kwargs)  # type: ignore[arg-type]


def test_output_size_follows_format(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    for name in FORMATS:
        result = engine.portrait(_request(engine, selfie, format=name))
        expected = size_for(name, engine.spec.base, engine.spec.multiple)
        assert result.images[0].size == expected, name
        assert (result.metadata["width"], result.metadata["height"]) == expected
    # Without a format, the preset's default (square) applies.
    assert engine.portrait(_request(engine, selfie)).images[0].size == (64, 64)


def test_sd15_family_sizes(shared_data_dir: Path, presets_dir: Path, selfie: Image.Image) -> None:
    sd15 = StableDiffusionEngine.load(_settings(shared_data_dir, presets_dir, model="tiny-sd15"))
    try:
        assert sd15.spec.family == "sd15"
        story = sd15.portrait(_request(sd15, selfie, format="story"), None)
        assert story.images[0].size == size_for("story", 64, 16) == (48, 80)
        # SD1.5 pipelines have no pooled embeddings; a LoRA preset still works there.
        assert sd15.portrait(_request(sd15, selfie, spec="plain-lora")).images[0].size == (64, 64)
    finally:
        sd15.close()


def test_same_seed_same_bytes_other_seed_other_image(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    first = engine.portrait(_request(engine, selfie, seeds=(7,))).images[0]
    again = engine.portrait(_request(engine, selfie, seeds=(7,))).images[0]
    other = engine.portrait(_request(engine, selfie, seeds=(8,))).images[0]
    assert first.tobytes() == again.tobytes()
    assert np.abs(_px(first) - _px(other)).max() > 10


def test_several_seeds_give_one_image_each(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    result = engine.portrait(_request(engine, selfie, seeds=(3, 4, 5)))
    assert result.seeds == [3, 4, 5]
    assert len(result.images) == 3
    alone = engine.portrait(_request(engine, selfie, seeds=(4,))).images[0]
    assert np.abs(_px(result.images[1]) - _px(alone)).max() <= 1


def test_identity_scale_controls_the_selfie_influence(
    engine: StableDiffusionEngine, selfie: Image.Image, other_selfie: Image.Image
) -> None:
    def image(face: Image.Image, scale: float) -> np.ndarray:
        return _px(engine.portrait(_request(engine, face, seeds=(1,), identity_scale=scale)).images[0])

    assert np.abs(image(selfie, 0.0) - image(selfie, 1.0)).max() > 10
    # Scale 0 ignores the face; at scale 1 another face gives another picture.
    assert np.array_equal(image(selfie, 0.0), image(other_selfie, 0.0))
    assert np.abs(image(selfie, 1.0) - image(other_selfie, 1.0)).max() > 10


def test_preset_identity_layers_are_used_and_scaled(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    ghibli = _request(engine, selfie, spec="ghibli")
    layers = ghibli.preset.defaults.identity_layers
    assert layers
    default = engine.portrait(ghibli).metadata
    assert default["identity_layers"] == {name: pytest.approx(layers[name]) for name in ("down", "mid", "up")}
    doubled = engine.portrait(_request(engine, selfie, spec="ghibli", identity_scale=2 * default["identity_scale"]))
    assert doubled.metadata["identity_layers"]["up"] == pytest.approx(2 * layers["up"])


def test_lora_changes_the_output_and_switching_back_restores_it(
    engine: StableDiffusionEngine, selfie: Image.Image
) -> None:
    plain = engine.portrait(_request(engine, selfie, seeds=(2,))).images[0]
    styled = engine.portrait(_request(engine, selfie, spec="plain-lora", seeds=(2,)))
    assert styled.metadata["loras"] == [{"source": "someone/oil-style-lora", "weight_name": None, "weight": 1.0}]
    assert np.abs(_px(plain) - _px(styled.images[0])).max() > 10
    # The built-in ghibli LoRA is another style; then back to no LoRA and to the first LoRA, unchanged.
    engine.portrait(_request(engine, selfie, spec="ghibli", seeds=(2,)))
    assert engine.portrait(_request(engine, selfie, seeds=(2,))).images[0].tobytes() == plain.tobytes()
    again = engine.portrait(_request(engine, selfie, spec="plain-lora", seeds=(2,))).images[0]
    assert np.abs(_px(again) - _px(styled.images[0])).max() <= 1


def test_lora_slots_are_reused_without_reloading_the_base_model(
    engine: StableDiffusionEngine, selfie: Image.Image, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="likeness.generation")
    unet = engine.model.pipe.unet
    bank = engine.model.loras
    for i in range(bank.capacity + 2):
        lora = f'\n[[loras]]\nsource = "someone/style-{i}"\nweight = 0.9\n'
        _write_preset(tmp_path, f"extra-{i}", "{subject}, {prompt}, gouache", lora)
    catalog = PresetCatalog.load(tmp_path)
    for i in range(bank.capacity + 2):
        engine.portrait(PortraitRequest(selfie=selfie, preset=catalog.resolve(f"extra-{i}")))
    assert len(bank.slots) == bank.capacity
    assert engine.model.pipe.unet is unet
    # Same-rank UNet LoRAs swap into the least recently used slot in place.
    assert bank.hotswap and "instead of hot-swapping" not in caplog.text


def test_missing_lora_weights_raise_model_unavailable(
    engine: StableDiffusionEngine, selfie: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = engine.model.loras
    monkeypatch.setattr(bank, "locate", lambda lora: (str(tmp_path / "absent"), "style.safetensors"))
    _write_preset(tmp_path, "missing-lora", "{subject}, {prompt}, ink", '\n[[loras]]\nsource = "gone/lora"\n')
    preset = PresetCatalog.load(tmp_path).resolve("missing-lora")
    with pytest.raises(ModelUnavailable, match="gone/lora"):
        engine.portrait(PortraitRequest(selfie=selfie, preset=preset))
    assert "gone/lora::" not in bank.slots
    monkeypatch.undo()
    assert engine.portrait(_request(engine, selfie, spec="plain-lora")).images[0].size == (64, 64)


def test_every_preset_scheduler_runs(engine: StableDiffusionEngine, selfie: Image.Image, tmp_path: Path) -> None:
    from likeness.presets._schema import SCHEDULERS

    pictures = {}
    for name in SCHEDULERS:
        body = PRESET_BODY.format(title="S", prompt="{subject}, {prompt}, pastel").replace('"euler"', f'"{name}"')
        (tmp_path / f"s-{name.replace('_', '-')}.toml").write_text(body)
    catalog = PresetCatalog.load(tmp_path)
    for name in SCHEDULERS:
        result = engine.portrait(PortraitRequest(selfie=selfie, preset=catalog.resolve(f"s-{name.replace('_', '-')}")))
        assert result.metadata["scheduler"] == (name if name != "default" else engine.spec.scheduler)
        pictures[name] = _px(result.images[0])
        assert pictures[name].std() > 5, name  # a picture, not a flat or NaN-black frame
    assert np.abs(pictures["euler"] - pictures["dpmpp_2m_karras"]).max() > 5


def test_img2img_and_inpaint_share_the_loaded_model(engine: StableDiffusionEngine) -> None:
    base = engine.model.pipe
    for derived in (engine.img2img, engine.inpaint):
        assert derived.unet is base.unet and derived.vae is base.vae
        assert derived.image_encoder is base.image_encoder is not None
    assert "Img2Img" in type(engine.img2img).__name__ and "Inpaint" in type(engine.inpaint).__name__


def test_fusion_blends_prompt_embeddings(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    def image(spec: str) -> np.ndarray:
        return _px(engine.portrait(_request(engine, selfie, spec=spec, seeds=(4,))).images[0])

    fused, plain, sketch = image("plain:0.5+sketch:0.5"), image("plain"), image("sketch")
    assert np.abs(fused - plain).max() > 5
    assert np.abs(fused - sketch).max() > 5

    # The documented rule: every embedding is the weighted sum of the parts' own encodings.
    pipe, device = engine.model.pipe, engine.model.device
    preset = engine.presets.resolve("plain:0.25+sketch:0.75")
    parts = render_parts(preset, "", "centered portrait")
    blended = encode_parts(pipe, "sdxl", parts, device, guidance=True)
    each = [encode_parts(pipe, "sdxl", [(1.0, p, n)], device, guidance=True) for _, p, n in parts]
    for name in ("prompt", "negative", "pooled", "negative_pooled"):
        expected = 0.25 * getattr(each[0], name) + 0.75 * getattr(each[1], name)
        torch.testing.assert_close(getattr(blended, name), expected)


def test_batch_equals_separate_calls_with_different_selfies(
    engine: StableDiffusionEngine, selfie: Image.Image, other_selfie: Image.Image
) -> None:
    requests = [
        _request(engine, selfie, spec="ghibli", seeds=(11, 12), prompt="on a hill"),
        _request(engine, other_selfie, spec="ghibli", seeds=(13,)),
        _request(engine, selfie, spec="ghibli", seeds=(14,), prompt="in the rain"),
    ]
    assert len({engine.batch_key(r) for r in requests}) == 1
    batched = engine.portrait_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = engine.portrait(request)
        assert result.seeds == list(request.seeds)
        for got, want in zip(result.images, alone.images, strict=True):
            assert np.abs(_px(got) - _px(want)).max() <= 1
    # Each request kept its own face: the same seed with the other selfie differs.
    swapped = engine.portrait(_request(engine, other_selfie, spec="ghibli", seeds=(11,), prompt="on a hill"))
    assert np.abs(_px(swapped.images[0]) - _px(batched[0].images[0])).max() > 10


def test_batch_rejects_different_keys(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    square, story = _request(engine, selfie), _request(engine, selfie, format="story")
    assert engine.batch_key(square) != engine.batch_key(story)
    assert engine.batch_key(square) != engine.batch_key(_request(engine, selfie, spec="plain-lora"))
    with pytest.raises(ValueError, match="batch keys"):
        engine.portrait_batch([square, story])


def test_progress_reports_increasing_steps(
    engine: StableDiffusionEngine, selfie: Image.Image, other_selfie: Image.Image
) -> None:
    calls: list[list[tuple[int, int]]] = [[], []]
    requests = [_request(engine, selfie), _request(engine, other_selfie)]
    engine.portrait_batch(requests, [lambda s, n: calls[0].append((s, n)), lambda s, n: calls[1].append((s, n))])
    steps = engine.spec.max_steps
    assert calls[0] == calls[1] == [(i, steps) for i in range(1, steps + 1)]


def test_out_of_memory_and_failures_are_translated(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    def oom(step: int, total: int) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken(step: int, total: int) -> None:
        raise KeyError("boom")

    with pytest.raises(OutOfMemory) as exc_info:
        engine.portrait(_request(engine, selfie, seeds=(1, 2)), oom)
    assert exc_info.value.batch == 2
    with pytest.raises(GenerationFailed) as failed:
        engine.portrait(_request(engine, selfie), broken)
    assert isinstance(failed.value.__cause__, KeyError)
    # The engine still works afterwards.
    assert engine.portrait(_request(engine, selfie)).images[0].size == (64, 64)


def test_metadata_is_json_and_describes_the_image(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    result = engine.portrait(_request(engine, selfie, spec="ghibli", prompt="wearing a red scarf", seeds=(5,)))
    meta = json.loads(json.dumps(result.metadata))
    assert meta["model"] == "tiny"
    assert meta["preset"] == "ghibli"
    trigger = engine.presets.resolve("ghibli").loras[0].trigger_words[0]
    assert meta["prompt"].startswith(trigger) and "wearing a red scarf" in meta["prompt"]
    assert meta["negative_prompt"].startswith("photo")
    assert (meta["width"], meta["height"], meta["steps"]) == (64, 64, 4)
    assert meta["scheduler"] == "dpmpp_2m_karras"
    assert meta["loras"][0]["source"] == engine.presets.resolve("ghibli").loras[0].source
    assert result.seeds == [5] and "seeds" not in meta  # once, on the result


def test_bad_requests_are_rejected_before_generation(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    from likeness.errors import UnknownFormat

    with pytest.raises(UnknownFormat):
        engine.portrait(_request(engine, selfie, format="poster"))
    with pytest.raises(ValueError, match="seed"):
        engine.portrait(_request(engine, selfie, seeds=()))
    with pytest.raises(ValueError, match="identity_scale"):
        engine.portrait(_request(engine, selfie, identity_scale=3.0))


def test_tiny_weights_are_cached_on_disk_and_reloaded(
    engine: StableDiffusionEngine,
    shared_data_dir: Path,
    presets_dir: Path,
    selfie: Image.Image,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = _tiny.tiny_root(shared_data_dir, "sdxl")
    assert (root / "checkpoint" / "model_index.json").is_file()
    assert (root / "ip-adapter" / "models" / _tiny.ADAPTER_FILE).is_file()
    assert (root / "ip-adapter" / "models" / _tiny.FACEID_ADAPTER_FILE).is_file()
    ghibli_lora = engine.presets.resolve("ghibli").loras[0].source
    assert (_tiny.tiny_lora_dir(root, ghibli_lora) / _tiny.LORA_FILE).is_file()

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the tiny model was rebuilt instead of loaded from disk")

    monkeypatch.setattr(_tiny, "_build", no_rebuild)
    second = StableDiffusionEngine.load(_settings(shared_data_dir, presets_dir))
    try:
        request = _request(engine, selfie, spec="ghibli", seeds=(9,))
        assert second.portrait(request).images[0].tobytes() == engine.portrait(request).images[0].tobytes()
    finally:
        second.close()


def test_real_model_offline_raises_model_unavailable_quickly(shared_data_dir: Path, presets_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as exc_info:
        StableDiffusionEngine.load(_settings(shared_data_dir, presets_dir, model="sdxl-base"))
    assert time.monotonic() - started < 30
    assert exc_info.value.model == "sdxl-base"
    assert "likeness models pull" in str(exc_info.value) and "LIKENESS_MODEL=tiny" in str(exc_info.value)
