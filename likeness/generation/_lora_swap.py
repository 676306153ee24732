"""Swapping a style LoRA into an existing adapter slot in place, in a few milliseconds.

diffusers' `load_lora_weights(..., hotswap=True)` walks every module of the UNet several times per swap
(`model.modules()`, `model.state_dict()`, the offload-hook scan) and re-converts the file's keys: tens of
ms on the tiny model, more on a real SDXL UNet. `LoraSwapper` does the same swap with two caches:

- per slot, the slot's `lora_A`/`lora_B` parameters by module name, found by one walk of the UNet;
- per LoRA file, what `load_lora_weights` would derive from it: the diffusers→peft key conversion
  (`lora_state_dict`, `convert_unet_state_dict_to_peft`) and each layer's rank and alpha (the
  `LoraConfig` of `get_peft_kwargs`, or the file's own adapter metadata).

Tensors are not cached: each swap re-reads the LoRA's safetensors file (one read, deserialised by
safetensors in one call: ~7 µs a tensor here, against ~45 µs through `safe_open().get_tensor`). A real
SDXL LoRA is tens to hundreds of MB; the OS page cache already keeps recently used files in memory, so a
second copy in the process would only add a memory budget to tune for a memcpy's worth of time.

The swap writes what a fresh `load_lora_weights` would produce: new weights (zero-padded when the slot's
rank is larger, as peft's `hotswap_adapter_from_state_dict` pads), zeros in slot layers the new LoRA
lacks, and each layer's `r`, `lora_alpha` and `scaling`. peft's own hot-swap leaves `r` and `lora_alpha`
at the slot's first occupant, so the next `set_adapters` rescales a LoRA with another alpha/rank ratio
wrongly. Anything else raises `SwapRefused`, and the caller loads the LoRA the slow way.

This mirrors diffusers' and peft's internals, so both are pinned from above in pyproject.toml;
tests/test_pinned_seams.py checks their shape, and a canary in tests/test_lora_swap.py fails once peft's
hot-swap keeps the new rank and alpha (then this workaround may go).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["LoraSwapper", "SwapRefused"]

_A, _B, _B_BIAS = ".lora_A.weight", ".lora_B.weight", ".lora_B.bias"
_TEXT_ENCODERS = ("text_encoder", "text_encoder_2")  # where `load_lora_weights` puts the rest of a LoRA


class SwapRefused(Exception):
    """This LoRA can't replace the slot's weights in place (load it into a fresh adapter instead)."""


@dataclass(frozen=True)
class _Layer:
    """One LoRA layer of a file: its tensor names in the file, shapes, rank and alpha."""

    a_key: str
    b_key: str
    bias_key: str | None
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    rank: int
    alpha: float


@dataclass(frozen=True)
class _Lora:
    """A LoRA file's UNet layers by module name, as `load_lora_weights` would configure them."""

    layers: dict[str, _Layer]
    use_rslora: bool


@dataclass(frozen=True)
class _Target:
    """One LoRA layer of a slot: the peft module and the slot's parameters in it."""

    module: Any
    a: torch.nn.Parameter
    b: torch.nn.Parameter
    bias: torch.nn.Parameter | None


@dataclass(frozen=True)
class _Slot:
    config: Any  # the slot's `peft_config` entry: a reload replaces it, which makes this map stale
    targets: dict[str, _Target]


