"""A request's plan: everything one generation needs except its selfie (size, steps, guidance, scheduler,
identity scales, LoRAs, prompt parts), from the model spec and the preset. Batch-mates share a plan's key."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from likeness.errors import ConfigError
from likeness.generation._prompts import render_parts
from likeness.generation._registry import ModelSpec
from likeness.generation._types import PortraitRequest
from likeness.presets import EffectivePreset, LoraRef
from likeness.requests import SEED_LIMIT, get_format, size_for

__all__ = ["Plan", "plan_for"]

_LAYERS = ("down", "mid", "up")


@dataclass(frozen=True)
class Plan:
    """Everything a request needs except its selfie; `key` is what batch-mates must share."""

    format: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    identity_scale: float
    layer_scales: tuple[tuple[str, float], ...]  # empty: one scale everywhere
    loras: tuple[LoraRef, ...]
    parts: tuple[tuple[float, str, str], ...]

    @property
    def key(self) -> Hashable:
        lora_set = tuple(sorted((lora.key, round(lora.weight, 4)) for lora in self.loras))
        return (self.width, self.height, self.steps, self.guidance, self.scheduler, self.ip_scale_key, lora_set)

    @property
    def ip_scale_key(self) -> Hashable:
        return self.layer_scales or self.identity_scale

    def ip_scale(self) -> float | dict[str, float]:
        """The argument of diffusers' `set_ip_adapter_scale` (its per-block dict form with identity layers)."""
        return dict(self.layer_scales) if self.layer_scales else self.identity_scale


def plan_for(spec: ModelSpec, request: PortraitRequest) -> Plan:
    """The plan of `request` on the model `spec`; `ValueError` for seeds or identity scales out of range."""
    if not request.seeds:
        raise ValueError("a portrait request needs at least one seed")
    for seed in request.seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"seed {seed} is outside 0..{SEED_LIMIT - 1}")
    defaults = request.preset.defaults
    fmt = get_format(request.format or defaults.format)
    width, height = size_for(fmt, spec.base, spec.multiple)
    steps = min(defaults.steps, spec.max_steps) if spec.max_steps else defaults.steps
    scheduler = defaults.scheduler if defaults.scheduler != "default" else spec.scheduler
    strength = defaults.identity_strength
    scale = strength if request.identity_scale is None else float(request.identity_scale)
    if not 0.0 <= scale <= 1.5:
        raise ValueError(f"identity_scale must be within 0..1.5, got {scale}")
    return Plan(
        format=fmt.name,
        width=width,
        height=height,
        steps=steps,
        guidance=float(defaults.guidance),
        scheduler=scheduler,
        identity_scale=scale,
        layer_scales=_layer_scales(request.preset, scale),
        loras=request.preset.loras,
        parts=tuple(render_parts(request.preset, request.prompt, fmt.framing)),
    )


def _layer_scales(preset: EffectivePreset, scale: float) -> tuple[tuple[str, float], ...]:
    """Per-block identity scales: the preset's `identity_layers`, scaled along with the overall scale.

    The preset's layer values belong with its `identity_strength`; a request asking for another
    overall scale multiplies every layer by the same ratio (blocks a preset leaves out use the
    overall scale). Without layers, one scale applies everywhere.
    """
    layers = preset.defaults.identity_layers
    if not layers:
        return ()
    unknown = set(layers) - set(_LAYERS)
    if unknown:
        raise ConfigError(
            message=f"preset {preset.spec}: identity_layers may only name {', '.join(_LAYERS)}, not {sorted(unknown)}"
        )
    strength = preset.defaults.identity_strength
    ratio = scale / strength if strength > 0 else None
    return tuple(
        (name, round(layers[name] * ratio, 6) if name in layers and ratio is not None else scale) for name in _LAYERS
    )
