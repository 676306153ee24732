"""Style presets as data: schema, built-in TOML files, operator overrides, fusion and output formats.

Imported by the bots and the workers alike, so it never imports torch.
"""

from likeness.presets._catalog import MAX_FUSION_PARTS, PresetCatalog, load_preset_file
from likeness.presets._formats import FORMATS, Format, get_format, size_for
from likeness.presets._schema import EffectivePreset, GenerationDefaults, LoraRef, Preset, PromptPart, render_prompt

__all__ = [
    "FORMATS",
    "MAX_FUSION_PARTS",
    "EffectivePreset",
    "Format",
    "GenerationDefaults",
    "LoraRef",
    "Preset",
    "PresetCatalog",
    "PromptPart",
    "get_format",
    "load_preset_file",
    "render_prompt",
    "size_for",
]