class LoraSwapper:
    """Swaps UNet LoRAs from safetensors files into existing adapter slots of a diffusers pipeline."""

    max_files = 64  # converted layouts kept (a few KB each); files change name or stamp when replaced

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._files: OrderedDict[tuple[str, int, int], _Lora | SwapRefused] = OrderedDict()

    def swap(self, pipe: Any, slot: str, source: str, weight_name: str | None) -> None:
        """Replace adapter `slot`'s weights with the LoRA `weight_name` of `source`; `SwapRefused` if it can't.

        Nothing is written when it refuses. Another error may leave the slot half written: reload it then.
        """
        path = _weights_file(source, weight_name)
        lora = self._lora(pipe, path)
        targets = self._targets(pipe, slot)
        # 1. Check everything before writing anything: same layers (or fewer), ranks that fit.
        for name, layer in lora.layers.items():
            target = targets.get(name)
            if target is None:
                raise SwapRefused(f"it has a layer ({name}) that slot {slot} lacks")
            if (target.a.shape != layer.a_shape or target.b.shape != layer.b_shape) and not (
                _fits(target.a.shape, layer.a_shape, 0) and _fits(target.b.shape, layer.b_shape, 1)
            ):
                raise SwapRefused(f"its layer {name} has rank {layer.rank}, slot {slot} has {target.a.shape[0]}")
            if layer.bias_key is not None and target.bias is None:
                raise SwapRefused(f"its layer {name} has a bias, slot {slot} has none")
        if any(slot in target.module.merged_adapters for target in targets.values()):
            raise SwapRefused(f"slot {slot} is fused into the base weights")
        # 2. Copy the weights in, zero the slot's other layers, and set each layer's rank, alpha and scale.
        from safetensors.torch import load

        weights = load(path.read_bytes())
        with torch.no_grad():
            for name, target in targets.items():
                incoming = lora.layers.get(name)
                if incoming is None:
                    for param in (target.a, target.b, target.bias):
                        if param is not None:
                            param.zero_()
                    continue
                _copy_padded(target.a, weights[incoming.a_key], dim=0)
                _copy_padded(target.b, weights[incoming.b_key], dim=1)
                if target.bias is not None:
                    if incoming.bias_key is None:
                        target.bias.zero_()
                    else:
                        target.bias.copy_(weights[incoming.bias_key])
                _set_scale(target.module, slot, incoming, lora.use_rslora)

    def forget(self, slot: str) -> None:
        """Drop what is known about `slot` (call it when the slot is deleted or reloaded)."""
        self._slots.pop(slot, None)

    def clear(self) -> None:
        """Drop every cache (and the references to the model they hold)."""
        self._slots.clear()
        self._files.clear()

    def _lora(self, pipe: Any, path: Path) -> _Lora:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(key)
        if cached is None:
            try:
                cached = _read_layout(pipe, path)
            except SwapRefused as exc:
                cached = exc
            self._files[key] = cached
            while len(self._files) > self.max_files:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        if isinstance(cached, SwapRefused):
            raise cached
        return cached

    def _targets(self, pipe: Any, slot: str) -> dict[str, _Target]:
        unet = pipe.unet
        config = getattr(unet, "peft_config", {}).get(slot)
        if config is None:
            raise SwapRefused(f"the UNet has no adapter {slot}")
        for encoder in _TEXT_ENCODERS:
            if slot in (getattr(getattr(pipe, encoder, None), "peft_config", None) or {}):
                raise SwapRefused(f"slot {slot} also holds {encoder} weights")
        cached = self._slots.get(slot)
        if cached is None or cached.config is not config:
            cached = self._slots[slot] = _Slot(config, _slot_targets(unet, slot))
        return cached.targets


def _weights_file(source: str, weight_name: str | None) -> Path:
    """The safetensors file `load_lora_weights(source, weight_name=...)` reads, if it is on this machine."""
    if weight_name is None or not weight_name.endswith(".safetensors"):
        raise SwapRefused("only a named .safetensors file swaps in place")
    local = Path(source).expanduser() / weight_name
    if local.is_file():
        return local
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(source, weight_name)
    except ValueError:  # not a hub repo id
        cached = None
    if not isinstance(cached, str):
        raise SwapRefused(f"{weight_name} of {source} is not on this machine")
    return Path(cached)


