"""Edits of a result: inpaint a region chosen by text or by the user's mask, global looks, variations.

All three reuse the engine's loaded weights (its img2img/inpaint pipelines are derived with `from_pipe`
after the identity adapter was loaded), keep the identity adapter active with the user's selfie, and keep
the preset's style LoRAs. Inpainting composites the source back, so pixels outside the (grown) mask are
byte-identical to the source.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import torch
from PIL import Image

from likeness.generation._accelerator import service_errors
from likeness.generation._clipseg import TextMasker
from likeness.generation._faces import Face, FaceAnalysis
from likeness.generation._identity import SelfieFaces, identity_embeds, identity_metadata
from likeness.generation._loading import LoadedModel, make_scheduler
from likeness.generation._masks import EditMask, MaskProvider, composite, mask_from_probabilities, mask_from_user_image
from likeness.generation._plans import Plan, plan_for
from likeness.generation._prompts import PromptEmbeds, encode_parts, render_parts
from likeness.generation._registry import ModelSpec
from likeness.generation._types import EditRequest, GenerationResult, PortraitRequest, ProgressFn
from likeness.presets import EffectivePreset


class EditEngine(Protocol):
    """What edits need of the engine that runs them (`EditEngine`)."""

    spec: ModelSpec
    model: LoadedModel
    model_key: str
    faces: SelfieFaces

    @property
    def masker(self) -> TextMasker: ...

    @property
    def img2img(self) -> Any: ...

    @property
    def inpaint(self) -> Any: ...

    def score(self, reference: Face, image: Image.Image) -> float | None: ...


__all__ = ["VARIATION_STRENGTH", "EditEngine", "edit", "variation"]

log = logging.getLogger(__name__)

VARIATION_STRENGTH = 0.55
# A region whose grown bounding box is under this share of the picture is inpainted on a crop around it
# (`padding_mask_crop`), at the full working resolution: small things (eyes, glasses) get real detail.
_CROP_BELOW = 0.3
_CROP_PADDING = 0.06  # × short side


def edit(
    engine: EditEngine, request: EditRequest, progress: ProgressFn | None = None, *, masker: MaskProvider | None = None
) -> GenerationResult:
    """Apply `request.instruction` to `request.source`, one image per seed.

    Inpaint edits change only the masked region (text-prompted with `masker`, default the engine's
    CLIPSeg, or the user's mask); global looks redraw the whole image at low strength, keeping its size.
    Raises `EmptyMask` when the region is missing or covers everything, `OutOfMemory`/`GenerationFailed`
    like portraits.
    """
    instruction = request.instruction
    source = request.source.convert("RGB")
    strength = _strength(instruction.strength if request.strength is None else request.strength)
    with service_errors(batch=len(request.seeds)):
        face = engine.faces.analyze(request.selfie)  # NoFace/FaceTooSmall first: before any masking work
    mask: EditMask | None = None
    if request.mask is not None:
        mask = mask_from_user_image(request.mask, source.size, grow=instruction.grow)
    elif instruction.kind == "inpaint":
        with service_errors(batch=1):
            provider = masker if masker is not None else engine.masker
            probs = provider(source, instruction.queries)
        # Inverted regions (background) are found as what they are not: name that in errors.
        label = " and ".join(instruction.queries) if instruction.invert else instruction.region.replace("_", " ")
        mask = mask_from_probabilities(probs, label=label, invert=instruction.invert, grow=instruction.grow)
    images, meta = _generate(
        engine,
        source=source,
        face=face,
        preset=request.preset,
        user_prompt=instruction.prompt,
        extra_negative=instruction.negative,
        seeds=request.seeds,
        strength=strength,
        identity_scale=request.identity_scale,
        mask=mask,
        progress=progress,
    )
    meta.update(
        kind="edit",
        instruction=instruction.text,
        edit_kind="global" if mask is None else "inpaint",
        region=instruction.region if request.mask is None else "mask",
        action=instruction.action,
        edit_prompt=instruction.prompt,
        mask_source=None if mask is None else ("user" if request.mask is not None else "text"),
        mask_coverage=None if mask is None else round(mask.coverage, 4),
    )
    return _finish(engine, face, images, list(request.seeds), meta)


def variation(
    engine: EditEngine,
    source: Image.Image,
    selfie: Image.Image,
    preset: EffectivePreset,
    seeds: tuple[int, ...] = (0,),
    strength: float = VARIATION_STRENGTH,
    progress: ProgressFn | None = None,
    *,
    prompt: str = "",
    identity_scale: float | None = None,
) -> GenerationResult:
    """Variations of `source`: img2img at a moderate `strength` with new seeds (one image per seed).

    `prompt` is the user's prompt of the parent, so the variation keeps describing the same picture.
    """
    with service_errors(batch=len(seeds)):
        face = engine.faces.analyze(selfie)
    images, meta = _generate(
        engine,
        source=source.convert("RGB"),
        face=face,
        preset=preset,
        user_prompt=prompt,
        extra_negative="",
        seeds=seeds,
        strength=_strength(strength),
        identity_scale=identity_scale,
        mask=None,
        progress=progress,
    )
    meta.update(kind="variation")
    return _finish(engine, face, images, list(seeds), meta)


# --- internals --------------------------------------------------------------------------------------


def _finish(
    engine: EditEngine, face: FaceAnalysis, images: list[Image.Image], seeds: list[int], meta: dict[str, Any]
) -> GenerationResult:
    """The one place edit and variation results are assembled: likeness scores and face notices join here."""
    meta.update(identity_metadata(face, [engine.score(face.face, image) for image in images]))
    return GenerationResult(images=images, seeds=seeds, metadata=meta)


def _strength(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"strength must be within (0, 1], got {value}")
    return float(value)


def _generate(
    engine: EditEngine,
    *,
    source: Image.Image,
    face: FaceAnalysis,
    preset: EffectivePreset,
    user_prompt: str,
    extra_negative: str,
    seeds: tuple[int, ...],
    strength: float,
    identity_scale: float | None,
    mask: EditMask | None,
    progress: ProgressFn | None,
) -> tuple[list[Image.Image], dict[str, Any]]:
    """Run img2img (mask None) or inpaint over `source`; returns images at the source's size and metadata."""
    # The portrait plan gives this preset's steps, guidance, scheduler, identity scale and LoRAs.
    plan = plan_for(
        engine.spec,
        PortraitRequest(
            selfie=face.crop, preset=preset, prompt=user_prompt, seeds=seeds, identity_scale=identity_scale
        ),
    )
    parts = [
        (w, p, f"{n}, {extra_negative}" if n and extra_negative else n or extra_negative)
        for w, p, n in render_parts(preset, user_prompt, "")
    ]
    work_size = _work_size(source.size, engine.spec.multiple, engine.spec.base)
    # img2img runs ~steps × strength steps: keep at least one.
    steps = max(plan.steps, math.ceil(1.0 / strength))
    padding = None
    if mask is not None and mask.bbox_fraction() < _CROP_BELOW:
        padding = max(8, round(_CROP_PADDING * min(work_size)))
    with service_errors(batch=len(seeds)), torch.inference_mode():
        generated = _run(engine, plan, parts, source, face, seeds, strength, steps, work_size, mask, padding, progress)
    if mask is None:
        images = [
            img if img.size == source.size else img.resize(source.size, Image.Resampling.LANCZOS) for img in generated
        ]
    else:
        images = [composite(source, img, mask) for img in generated]
    main = max(parts, key=lambda part: part[0])
    meta: dict[str, Any] = {
        "model": engine.model_key,
        "preset": preset.spec,
        "prompt": main[1],
        "negative_prompt": main[2],
        "user_prompt": user_prompt,
        "width": source.width,
        "height": source.height,
        "steps": steps,
        "strength": strength,
        "guidance": plan.guidance,
        "scheduler": plan.scheduler,
        "identity_scale": plan.identity_scale,
        "identity_layers": dict(plan.layer_scales) or None,
        "loras": [
            {"source": lora.source, "weight_name": lora.weight_name, "weight": lora.weight} for lora in plan.loras
        ],
        "identity_adapter": engine.spec.identity_adapter.kind,
        "padding_mask_crop": padding,
    }
    return images, meta


def _run(
    engine: EditEngine,
    plan: Plan,
    parts: list[tuple[float, str, str]],
    source: Image.Image,
    face: FaceAnalysis,
    seeds: tuple[int, ...],
    strength: float,
    steps: int,
    work_size: tuple[int, int],
    mask: EditMask | None,
    padding: int | None,
    progress: ProgressFn | None,
) -> list[Image.Image]:
    model = engine.model
    pipe = engine.img2img if mask is None else engine.inpaint
    device = model.device
    guided = plan.guidance > 1.0
    # 1. Style and identity strength, exactly as for portraits (the pipelines share every module).
    model.loras.activate(plan.loras)
    pipe.scheduler = make_scheduler(plan.scheduler, model.base_scheduler)
    pipe.set_ip_adapter_scale(plan.ip_scale())
    # 2. Text embeddings for one image ([negative, positive] under guidance); identity per call below.
    embeds: PromptEmbeds = encode_parts(pipe, engine.spec.family, parts, device, guided)
    # 3. Calls: img2img takes all seeds at once. Inpainting encodes the one source image with the first
    #    generator only, so a batched seed would not reproduce alone (a reroll must): one call per seed.
    calls = [seeds] if mask is None else [(seed,) for seed in seeds]
    image = source if source.size == work_size else source.resize(work_size, Image.Resampling.LANCZOS)
    kwargs: dict[str, Any] = {}
    if mask is not None:
        mask_image = mask.image()
        if mask_image.size != work_size:
            mask_image = mask_image.resize(work_size, Image.Resampling.NEAREST)
        kwargs = {"mask_image": mask_image, "width": work_size[0], "height": work_size[1], "padding_mask_crop": padding}
    images: list[Image.Image] = []
    for index, call_seeds in enumerate(calls):
        n = len(call_seeds)

        def on_step_end(
            pipeline: Any, step: int, timestep: Any, kw: dict[str, Any], index: int = index
        ) -> dict[str, Any]:
            if progress is not None:
                per_call = getattr(pipeline, "num_timesteps", steps)
                progress(index * per_call + step + 1, per_call * len(calls))
            return kw

        # 4. Denoise from the source (img2img) or inside the mask (inpaint), at a size the model can take.
        with identity_embeds(pipe, engine.spec.identity_adapter.kind, [face] * n, device, guided) as ip_embeds:
            output = pipe(
                **embeds.repeat(n).pipeline_kwargs(engine.spec.family),
                image=image,
                strength=strength,
                ip_adapter_image_embeds=ip_embeds,
                num_inference_steps=steps,
                guidance_scale=plan.guidance,
                generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in call_seeds],
                callback_on_step_end=on_step_end,
                output_type="pil",
                **kwargs,
            )
        images += output.images
    return images


def _work_size(size: tuple[int, int], multiple: int, base: int) -> tuple[int, int]:
    """The source size, scaled down to at most 1.5 × base on its long side, in multiples of `multiple`."""
    width, height = size
    scale = min(1.0, 1.5 * base / max(width, height))
    return (
        max(multiple, int(width * scale) // multiple * multiple),
        max(multiple, int(height * scale) // multiple * multiple),
    )
