"""The generation engine: selfie + preset → identity-preserving portraits, alone or batched."""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from likeness.config import Settings
from likeness.errors import ConfigError, GenerationFailed, LikenessError, OutOfMemory
from likeness.generation import _edits
from likeness.generation._clipseg import TextMasker
from likeness.generation._edits import EditRequest
from likeness.generation._identity import identity_image
from likeness.generation._loading import LoadedModel, load_model, make_scheduler
from likeness.generation._prompts import PromptEmbeds, encode_parts, render_parts
from likeness.generation._registry import ModelSpec, get_model_spec
from likeness.presets import EffectivePreset, LoraRef, PresetCatalog, get_format, size_for

__all__ = ["Engine", "GenerationResult", "PortraitRequest", "ProgressFn"]

ProgressFn = Callable[[int, int], None]
"""`(step, total_steps)`, called from the generating thread after each denoising step."""

_LAYERS = ("down", "mid", "up")


@dataclass
class PortraitRequest:
    """One portrait job: a validated RGB selfie, a resolved preset, and the user's choices."""

    selfie: Image.Image
    preset: EffectivePreset
    prompt: str = ""
    format: str | None = None
    seeds: tuple[int, ...] = (0,)
    identity_scale: float | None = None


@dataclass
class GenerationResult:
    """Images (one per seed, in order) and JSON-able metadata describing how they were made."""

    images: list[Image.Image]
    seeds: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
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


