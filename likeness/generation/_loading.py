"""Loading a model spec into diffusers pipelines: device, dtype, identity adapter, LoRAs, schedulers.

The base model is loaded once per process. Style LoRAs live in a few named adapter slots: a preset
switch activates cached slots with `set_adapters`, and a LoRA that is not cached replaces the least
recently used slot in place (`_lora_swap`), so switching presets never reloads the checkpoint.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from likeness.config import Settings
from likeness.errors import ModelUnavailable
from likeness.generation._lora_swap import LoraSwapper, SwapRefused
from likeness.generation._registry import ModelSpec
from likeness.generation._tiny import (
    ADAPTER_FILE,
    ADAPTER_SUBFOLDER,
    ENCODER_SUBFOLDER,
    FACEID_ADAPTER_FILE,
    LORA_FILE,
    ensure_tiny_lora,
    ensure_tiny_model,
)
from likeness.presets import LoraRef

__all__ = ["LoadedModel", "LoraBank", "load_model", "make_scheduler", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(settings: Settings) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU."""
    if settings.device != "auto":
        return torch.device(settings.device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """`auto` is float16 on accelerators and float32 on the CPU (CPU half precision is slow and lossy)."""
    if settings.dtype != "auto":
        return _DTYPES[settings.dtype]
    return torch.float32 if device.type == "cpu" else torch.float16


# name -> (diffusers class name, extra config) for the preset schema's scheduler names.
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, default: Any) -> Any:
    """A fresh scheduler called `name` built from the checkpoint's own scheduler config (`default` keeps it)."""
    import diffusers

    if name == "default":
        return type(default).from_config(default.config)
    class_name, extra = _SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(default.config, **extra)


@dataclass
class LoadedModel:
    """A loaded model: the text-to-image pipeline plus img2img/inpaint pipelines sharing its modules."""

    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    pipe: Any
    img2img: Any
    inpaint: Any
    loras: LoraBank
    base_scheduler: Any


