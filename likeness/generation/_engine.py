"""The generation engine: selfie + preset → identity-preserving portraits, alone or batched."""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.generation import _edits
from likeness.generation._best_of import Candidate, Selection, needs_retry, retry_identity_strength, select_best
from likeness.generation._clipseg import TextMasker
from likeness.generation._edits import EditRequest
from likeness.generation._errors import free_accelerator_memory, service_errors
from likeness.generation._faces import Face, FaceAnalysis, FaceAnalyzer, load_face_analyzer
from likeness.generation._identity import SelfieFaces, identity_embeds, identity_metadata
from likeness.generation._loading import LoadedModel, load_model, make_scheduler
from likeness.generation._prompts import PromptEmbeds, encode_parts, render_parts
from likeness.generation._registry import FACEID_BACKENDS, ModelSpec, get_model_spec
from likeness.generation._scoring import likeness_score
from likeness.presets import EffectivePreset, LoraRef, PresetCatalog, get_format, size_for

__all__ = ["Engine", "GenerationResult", "LikenessScorer", "PortraitRequest", "ProgressFn"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""`(step, total_steps)`, called from the generating thread after each denoising step."""

LikenessScorer = Callable[[Face, Image.Image], float | None]
"""`(selfie's face, output) -> likeness %` or `None` when the output has no face."""

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
    best_of: int | None = None
    """Candidates per returned image; None: the preset's `best_of`, else `settings.best_of`."""


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

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        model: LoadedModel,
        presets: PresetCatalog,
        faces: FaceAnalyzer,
        scorer: LikenessScorer | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.model_key = spec.key
        self.model = model
        self.presets = presets
        self.faces = SelfieFaces(faces)
        self.scorer: LikenessScorer = scorer or (lambda reference, image: likeness_score(faces, reference, image))
        self._masker: TextMasker | None = None

    @classmethod
    def load(
        cls, settings: Settings, *, face_analyzer: FaceAnalyzer | None = None, scorer: LikenessScorer | None = None
    ) -> Engine:
        """Load `settings.model` with its identity adapter and the face analyzer (slow, once per process).

        `face_analyzer` defaults to `load_face_analyzer(settings)`; `scorer` (likeness of an output to the
        selfie's face) defaults to `likeness_score` with that analyzer. Raises `ConfigError` for an unknown
        model, invalid presets/models file, or a FaceID model without an ArcFace (insightface) analyzer, and
        `ModelUnavailable` when weights can't be loaded. Tiny models are built offline under
        `settings.data_dir` once.
        """
        spec = get_model_spec(settings.model, settings.models_file)
        presets = PresetCatalog.load(settings.presets_dir)
        analyzer = face_analyzer if face_analyzer is not None else load_face_analyzer(settings)
        if spec.identity_adapter.kind == "faceid-plus-v2" and analyzer.backend not in FACEID_BACKENDS:
            raise ConfigError(
                message=f"model {spec.key} uses IP-Adapter FaceID, which needs 512-d ArcFace face embeddings: "
                f"set LIKENESS_FACE_BACKEND=insightface (pip install insightface onnxruntime; its models are "
                f"non-commercial), or pick a plus-face model. The {analyzer.backend} backend can't feed it."
            )
        analyzer.load()  # fail at startup, not on the first selfie
        sources = sorted({lora.source for preset in presets for lora in preset.loras})
        return cls(settings, spec, load_model(settings, spec, sources), presets, analyzer, scorer)

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

        Each output equals `portrait()` of that request alone within one pixel level. With best-of-N
        (`request.best_of`, the preset's or `settings.best_of`) each request's N candidates per image are
        made in the same call, its best ones returned (their seeds in `seeds`); when none of a request's
        candidates reaches `settings.likeness_threshold`, one retry at a higher identity strength follows.
        Raises `NoFace`/`FaceTooSmall` for a selfie without a usable face, `ValueError` if the requests'
        batch keys differ, `OutOfMemory(batch=<images>)` when the accelerator runs out of memory,
        `GenerationFailed` for other failures.
        """
        if not requests:
            return []
        if progress is not None and len(progress) != len(requests):
            raise ValueError("progress must have one entry per request")
        plans = [self._plan(request) for request in requests]
        if any(plan.key != plans[0].key for plan in plans):
            raise ValueError("portrait_batch needs requests with equal batch keys")
        counts = [self._best_of_count(request) for request in requests]
        fns = [fn for fn in (progress or []) if fn is not None]
        n_images = sum(len(r.seeds) * n for r, n in zip(requests, counts, strict=True))
        # no_grad, not inference_mode: LoRA weights loaded here must stay usable by the edit pipelines.
        with service_errors(batch=n_images), torch.no_grad():
            faces = [self.faces.analyze(request.selfie) for request in requests]
            # 1. Every request's candidates in one call (without best-of, its own seeds are the candidates).
            first = [
                replace(request, seeds=_candidate_seeds(request.seeds, n, attempt=1))
                for request, n in zip(requests, counts, strict=True)
            ]
            images = self._run(first, plans, faces, fns)
            outcomes: list[_Outcome] = []
            for request, batched, plan, face, n, tried in zip(
                requests, first, plans, faces, counts, _split(images, first), strict=True
            ):
                if n == 1:
                    scores = [self._score(face.face, image) for image in tried]
                    outcomes.append(_Outcome(tried, list(request.seeds), scores, [plan.identity_scale]))
                    continue
                candidates = [Candidate(image, seed) for image, seed in zip(tried, batched.seeds, strict=True)]
                selection = select_best(candidates, self._scorer_for(face.face), keep=len(request.seeds))
                outcomes.append(_Outcome.best_of(selection, [plan.identity_scale]))
            # 2. One retry, at a higher identity strength, for requests whose candidates all fell short.
            retry = [
                i
                for i, outcome in enumerate(outcomes)
                if outcome.selection is not None
                and needs_retry(outcome.selection.scores, self.settings.likeness_threshold)
            ]
            if retry:
                retried = self._retry(
                    [requests[i] for i in retry],
                    [plans[i] for i in retry],
                    [faces[i] for i in retry],
                    [counts[i] for i in retry],
                    [outcomes[i] for i in retry],
                    fns,
                )
                for i, outcome in zip(retry, retried, strict=True):
                    outcomes[i] = outcome
        return [
            GenerationResult(
                images=outcome.images,
                seeds=outcome.seeds,
                metadata=self._metadata(request, plan, face, outcome, n),
            )
            for request, plan, face, outcome, n in zip(requests, plans, faces, outcomes, counts, strict=True)
        ]

    def _retry(
        self,
        requests: list[PortraitRequest],
        plans: list[_Plan],
        faces: list[FaceAnalysis],
        counts: list[int],
        outcomes: list[_Outcome],
        progress: list[ProgressFn],
    ) -> list[_Outcome]:
        """Second best-of try for these requests: their new outcomes, picked from both tries' candidates.

        Batch-mates share an identity scale, so their raised scales match too; requests whose raised
        plans differ anyway (per-block scales of different presets) run in separate calls.
        """
        groups: dict[Hashable, list[int]] = {}
        again: list[PortraitRequest] = []
        again_plans: list[_Plan] = []
        for i, (request, plan, n) in enumerate(zip(requests, plans, counts, strict=True)):
            raised = replace(
                request,
                seeds=_candidate_seeds(request.seeds, n, attempt=2),
                identity_scale=retry_identity_strength(plan.identity_scale),
            )
            again.append(raised)
            again_plans.append(self._plan(raised))
            groups.setdefault(again_plans[-1].key, []).append(i)
        retried = list(outcomes)
        for members in groups.values():
            batch = [again[i] for i in members]
            images = self._run(batch, [again_plans[i] for i in members], [faces[i] for i in members], progress)
            for i, tried in zip(members, _split(images, batch), strict=True):
                outcome, face = outcomes[i], faces[i]
                assert outcome.selection is not None
                selection = select_best(
                    [Candidate(image, seed) for image, seed in zip(tried, again[i].seeds, strict=True)],
                    self._scorer_for(face.face),
                    keep=len(requests[i].seeds),
                    earlier=outcome.selection,
                )
                retried[i] = _Outcome.best_of(selection, [*outcome.strengths, again_plans[i].identity_scale])
        return retried

    def _scorer_for(self, reference: Face) -> Callable[[Image.Image], float | None]:
        return lambda image: self._score(reference, image)

    def _score(self, reference: Face, image: Image.Image) -> float | None:
        """Likeness of `image` to the selfie's face; a scoring failure must not lose the images (None)."""
        try:
            return self.scorer(reference, image)
        except Exception:
            log.warning("likeness scoring failed; reporting n/a", exc_info=True)
            return None

    def _best_of_count(self, request: PortraitRequest) -> int:
        n = next(v for v in (request.best_of, request.preset.defaults.best_of, self.settings.best_of) if v is not None)
        if not 1 <= n <= 8:
            raise ValueError(f"best_of must be within 1..8, got {n}")
        return n

    def _run(
        self,
        requests: list[PortraitRequest],
        plans: list[_Plan],
        faces: list[FaceAnalysis],
        progress: list[ProgressFn],
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
        # 3. Identity: each request's own face (crop, and ArcFace embedding for FaceID), once per seed.
        per_image = [face for request, face in zip(requests, faces, strict=True) for _ in request.seeds]
        # 4. Noise: one generator per image, so a seed gives the same image alone or batched.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for r in requests for seed in r.seeds]

        def on_step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipeline, "num_timesteps", plan.steps)
            for fn in progress:
                fn(step + 1, total)
            return kwargs

        # 5. Denoise and decode.
        with identity_embeds(pipe, self.spec.identity_adapter.kind, per_image, device, guided) as ip:
            output = pipe(
                **embeds.pipeline_kwargs(self.spec.family),
                ip_adapter_image_embeds=ip,
                num_inference_steps=plan.steps,
                guidance_scale=plan.guidance,
                width=plan.width,
                height=plan.height,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
            )
        return list(output.images)

    def _metadata(
        self, request: PortraitRequest, plan: _Plan, face: FaceAnalysis, outcome: _Outcome, best_of: int
    ) -> dict[str, Any]:
        main = max(plan.parts, key=lambda part: part[0])
        meta: dict[str, Any] = {
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
            "identity_adapter": self.spec.identity_adapter.kind,
            "identity_scale": outcome.identity_scales[0],
            "identity_layers": dict(plan.layer_scales) or None,
            "loras": [
                {"source": lora.source, "weight_name": lora.weight_name, "weight": lora.weight} for lora in plan.loras
            ],
            "seeds": list(outcome.seeds),
        }
        meta.update(identity_metadata(face, outcome.scores))
        if outcome.selection is not None:
            meta["identity_scales"] = outcome.identity_scales
            meta["best_of"] = {
                **outcome.selection.record.as_metadata(),
                "per_image": best_of,
                "identity_strengths": outcome.strengths,
                "threshold": self.settings.likeness_threshold,
            }
        return meta

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
        model.loras.close()
        gc.collect()
        free_accelerator_memory()


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


@dataclass
class _Outcome:
    """What one request gets back: images and seeds (chosen ones under best-of), scores, identity strengths."""

    images: list[Image.Image]
    seeds: list[int]
    scores: list[float | None]
    strengths: list[float]  # identity strength of each try
    selection: Selection[Image.Image] | None = None
    identity_scales: list[float] = field(default_factory=list)  # per returned image

    def __post_init__(self) -> None:
        if not self.identity_scales:
            self.identity_scales = [self.strengths[0]] * len(self.images)

    @classmethod
    def best_of(cls, selection: Selection[Image.Image], strengths: list[float]) -> _Outcome:
        chosen = selection.chosen
        return cls(
            images=[c.image for c in chosen],
            seeds=[c.seed for c in chosen],
            scores=[c.score for c in chosen],
            strengths=strengths,
            selection=selection,
            identity_scales=[strengths[c.attempt - 1] for c in chosen],
        )


def _split(images: list[Image.Image], requests: Sequence[PortraitRequest]) -> list[list[Image.Image]]:
    """A batch's images, back to the requests that asked for them (one per seed, in order)."""
    out, start = [], 0
    for request in requests:
        out.append(images[start : start + len(request.seeds)])
        start += len(request.seeds)
    return out


def _candidate_seeds(seeds: tuple[int, ...], n: int, *, attempt: int) -> tuple[int, ...]:
    """`n` candidate seeds per asked seed, derived from the asked ones so the same request repeats itself.

    The first try starts with the asked seeds themselves (best-of-1 is the plain request); further
    candidates and the retry's get seeds hashed from (asked seeds, try, index), in 0..2**63-1.
    """
    if n == 1 and attempt == 1:
        return seeds
    base = list(seeds) if attempt == 1 else []
    extra = len(seeds) * n - len(base)
    salt = ",".join(map(str, seeds))
    derived = [
        int.from_bytes(hashlib.blake2b(f"{salt}|{attempt}|{i}".encode(), digest_size=8).digest(), "big") >> 1
        for i in range(extra)
    ]
    return tuple(base + derived)