class Engine:
    """Loads one model once and turns portrait requests into images. Not thread-safe: one call at a time."""

    def __init__(self, settings: Settings, spec: ModelSpec, model: LoadedModel, presets: PresetCatalog) -> None:
        self.settings = settings
        self.spec = spec
        self.model_key = spec.key
        self.model = model
        self.presets = presets
        self._masker: TextMasker | None = None

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load `settings.model` with its identity adapter (slow, once per process).

        Raises `ConfigError` for an unknown model or invalid presets/models file and `ModelUnavailable`
        when weights can't be loaded. Tiny models are built offline under `settings.data_dir` once.
        """
        spec = get_model_spec(settings.model, settings.models_file)
        presets = PresetCatalog.load(settings.presets_dir)
        sources = sorted({lora.source for preset in presets for lora in preset.loras})
        return cls(settings, spec, load_model(settings, spec, sources), presets)

    @property
    def img2img(self) -> Any:
        """Image-to-image pipeline sharing the base model's modules (and its identity adapter)."""
        return self.model.img2img

    @property
    def inpaint(self) -> Any:
        """Inpainting pipeline sharing the base model's modules (and its identity adapter)."""
        return self.model.inpaint

    # --- planning -------------------------------------------------------------------------------

    def _plan(self, request: PortraitRequest) -> _Plan:
        if not request.seeds:
            raise ValueError("a portrait request needs at least one seed")
        for seed in request.seeds:
            if not 0 <= seed < 2**63:
                raise ValueError(f"seed {seed} is outside 0..2**63-1")
        defaults = request.preset.defaults
        fmt = get_format(request.format or defaults.format)
        width, height = size_for(fmt, self.spec.base, self.spec.multiple)
        steps = min(defaults.steps, self.spec.max_steps) if self.spec.max_steps else defaults.steps
        scheduler = defaults.scheduler if defaults.scheduler != "default" else self.spec.scheduler
        strength = defaults.identity_strength
        scale = strength if request.identity_scale is None else float(request.identity_scale)
        if not 0.0 <= scale <= 1.5:
            raise ValueError(f"identity_scale must be within 0..1.5, got {scale}")
        return _Plan(
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

    def batch_key(self, request: PortraitRequest) -> Hashable:
        """Equal keys may share one diffusers call: same LoRAs, size, steps, guidance, scheduler, identity scale."""
        return self._plan(request).key

    # --- generation -----------------------------------------------------------------------------

    def portrait(self, request: PortraitRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Generate one image per seed of `request`."""
        return self.portrait_batch([request], [progress])[0]

    def portrait_batch(
        self, requests: list[PortraitRequest], progress: list[ProgressFn | None] | None = None
    ) -> list[GenerationResult]:
        """Serve several requests in ONE diffusers call; each keeps its own selfie, prompt and seeds.

        Each output equals `portrait()` of that request alone within one pixel level. Raises
        `ValueError` if the requests' batch keys differ, `OutOfMemory(batch=<images>)` when the
        accelerator runs out of memory, `GenerationFailed` for other failures.
        """
        if not requests:
            return []
        if progress is not None and len(progress) != len(requests):
            raise ValueError("progress must have one entry per request")
        plans = [self._plan(request) for request in requests]
        if any(plan.key != plans[0].key for plan in plans):
            raise ValueError("portrait_batch needs requests with equal batch keys")
        n_images = sum(len(request.seeds) for request in requests)
        try:
            # no_grad, not inference_mode: LoRA weights loaded here must stay usable by the edit pipelines.
            with torch.no_grad():
                images = self._run(requests, plans, [fn for fn in (progress or []) if fn is not None])
        except LikenessError:
            raise
        except Exception as exc:
            if _is_oom(exc):
                _free_accelerator_memory()
                raise OutOfMemory(batch=n_images) from exc
            raise GenerationFailed() from exc
        results = []
        start = 0
        for request, plan in zip(requests, plans, strict=True):
            count = len(request.seeds)
            results.append(
                GenerationResult(
                    images=images[start : start + count],
                    seeds=list(request.seeds),
                    metadata=self._metadata(request, plan),
                )
            )
            start += count
        return results

    def _run(
        self, requests: list[PortraitRequest], plans: list[_Plan], progress: list[ProgressFn]
    ) -> list[Image.Image]:
        model, plan = self.model, plans[0]
        pipe, device = model.pipe, model.device
        guided = plan.guidance > 1.0  # diffusers' rule for classifier-free guidance
        # 1. Style: exactly this request's LoRAs at their weights; scheduler and identity scale.
        model.loras.activate(plan.loras)
        pipe.scheduler = make_scheduler(plan.scheduler, model.base_scheduler)
        pipe.set_ip_adapter_scale(plan.ip_scale())
        # 2. Text: each request's fused prompt embeddings, once per seed.
        embeds = PromptEmbeds.cat(
            [
                encode_parts(pipe, self.spec.family, list(p.parts), device, guided).repeat(len(r.seeds))
                for r, p in zip(requests, plans, strict=True)
            ]
        )
        # 3. Identity: each request's own selfie embedding, once per seed, laid out as
        #    [negatives of all images, positives of all images] — diffusers' batch order. Building this
        #    ourselves and bypassing its repeat keeps each face with its own prompt (diffusers #9813).
        negatives: list[torch.Tensor] = []
        positives: list[torch.Tensor] = []
        for request in requests:
            encoded = pipe.prepare_ip_adapter_image_embeds([identity_image(request.selfie)], None, device, 1, guided)[0]
            if guided:
                negative, encoded = encoded.chunk(2)
                negatives += [negative] * len(request.seeds)
            positives += [encoded] * len(request.seeds)
        ip_embeds = torch.cat(negatives + positives, dim=0)
        # 4. Noise: one generator per image, so a seed gives the same image alone or batched.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for r in requests for seed in r.seeds]

        def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipeline, "num_timesteps", plan.steps)
            for fn in progress:
                fn(step + 1, total)
            return kwargs

        # 5. Denoise and decode.
        with _exact_ip_embeds(pipe, [ip_embeds]):
            output = pipe(
                **embeds.pipeline_kwargs(self.spec.family),
                ip_adapter_image_embeds=[ip_embeds],
                num_inference_steps=plan.steps,
                guidance_scale=plan.guidance,
                width=plan.width,
                height=plan.height,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
            )
        return list(output.images)

    def _metadata(self, request: PortraitRequest, plan: _Plan) -> dict[str, Any]:
        main = max(plan.parts, key=lambda part: part[0])
        return {
            "model": self.model_key,
            "preset": request.preset.spec,
            "prompt": main[1],
            "negative_prompt": main[2],
            "prompt_parts": [{"weight": w, "prompt": p, "negative_prompt": n} for w, p, n in plan.parts],
            "user_prompt": request.prompt,
            "format": plan.format,
            "width": plan.width,
            "height": plan.height,
            "steps": plan.steps,
            "guidance": plan.guidance,
            "scheduler": plan.scheduler,
            "identity_scale": plan.identity_scale,
            "identity_layers": dict(plan.layer_scales) or None,
            "loras": [
                {"source": lora.source, "weight_name": lora.weight_name, "weight": lora.weight} for lora in plan.loras
            ],
            "seeds": list(request.seeds),
        }

    # --- edits and variations (likeness.generation._edits) ---------------------------------------

    @property
    def masker(self) -> TextMasker:
        """The text-prompted segmenter (CLIPSeg), loaded on first use so portrait-only workers never pay for it."""
        if self._masker is None:
            self._masker = TextMasker.load(self.model_key, self.settings.data_dir, self.model.device)
        return self._masker

    def edit(self, request: EditRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Apply an edit instruction to a previous result (see `likeness.generation._edits.edit`)."""
        return _edits.edit(self, request, progress)

    def variation(
        self,
        source: Image.Image,
        selfie: Image.Image,
        preset: EffectivePreset,
        seeds: tuple[int, ...] = (0,),
        strength: float = _edits.VARIATION_STRENGTH,
        progress: ProgressFn | None = None,
        *,
        prompt: str = "",
        identity_scale: float | None = None,
    ) -> GenerationResult:
        """Variations of a result: img2img at a moderate strength, one image per seed."""
        return _edits.variation(
            self, source, selfie, preset, seeds, strength, progress, prompt=prompt, identity_scale=identity_scale
        )

    def close(self) -> None:
        """Drop the pipelines and free accelerator memory; the engine can't generate afterwards."""
        model = getattr(self, "model", None)
        if model is None:
            return
        del self.model
        self._masker = None
        model.pipe = model.img2img = model.inpaint = None
        model.loras.pipe = None
        gc.collect()
        _free_accelerator_memory()


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


@contextmanager
def _exact_ip_embeds(pipe: Any, embeds: list[torch.Tensor]) -> Iterator[None]:
    """Make the pipeline use `embeds` as given.

    Its `prepare_ip_adapter_image_embeds` repeats given embeddings `batch_size` times, which is right
    for one face and wrong for a batch of different faces (diffusers #9813): every prompt would see
    every face. Shadowing the method on the instance, for this call only, keeps our exact layout.
    """
    pipe.prepare_ip_adapter_image_embeds = lambda *args, **kwargs: embeds
    try:
        yield
    finally:
        del pipe.prepare_ip_adapter_image_embeds


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t)
    return isinstance(exc, oom_types) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()