def load_model(settings: Settings, spec: ModelSpec, lora_sources: list[str]) -> LoadedModel:
    """Load `spec` (building the tiny weights first when it is a tiny model); `ModelUnavailable` if it can't."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    checkpoint, adapter_repo, encoder_repo = spec.checkpoint, spec.identity_adapter.repo, spec.image_encoder.repo
    adapter_sub, adapter_file = spec.identity_adapter.subfolder, spec.identity_adapter.weight_name
    encoder_sub = spec.image_encoder.subfolder
    tiny_root: Path | None = None
    try:
        if spec.tiny:
            tiny_root = ensure_tiny_model(settings.data_dir, spec.family, lora_sources)
            checkpoint = str(tiny_root / "checkpoint")
            adapter_repo = encoder_repo = str(tiny_root / "ip-adapter")
            adapter_sub, encoder_sub = ADAPTER_SUBFOLDER, ENCODER_SUBFOLDER
            adapter_file = FACEID_ADAPTER_FILE if spec.identity_adapter.kind == "faceid-plus-v2" else ADAPTER_FILE
        kwargs: dict[str, Any] = {_diffusers_dtype_kw(): dtype}
        if spec.variant:
            kwargs["variant"] = spec.variant
        if spec.vae:
            from diffusers import AutoencoderKL

            kwargs["vae"] = AutoencoderKL.from_pretrained(spec.vae, **{_diffusers_dtype_kw(): dtype})
        pipe = AutoPipelineForText2Image.from_pretrained(checkpoint, **kwargs)
        # The encoder is loaded here rather than by `load_ip_adapter`, which only finds it inside the
        # adapter's own repo and subfolder (h94's SDXL plus-face uses the ViT-H one from `models/`).
        from transformers import CLIPVisionModelWithProjection

        encoder_kwargs: dict[str, Any] = {"subfolder": encoder_sub, _transformers_dtype_kw(): dtype}
        encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_repo, **encoder_kwargs)
        pipe.register_modules(image_encoder=encoder)
        # Before `load_ip_adapter`: a FaceID checkpoint loads its own LoRA (`faceid_0`) there, and hot-swap
        # must be enabled before the first LoRA.
        if hasattr(pipe, "enable_lora_hotswap"):
            pipe.enable_lora_hotswap(target_rank=spec.lora_rank)
        pipe.load_ip_adapter(adapter_repo, subfolder=adapter_sub, weight_name=adapter_file, image_encoder_folder=None)
        pipe.to(device)
    except Exception as exc:
        raise ModelUnavailable(model=spec.key, reason=_explain(exc)) from exc
    pipe.set_progress_bar_config(disable=True)
    # Adapters present before any style LoRA (FaceID's `faceid_0`) stay on at weight 1 in every `set_adapters`.
    fixed = tuple(getattr(pipe.unet, "peft_config", {}))
    # Derived after `load_ip_adapter`, or they would lack the image encoder (FIELD-NOTES). They share
    # every module, the scheduler included: run one pipeline at a time.
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    inpaint = AutoPipelineForInpainting.from_pipe(pipe)
    for derived in (img2img, inpaint):
        derived.set_progress_bar_config(disable=True)

    def locate(lora: LoraRef) -> tuple[str, str | None]:
        if tiny_root is not None:
            return str(ensure_tiny_lora(tiny_root, lora.source)), LORA_FILE
        path = Path(lora.source).expanduser()
        if path.is_file():
            return str(path.parent), path.name
        return lora.source, lora.weight_name

    return LoadedModel(
        spec=spec,
        device=device,
        dtype=dtype,
        pipe=pipe,
        img2img=img2img,
        inpaint=inpaint,
        # One slot per preset LoRA: after its first use, switching presets is a `set_adapters` call (~ms);
        # swapping into a reused slot (a few ms more, plus reading the file) is left for operator extras.
        loras=LoraBank(
            pipe,
            locate,
            hotswap=hasattr(pipe, "enable_lora_hotswap"),
            fixed=fixed,
            capacity=max(LoraBank.capacity, len(lora_sources)),
        ),
        base_scheduler=pipe.scheduler,
    )


_LORA_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")  # where diffusers puts LoRA layers


@dataclass
class LoraBank:
    """Style LoRAs in named adapter slots, most recently used last; loads each LoRA once while cached."""

    pipe: Any
    locate: Callable[[LoraRef], tuple[str, str | None]]
    hotswap: bool = False
    fixed: tuple[str, ...] = ()  # adapters that belong to the model (FaceID's `faceid_0`): always on, weight 1
    capacity: int = 4
    slots: OrderedDict[str, str] = field(default_factory=OrderedDict)  # LoRA key -> adapter name
    swapper: LoraSwapper = field(default_factory=LoraSwapper)
    _next_slot: int = 0
    _enabled: bool = True
    _active: tuple[tuple[str, ...], tuple[float, ...]] | None = None  # adapters and weights in force
    _layers: list[Any] | None = None  # the pipeline's LoRA layers, found once after each load

    def activate(self, loras: tuple[LoraRef, ...]) -> None:
        """Make exactly `loras` active, at their weights (none: every style LoRA off, fixed ones stay on).

        Nothing is done when the same adapters at the same weights are in force (the same preset again).
        """
        if not loras:
            if self.fixed:
                if self.slots:
                    self._set_adapters(self.fixed, tuple(1.0 for _ in self.fixed))
            elif self.slots and self._enabled:
                self.pipe.disable_lora()
                self._enabled = False
                self._active = None
            return
        wanted = {lora.key for lora in loras}
        for lora in loras:
            if lora.key in self.slots:
                self.slots.move_to_end(lora.key)
            else:
                self._load(lora, wanted)
        if not self._enabled:
            self.pipe.enable_lora()
            self._enabled = True
        names = (*self.fixed, *(self.slots[lora.key] for lora in loras))
        self._set_adapters(names, (*(1.0 for _ in self.fixed), *(lora.weight for lora in loras)))

    def _set_adapters(self, names: tuple[str, ...], weights: tuple[float, ...]) -> None:
        """What diffusers' `pipe.set_adapters` does for plain float weights, on the LoRA layers found once:
        it walks every module of every component per call and lets peft toggle `requires_grad` on each
        adapter (~17 ms with five slots on the tiny SDXL UNet, against a few ms here)."""
        if self._active == (names, weights):
            return
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            components = [getattr(self.pipe, name, None) for name in _LORA_COMPONENTS]
            self._layers = [
                module
                for component in components
                if component is not None and getattr(component, "peft_config", None)
                for module in component.modules()
                if isinstance(module, BaseTunerLayer)
            ]
        for layer in self._layers:
            layer.set_adapter(list(names), inference_mode=True)
            for name, weight in zip(names, weights, strict=True):
                layer.set_scale(name, weight)
        self._active = (names, weights)

    def _load(self, lora: LoraRef, wanted: set[str]) -> None:
        self._active = None  # a swap or load writes the slot's scaling: activate again
        source, weight_name = self.locate(lora)
        kwargs: dict[str, Any] = {"weight_name": weight_name} if weight_name else {}
        victim = next((key for key in self.slots if key not in wanted), None)
        reuse = victim is not None and len(self.slots) >= max(self.capacity, len(wanted))
        if reuse:
            name = self.slots.pop(victim)  # type: ignore[arg-type]
        else:
            name = f"style{self._next_slot}"
            self._next_slot += 1
        try:
            if reuse and self.hotswap:
                try:
                    self.swapper.swap(self.pipe, name, source, weight_name)  # same layers, new weights
                    self.slots[lora.key] = name
                    return
                except SwapRefused as exc:
                    # Text-encoder LoRAs, higher ranks or other target layers can't swap in place.
                    log.info("LoRA %s: reloading slot %s instead of hot-swapping (%s)", lora.key, name, exc)
                except Exception:
                    log.warning("LoRA %s: swapping into slot %s failed; reloading it", lora.key, name, exc_info=True)
            if reuse:
                # Not diffusers' `hotswap=True`: it keeps the slot's old `r`/`lora_alpha`, so `set_adapters`
                # would scale a LoRA with another alpha/rank ratio wrongly (see `_lora_swap`).
                self.swapper.forget(name)
                self.pipe.delete_adapters(name)
            self._layers = None  # a fresh load may add LoRA layers (other target modules, text encoders)
            self.pipe.load_lora_weights(source, adapter_name=name, **kwargs)
        except Exception as exc:
            self.swapper.forget(name)
            with suppress(Exception):
                self.pipe.delete_adapters(name)
            raise ModelUnavailable(model=f"LoRA {lora.source}", reason=_explain(exc)) from exc
        self.slots[lora.key] = name

    def close(self) -> None:
        """Let go of the pipeline and of the model parameters the swap caches point at."""
        self.pipe = self._layers = None
        self.swapper.clear()


def _diffusers_dtype_kw() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (and warns about the old name); older releases only know it.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _transformers_dtype_kw() -> str:
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _explain(exc: BaseException) -> str:
    """Turn a load failure into a reason an operator can act on."""
    from huggingface_hub import constants

    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    hint = "run `likeness models pull` on a machine with network, or set LIKENESS_MODEL=tiny to try Likeness"
    if constants.HF_HUB_OFFLINE:
        return f"the weights are not on this machine and the Hugging Face Hub is offline (HF_HUB_OFFLINE); {hint}."
    if isinstance(exc, OSError):
        return f"weights not found or not downloadable ({detail}); {hint}."
    return f"{type(exc).__name__}: {detail}"
