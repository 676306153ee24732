"""Style presets as data: schema, built-in TOML files, operator overrides, fusion (formats: `likeness.requests`).

Imported by the bots and the workers alike, so it never imports torch.
"""

from likeness.presets._catalog import MAX_FUSION_PARTS, PresetCatalog, load_preset_file
from likeness.presets._schema import EffectivePreset, GenerationDefaults, LoraRef, Preset, PromptPart, render_prompt

__all__ = [
    "MAX_FUSION_PARTS",
    "EffectivePreset",
    "GenerationDefaults",
    "LoraRef",
    "Preset",
    "PresetCatalog",
    "PromptPart",
    "load_preset_file",
    "render_prompt",
]
