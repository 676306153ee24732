"""Swapping LoRAs into a reused slot in place: same pictures as a fresh load, and reloads when it can't; `LoraBank`
activating adapters like `pipe.set_adapters`; and a canary for the peft hot-swap bug the swap works around."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from likeness.config import Settings
from likeness.generation import _tiny, get_model_spec
from likeness.generation._loading import LoadedModel, LoraBank, load_model
from likeness.generation._lora_swap import SwapRefused
from likeness.presets import LoraRef

WEIGHTS = "style.safetensors"
SLOT = "style0"


@pytest.fixture(scope="module")
def root(shared_data_dir: Path) -> Path:
    """The tiny SDXL model's folder, where its deterministic tiny LoRAs are written."""
    return _tiny.tiny_root(shared_data_dir, "sdxl")


@pytest.fixture(scope="module")
def model(shared_data_dir: Path) -> Iterator[LoadedModel]:
    settings = Settings(_env_file=None, model="tiny", device="cpu", dtype="float32", data_dir=shared_data_dir)  # type: ignore[call-arg]
    loaded = load_model(settings, get_model_spec("tiny"), [])
    yield loaded
    loaded.loras.close()


@pytest.fixture
def new_bank(model: LoadedModel) -> Iterator[Callable[[], LoraBank]]:
    """Factory: a one-slot LoraBank on the shared pipeline, with every style adapter removed first."""
    banks: list[LoraBank] = []

    def clear() -> None:
        for bank in banks:
            bank.close()
        adapters = [name for name in getattr(model.pipe.unet, "peft_config", {}) if name.startswith("style")]
        if adapters:
            model.pipe.delete_adapters(adapters)

    def make() -> LoraBank:
        clear()
        banks.append(LoraBank(model.pipe, lambda lora: (lora.source, lora.weight_name), hotswap=True, capacity=1))
        return banks[-1]

    yield make
    clear()


