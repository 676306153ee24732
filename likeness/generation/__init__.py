"""GPU side: the generation engine (torch, diffusers). Only workers and local CLI commands import it.

engine = Engine.load(settings)                      # once per process
result = engine.portrait(PortraitRequest(selfie, engine.presets.resolve("ghibli"), seeds=(7,)))
edited = engine.edit(EditRequest(result.images[0], selfie, parse_instruction("make the hair blue"), preset))
more = engine.variation(result.images[0], selfie, preset, seeds=(8, 9))
"""

from likeness.generation._edits import VARIATION_STRENGTH, EditRequest
from likeness.generation._engine import Engine, GenerationResult, PortraitRequest, ProgressFn
from likeness.generation._identity import identity_image
from likeness.generation._masks import load_user_mask
from likeness.generation._registry import (
    BUILTIN_MODELS,
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
    "VARIATION_STRENGTH",
    "EditRequest",
    "Engine",
    "GenerationResult",
    "IdentityAdapter",
    "ImageEncoder",
    "ModelSpec",
    "PortraitRequest",
    "ProgressFn",
    "WeightRef",
    "get_model_spec",
    "identity_image",
    "load_model_specs",
    "load_user_mask",
    "required_weights",
]
