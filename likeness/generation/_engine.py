"""The generation engine: selfie + preset → identity-preserving portraits, alone or batched."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.generation import _edits
from likeness.generation._accelerator import free_accelerator_memory, service_errors
from likeness.generation._best_of import Candidate, Selection, needs_retry, retry_identity_strength, select_best
from likeness.generation._clipseg import TextMasker
from likeness.generation._face_backends import load_face_analyzer
from likeness.generation._faces import Face, FaceAnalysis, FaceAnalyzer
from likeness.generation._identity import SelfieFaces, identity_embeds, identity_metadata
from likeness.generation._loading import LoadedModel, load_model, make_scheduler
from likeness.generation._plans import Plan, plan_for
from likeness.generation._prompts import PromptEmbeds, encode_parts
from likeness.generation._registry import FACEID_BACKENDS, ModelSpec, get_model_spec
from likeness.generation._scoring import likeness_score
from likeness.generation._types import EditRequest, Engine, GenerationResult, PortraitRequest, ProgressFn
from likeness.presets import EffectivePreset, PresetCatalog
from likeness.requests import candidate_seeds

__all__ = ["LikenessScorer", "StableDiffusionEngine", "load_engine"]

log = logging.getLogger(__name__)

LikenessScorer = Callable[[Face, Image.Image], float | None]
"""`(selfie's face, output) -> likeness %` or `None` when the output has no face."""

_LAYERS = ("down", "mid", "up")


def load_engine(settings: Settings, **options: Any) -> Engine:
    """The engine of `settings.model`'s family, loaded (see `StableDiffusionEngine.load` for `options`)."""
    return StableDiffusionEngine.load(settings, **options)


class StableDiffusionEngine:
    """The SD 1.5 / SDXL family with an IP-Adapter for identity: loads one model once and turns requests into
    images. Implements `Engine`. Not thread-safe: one call at a time."""

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
    ) -> StableDiffusionEngine:
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

    def _plan(self, request: PortraitRequest) -> Plan:
        return plan_for(self.spec, request)

    def batch_key(self, request: PortraitRequest) -> Hashable:
        """Equal keys may share one diffusers call: same LoRAs, size, steps, guidance, scheduler, identity scale."""
        return self._plan(request).key

    # --- generation -----------------------------------------------------------------------------

    def portrait(self, request: PortraitRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Generate one image per seed of `request`."""
        return self.portrait_batch([request], [progress])[0]

    def portrait_batch(
        self, requests: list[PortraitRequest], progress: Sequence[ProgressFn | None] | None = None
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
                replace(request, seeds=candidate_seeds(request.seeds, n, attempt=1))
                for request, n in zip(requests, counts, strict=True)
            ]
            images = self._run(first, plans, faces, fns)
            outcomes: list[_Outcome] = []
            for request, batched, plan, face, n, tried in zip(
                requests, first, plans, faces, counts, _split(images, first), strict=True
            ):
                if n == 1:
                    scores = [self.score(face.face, image) for image in tried]
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
        plans: list[Plan],
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
        again_plans: list[Plan] = []
        for i, (request, plan, n) in enumerate(zip(requests, plans, counts, strict=True)):
            raised = replace(
                request,
                seeds=candidate_seeds(request.seeds, n, attempt=2),
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
        return lambda image: self.score(reference, image)

    def score(self, reference: Face, image: Image.Image) -> float | None:
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
        plans: list[Plan],
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
        self, request: PortraitRequest, plan: Plan, face: FaceAnalysis, outcome: _Outcome, best_of: int
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