def _read_layout(pipe: Any, path: Path) -> _Lora:
    """What `pipe.load_lora_weights(path)` derives for the UNet (diffusers 0.42 `load_lora_adapter`), by layer.

    The tensors are loaded once here to learn the layout; the conversion must only rename them, so a swap
    can read each one by its name in the file.
    """
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from diffusers.utils import convert_unet_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig
    from peft.utils.other import get_pattern_key
    from safetensors import safe_open
    from safetensors.torch import load

    # 1. The checkpoint, converted from kohya/other formats the way `lora_state_dict` converts it.
    raw = load(path.read_bytes())
    with safe_open(str(path), framework="pt") as weights:
        header = weights.metadata() or {}
    metadata = json.loads(header[LORA_ADAPTER_METADATA_KEY]) if header.get(LORA_ADAPTER_METADATA_KEY) else None
    unet_config = getattr(pipe, "unet").config  # noqa: B009 - the mixin's type doesn't declare the pipeline's unet
    extra = {"unet_config": unet_config} if isinstance(pipe, StableDiffusionXLLoraLoaderMixin) else {}
    state_dict, network_alphas = pipe.lora_state_dict(dict(raw), **extra)
    if not all("lora" in key for key in state_dict):
        raise SwapRefused("not a LoRA checkpoint")
    # 2. Its UNet part only (text-encoder LoRAs can't swap in place), in peft's key format.
    prefix = f"{pipe.unet_name}."
    outside = next((key for key in state_dict if not key.startswith(prefix)), None)
    if outside is not None:
        raise SwapRefused(f"it has weights outside the UNet ({outside})")
    state_dict = {key.removeprefix(prefix): value for key, value in state_dict.items()}
    if not state_dict:
        raise SwapRefused("it has no UNet weights")
    if metadata is not None:
        metadata = {k.removeprefix(prefix): v for k, v in metadata.items() if k.startswith(prefix)}
    if network_alphas and metadata:
        raise SwapRefused("it has both network alphas and adapter metadata")
    if any(".lokr_" in key for key in state_dict):
        raise SwapRefused("LoKr adapters don't swap in place")
    if "lora_A" not in next(iter(state_dict)):
        state_dict = convert_unet_state_dict_to_peft(state_dict)
    if "lora_controlnet" in state_dict:
        raise SwapRefused("control LoRAs don't swap in place")
    # 3. The LoraConfig, and each layer's rank and alpha as peft's injection reads them from it.
    ranks = {f"^{key}": value.shape[1] for key, value in state_dict.items() if "lora_B" in key and value.ndim > 1}
    if network_alphas:
        network_alphas = {k.removeprefix(prefix): v for k, v in network_alphas.items() if k.startswith(prefix)}
    if metadata is None:
        metadata = get_peft_kwargs(ranks, network_alpha_dict=network_alphas, peft_state_dict=state_dict, is_unet=True)
    config = LoraConfig(**metadata)
    if config.use_dora:
        raise SwapRefused("DoRA adapters don't swap in place")
    # 4. Each converted tensor's name in the file (the conversions only rename: the objects are the same).
    file_keys = {id(tensor): key for key, tensor in raw.items()}
    by_module: dict[str, dict[str, str]] = {}
    for key, tensor in state_dict.items():
        file_key = file_keys.pop(id(tensor), None)
        if file_key is None:
            raise SwapRefused("its conversion changes tensors, not only their names")
        suffix = next((s for s in (_A, _B, _B_BIAS) if key.endswith(s)), None)
        if suffix is None:
            raise SwapRefused(f"its weight {key} is not a plain LoRA weight")
        by_module.setdefault(key.removesuffix(suffix), {})[suffix] = file_key
    layers = {}
    ranks, alphas = config.rank_pattern or {}, config.alpha_pattern or {}
    for module, keys in by_module.items():
        if _A not in keys or _B not in keys:
            raise SwapRefused(f"its layer {module} lacks lora_A or lora_B")
        a_shape, b_shape = tuple(raw[keys[_A]].shape), tuple(raw[keys[_B]].shape)
        rank = ranks.get(get_pattern_key(list(ranks), module), config.r)
        if len(a_shape) < 2 or len(b_shape) < 2 or not a_shape[0] == b_shape[1] == rank:
            raise SwapRefused(f"its layer {module} has shapes {a_shape}, {b_shape} for rank {rank}")
        alpha = alphas.get(get_pattern_key(list(alphas), module), config.lora_alpha)
        layers[module] = _Layer(keys[_A], keys[_B], keys.get(_B_BIAS), a_shape, b_shape, rank, alpha)
    return _Lora(layers, config.use_rslora)


def _slot_targets(unet: Any, slot: str) -> dict[str, _Target]:
    """The slot's LoRA parameters by module name (one walk of the UNet)."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = {}
    for name, module in unet.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        holds = {attr for attr in module.adapter_layer_names if slot in getattr(module, attr, {})}
        if not holds:
            continue
        if (
            not isinstance(module, LoraLayer)
            or holds != {"lora_A", "lora_B"}
            or slot in getattr(module, "lora_variant", {})
            or module.lora_A[slot].bias is not None
            or getattr(module.get_base_layer(), "groups", 1) != 1
        ):
            raise SwapRefused(f"slot {slot}'s layer {name} is not a plain LoRA layer")
        up = module.lora_B[slot]
        targets[name] = _Target(module, module.lora_A[slot].weight, up.weight, up.bias)  # type: ignore[arg-type]
    return targets


def _fits(slot_shape: torch.Size, new_shape: tuple[int, ...], rank_dim: int) -> bool:
    """Same shape, except a rank no larger than the slot's along `rank_dim`."""
    return len(slot_shape) == len(new_shape) and all(
        s >= n if dim == rank_dim else s == n for dim, (s, n) in enumerate(zip(slot_shape, new_shape, strict=True))
    )


def _copy_padded(param: torch.Tensor, value: torch.Tensor, dim: int) -> None:
    """Copy `value` into the first ranks of `param` (device and dtype converted) and zero the rest."""
    if param.shape == value.shape:
        param.copy_(value)
        return
    rank = value.shape[dim]
    param.narrow(dim, 0, rank).copy_(value)
    if param.shape[dim] > rank:
        param.narrow(dim, rank, param.shape[dim] - rank).zero_()


def _set_scale(module: Any, slot: str, layer: _Layer, use_rslora: bool) -> None:
    """Rank, alpha and scale of a fresh load, so `set_adapters` (which rescales from them) stays right."""
    module.r[slot] = layer.rank
    module.lora_alpha[slot] = layer.alpha
    module.use_rslora[slot] = use_rslora
    scaling = layer.alpha / (math.sqrt(layer.rank) if use_rslora else layer.rank)
    # Like peft's `_update_scaling`: `enable_lora_hotswap` turns scales into tensors, kept in place.
    if isinstance(module.scaling[slot], torch.Tensor):
        module.scaling[slot].fill_(scaling)
    else:
        module.scaling[slot] = scaling