@pytest.fixture
def loads(model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Adapter names that `load_lora_weights` loaded during the test."""
    calls: list[str] = []
    original = model.pipe.load_lora_weights

    def recording(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs["adapter_name"])
        original(*args, **kwargs)

    monkeypatch.setattr(model.pipe, "load_lora_weights", recording)
    return calls


def _render(model: LoadedModel) -> np.ndarray:
    result = model.pipe(
        "a portrait, gouache",
        ip_adapter_image=Image.new("RGB", (64, 64), (150, 110, 90)),
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    )
    return np.asarray(result.images[0])


def _fresh(model: LoadedModel, new_bank: Callable[[], LoraBank], lora: LoraRef) -> np.ndarray:
    """The picture with `lora` loaded into an empty bank (`load_lora_weights` into a new adapter)."""
    new_bank().activate((lora,))
    return _render(model)


# LoRA files for the tests, derived from the deterministic tiny LoRAs (rank 4, diffusers/peft keys).


def _tiny_state(root: Path, source: str) -> dict[str, torch.Tensor]:
    return load_file(str(_tiny.ensure_tiny_lora(root, source) / _tiny.LORA_FILE))


def _write(
    folder: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None, weight: float = 0.7
) -> LoraRef:
    folder.mkdir(parents=True, exist_ok=True)
    header = {"format": "pt"}
    if metadata is not None:
        header["lora_adapter_metadata"] = json.dumps({f"unet.{k}": v for k, v in metadata.items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS), metadata=header)
    return LoraRef(source=str(folder), weight_name=WEIGHTS, weight=weight)


def _module(key: str) -> str:
    return key.removeprefix("unet.").rsplit(".lora_", 1)[0]


def _kohya(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """kohya-ss layout (`lora_unet_..._to_q.lora_down.weight` + `.alpha`), cut or tiled to `rank`."""
    out = {}
    for key, value in state.items():
        name = "lora_unet_" + _module(key).replace(".", "_")
        if ".lora_A." in key:
            out[f"{name}.lora_down.weight"] = value.repeat(2, 1)[:rank]
            out[f"{name}.alpha"] = torch.tensor(alpha)
        else:
            out[f"{name}.lora_up.weight"] = value.repeat(1, 2)[:, :rank]
    return out


def _swappable(kind: str, root: Path, folder: Path) -> LoraRef:
    state = _tiny_state(root, "swap/second")
    if kind == "same-rank":
        return _write(folder, state)
    if kind == "kohya-rank2-alpha1":  # smaller rank (zero-padded in the slot), scale 1/2 instead of 1
        return _write(folder, _kohya(state, rank=2, alpha=1.0))
    if kind == "rank-and-alpha-patterns":  # per-layer ranks and alphas from the file's adapter metadata
        halved = {k: (v[:2] if ".lora_A." in k else v[:, :2]) if "attn2" in k else v for k, v in state.items()}
        modules = sorted({_module(k) for k in state})
        metadata = {
            "r": 4,
            "lora_alpha": 8,
            "rank_pattern": {m: 2 for m in modules if "attn2" in m},
            "alpha_pattern": {m: 1 for m in modules if m.endswith("to_q")},
            "target_modules": modules,
        }
        return _write(folder, halved, metadata)
    assert kind == "fewer-layers"  # the slot's other layers must stop contributing
    return _write(folder, {k: v for k, v in state.items() if "attn2" in k})


def _incompatible(kind: str, root: Path, folder: Path) -> LoraRef:
    state = _tiny_state(root, "swap/second")
    if kind == "rank8-alpha4":  # larger than the slot's rank 4
        return _write(folder, _kohya(state, rank=8, alpha=4.0))
    if kind == "text-encoder":
        layer = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        generator = torch.Generator().manual_seed(1)
        state[f"{layer}.lora_A.weight"] = torch.randn(4, 32, generator=generator)
        state[f"{layer}.lora_B.weight"] = torch.randn(32, 4, generator=generator)
        return _write(folder, state)
    assert kind == "extra-layer"  # a layer the slot has no LoRA on
    generator = torch.Generator().manual_seed(2)
    state["unet.down_blocks.1.attentions.0.proj_in.lora_A.weight"] = torch.randn(4, 64, generator=generator)
    state["unet.down_blocks.1.attentions.0.proj_in.lora_B.weight"] = torch.randn(64, 4, generator=generator)
    return _write(folder, state)


@pytest.mark.parametrize("kind", ["same-rank", "kohya-rank2-alpha1", "rank-and-alpha-patterns", "fewer-layers"])
def test_swapped_lora_draws_like_a_fresh_load(
    kind: str,
    root: Path,
    model: LoadedModel,
    new_bank: Callable[[], LoraBank],
    loads: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="likeness.generation")
    first = _write(tmp_path / "first", _tiny_state(root, "swap/first"), weight=0.8)
    second = _swappable(kind, root, tmp_path / "second")
    bank = new_bank()
    bank.activate((first,))
    before = _render(model)
    loads.clear()
    bank.activate((second,))
    swapped = _render(model)
    assert loads == [] and "instead of hot-swapping" not in caplog.text  # swapped in place, not reloaded
    assert dict(bank.slots) == {second.key: SLOT}
    assert np.abs(swapped - before).max() > 0.05
    assert np.abs(swapped - _fresh(model, new_bank, second)).max() <= 1 / 255


@pytest.mark.parametrize("kind", ["rank8-alpha4", "text-encoder", "extra-layer"])
def test_lora_that_cannot_swap_is_reloaded_and_the_slot_swaps_again(
    kind: str,
    root: Path,
    model: LoadedModel,
    new_bank: Callable[[], LoraBank],
    loads: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="likeness.generation")
    first = _write(tmp_path / "first", _tiny_state(root, "swap/first"))
    second = _incompatible(kind, root, tmp_path / "second")
    third = _write(tmp_path / "third", _tiny_state(root, "swap/third"), weight=0.9)
    bank = new_bank()
    bank.activate((first,))
    loads.clear()
    bank.activate((second,))
    assert loads == [SLOT] and "instead of hot-swapping" in caplog.text
    reloaded = _render(model)
    # Then a plain LoRA into the reloaded slot: in place, unless the slot now holds text-encoder weights too.
    caplog.clear()
    loads.clear()
    bank.activate((third,))
    assert loads == ([SLOT] if kind == "text-encoder" else [])
    after = _render(model)
    assert np.abs(reloaded - _fresh(model, new_bank, second)).max() <= 1 / 255
    assert np.abs(after - _fresh(model, new_bank, third)).max() <= 1 / 255


def test_a_refused_swap_leaves_the_slot_untouched(
    root: Path, model: LoadedModel, new_bank: Callable[[], LoraBank], tmp_path: Path
) -> None:
    bank = new_bank()
    bank.activate((_write(tmp_path / "first", _tiny_state(root, "swap/first")),))
    params = {k: v.clone() for k, v in model.pipe.unet.state_dict().items() if f".{SLOT}." in k}
    too_large = _incompatible("rank8-alpha4", root, tmp_path / "large")
    with pytest.raises(SwapRefused, match="rank 8"):
        bank.swapper.swap(model.pipe, SLOT, too_large.source, too_large.weight_name)
    unet = model.pipe.unet.state_dict()
    assert params and all(torch.equal(unet[k], v) for k, v in params.items())


def test_switching_back_and_forth_draws_each_preset_as_at_first_and_skips_redundant_activation(
    root: Path, model: LoadedModel, new_bank: Callable[[], LoraBank], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _write(tmp_path / "first", _tiny_state(root, "swap/first"), weight=0.8)
    second = _write(tmp_path / "second", _tiny_state(root, "swap/second"), weight=0.9)
    lighter = first.model_copy(update={"weight": 0.4})  # same weights, another strength
    bank = new_bank()
    bank.capacity = 2
    from peft.tuners.tuners_utils import BaseTunerLayer

    calls: list[list[str]] = []  # adapter activations of any LoRA layer
    original = BaseTunerLayer.set_adapter

    def recording(layer: BaseTunerLayer, names: list[str], **kwargs: Any) -> None:
        calls.append(names)
        original(layer, names, **kwargs)

    monkeypatch.setattr(BaseTunerLayer, "set_adapter", recording)

    seen: dict[str, np.ndarray] = {}
    previous = None
    for step in ["first", "first", "second", "first", "none", "first", "lighter", "first"]:
        calls.clear()
        bank.activate({"first": (first,), "second": (second,), "lighter": (lighter,), "none": ()}[step])
        picture = _render(model)
        if step in seen:
            assert np.abs(picture - seen[step]).max() <= 1 / 255, f"{step} drew differently the second time"
        seen.setdefault(step, picture)
        if step != "none":  # adapters are activated (on every LoRA layer) only when something changed
            assert (calls == []) == (step == previous), (step, previous, calls)
        previous = step
    assert np.abs(seen["lighter"] - seen["first"]).max() > 0.01
    assert np.abs(seen["none"] - seen["first"]).max() > 0.01


def test_lora_bank_activates_adapters_like_pipe_set_adapters(
    root: Path, model: LoadedModel, new_bank: Callable[[], LoraBank], tmp_path: Path
) -> None:
    """`LoraBank` activates adapters on the LoRA layers it found (peft's `set_adapter` + `set_scale`), not through
    diffusers' `pipe.set_adapters`, which walks every module per call: both draw the same for several adapter and
    weight combinations, one of them swapped in place with another rank and alpha.

    Protects diffusers <0.43 and peft <0.22 (pyproject.toml). When it fails after an upgrade, `set_adapters` now
    does more than activate and scale: follow it in `LoraBank._set_adapters` (likeness/generation/_loading.py),
    or call it there, then move the bounds.
    """
    first = _write(tmp_path / "first", _tiny_state(root, "swap/first"), weight=0.8)
    second = _write(tmp_path / "second", _tiny_state(root, "swap/second"), weight=0.5)
    # Rank 2, alpha 1 (scale 1/2), into a rank-4 slot: the swap writes rank and alpha, which `set_adapters` reads.
    third = _write(tmp_path / "third", _kohya(_tiny_state(root, "swap/third"), rank=2, alpha=1.0), weight=1.2)
    bank = new_bank()
    bank.capacity = 2
    pictures = []
    for loras in [
        (first,),
        (second,),
        (first, second),
        (second.model_copy(update={"weight": 1.3}), first.model_copy(update={"weight": 0.3})),
        (third, first),  # `third` replaces `second` in its slot, in place
    ]:
        bank.activate(loras)
        ours = _render(model)
        names = [bank.slots[lora.key] for lora in loras]
        model.pipe.set_adapters(names, [lora.weight for lora in loras])
        theirs = _render(model)
        label = ", ".join(f"{name}@{lora.weight}" for name, lora in zip(names, loras, strict=True))
        assert np.abs(ours - theirs).max() <= 1 / 255, f"LoraBank and set_adapters draw {label} differently"
        pictures.append(ours)
    assert dict(bank.slots) == {third.key: "style1", first.key: "style0"}
    assert all(np.abs(a - b).max() > 0.01 for a, b in itertools.pairwise(pictures)), "each combination draws its own"


def test_canary_peft_hot_swap_still_keeps_the_old_rank_and_alpha(
    root: Path, model: LoadedModel, new_bank: Callable[[], LoraBank], tmp_path: Path
) -> None:
    """Canary for the upstream bug our swap works around (peft 0.21.2 with diffusers 0.42.1; pinned peft <0.22,
    diffusers <0.43): through diffusers' public hot-swap (`enable_lora_hotswap` before the first LoRA, then
    `load_lora_weights(..., hotswap=True)`), a LoRA with another alpha/rank ratio keeps the slot's old `r` and
    `lora_alpha`, so the next `set_adapters` scales it by the old ratio and it draws unlike a fresh load.

    This test asserts that the bug is STILL THERE. When it fails after an upgrade, peft (or diffusers) fixed it:
    `LoraSwapper._set_scale` (likeness/generation/_lora_swap.py) and `LoraBank._load`'s reload instead of
    `hotswap=True` (likeness/generation/_loading.py) may be dropped for the upstream hot-swap; then delete this
    canary.
    """
    new_bank()  # no style adapters left from other tests
    pipe = model.pipe  # `load_model` called `enable_lora_hotswap(target_rank=4)` before any LoRA
    first = _write(tmp_path / "first", _tiny_state(root, "swap/first"))  # rank 4, alpha 4: scale 1
    second = _write(tmp_path / "second", _kohya(_tiny_state(root, "swap/second"), rank=4, alpha=2.0))  # scale 1/2
    weight = 0.7
    try:
        pipe.load_lora_weights(first.source, weight_name=first.weight_name, adapter_name="style_canary")
        pipe.load_lora_weights(second.source, weight_name=second.weight_name, adapter_name="style_canary", hotswap=True)
        pipe.set_adapters(["style_canary"], [weight])
        swapped = _render(model)
        layers = _lora_layers(pipe, "style_canary")
        pipe.load_lora_weights(second.source, weight_name=second.weight_name, adapter_name="style_canary_fresh")
        pipe.set_adapters(["style_canary_fresh"], [weight])
        fresh = _render(model)
        fresh_layers = _lora_layers(pipe, "style_canary_fresh")
    finally:
        pipe.delete_adapters([name for name in ("style_canary", "style_canary_fresh") if name in pipe.unet.peft_config])
    assert layers and {alpha / rank for rank, alpha, _ in fresh_layers} == {0.5}
    fixed = f"peft {version('peft')} / diffusers {version('diffusers')} fixed the hot-swap bug our swap works around"
    assert {alpha / rank for rank, alpha, _ in layers} == {1.0}, f"{fixed}: it now writes r/lora_alpha (see docstring)"
    assert {round(scale, 6) for _, _, scale in layers} == {weight}, f"{fixed}: set_adapters now scales right"
    assert np.abs(swapped - fresh).max() > 0.05, f"{fixed}: the hot-swapped LoRA draws like a fresh load"


def _lora_layers(pipe: Any, adapter: str) -> list[tuple[int, float, float]]:
    """(r, lora_alpha, scaling) of `adapter` on each UNet LoRA layer that has it."""
    from peft.tuners.lora import LoraLayer

    return [
        (module.r[adapter], module.lora_alpha[adapter], float(module.scaling[adapter]))
        for module in pipe.unet.modules()
        if isinstance(module, LoraLayer) and adapter in module.scaling
    ]
