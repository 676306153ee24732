"""GPU side: the generation engine (torch, diffusers). Only workers and local CLI commands import it.

engine = load_engine(settings)                      # once per process; an `Engine` (the seam, `_types.py`)
result = engine.portrait_batch([PortraitRequest(selfie, engine.presets.resolve("ghibli"), seeds=(7,))])[0]
edited = engine.edit(EditRequest(result.images[0], selfie, parse_instruction("make the hair blue"), preset))
more = engine.variation(result.images[0], selfie, preset, seeds=(8, 9))

Knows no queue and no bot: workers call it (`likeness.worker`), and so do local commands (`likeness generate`).

Every result's metadata carries `likeness_scores` (one % or None per image), `notices` (e.g. several faces)
and, under best-of-N, `best_of` (docs/identity.md). A selfie without a usable face raises `NoFace` /
`FaceTooSmall` from every call.
"""

from likeness.generation._edits import VARIATION_STRENGTH
from likeness.generation._engine import LikenessScorer, StableDiffusionEngine, load_engine
from likeness.generation._face_backends import load_face_analyzer
from likeness.generation._faces import Face, FaceAnalysis, FaceAnalyzer
from likeness.generation._identity import identity_image
from likeness.generation._masks import load_user_mask
from likeness.generation._nsfw import NsfwGuard, load_nsfw_guard
from likeness.generation._output import finish_images
from likeness.generation._registry import (
    BUILTIN_MODELS,
    FACEID_BACKENDS,
    IdentityAdapter,
    ImageEncoder,
    ModelSpec,
    WeightRef,
    get_model_spec,
    load_model_specs,
    required_weights,
)
from likeness.generation._tiny import ensure_tiny_model
from likeness.generation._types import EditRequest, Engine, GenerationResult, PortraitRequest, ProgressFn

__all__ = [
    "BUILTIN_MODELS",
    "FACEID_BACKENDS",
    "VARIATION_STRENGTH",
    "EditRequest",
    "Engine",
    "Face",
    "FaceAnalysis",
    "FaceAnalyzer",
    "GenerationResult",
    "IdentityAdapter",
    "ImageEncoder",
    "LikenessScorer",
    "ModelSpec",
    "NsfwGuard",
    "PortraitRequest",
    "ProgressFn",
    "StableDiffusionEngine",
    "WeightRef",
    "ensure_tiny_model",
    "finish_images",
    "get_model_spec",
    "identity_image",
    "load_engine",
    "load_face_analyzer",
    "load_model_specs",
    "load_nsfw_guard",
    "load_user_mask",
    "required_weights",
]
