"""GPU side: the generation engine (torch, diffusers). Only workers and local CLI commands import it.

engine = Engine.load(settings)                      # once per process
result = engine.portrait(PortraitRequest(selfie, engine.presets.resolve("ghibli"), seeds=(7,)))
edited = engine.edit(EditRequest(result.images[0], selfie, parse_instruction("make the hair blue"), preset))
more = engine.variation(result.images[0], selfie, preset, seeds=(8, 9))

Every result's metadata carries `likeness_scores` (one % or None per image), `notices` (e.g. several faces)
and, under best-of-N, `best_of` (docs/identity.md). A selfie without a usable face raises `NoFace` /
`FaceTooSmall` from every call.
"""

from likeness.generation._edits import VARIATION_STRENGTH, EditRequest
from likeness.generation._engine import Engine, GenerationResult, LikenessScorer, PortraitRequest, ProgressFn
from likeness.generation._faces import Face, FaceAnalysis, FaceAnalyzer, load_face_analyzer
from likeness.generation._identity import identity_image
from likeness.generation._masks import load_user_mask
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
    "PortraitRequest",
    "ProgressFn",
    "WeightRef",
    "get_model_spec",
    "identity_image",
    "load_face_analyzer",
    "load_model_specs",
    "load_user_mask",
    "required_weights",
]
