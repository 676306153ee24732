"""Preset schema: what a preset TOML file may say, and the effective preset that generation consumes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from likeness.requests import FORMATS

__all__ = ["EffectivePreset", "GenerationDefaults", "LoraRef", "Preset", "PromptPart", "render_prompt"]

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,31}$"
IDENTITY_BLOCKS = ("down", "mid", "up")
SCHEDULERS = ("default", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc")

Strength = Annotated[float, Field(ge=0.0, le=1.5)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraRef(_Strict):
    """A style LoRA: a hub repo id or a local folder/file, its weight and trigger words."""

    source: str = Field(min_length=1)
    weight_name: str | None = None
    weight: float = Field(0.8, gt=0.0, le=2.0)
    trigger_words: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Identity of the weights (same source + file = same LoRA)."""
        return f"{self.source}::{self.weight_name or ''}"


class GenerationDefaults(_Strict):
    """Numbers a preset chooses for generation; fusion blends them by weight."""

    steps: int = Field(28, ge=1, le=150)
    guidance: float = Field(5.0, ge=0.0, le=30.0)
    identity_strength: Strength = 0.7
    style_strength: Strength = 0.8
    format: str = "square"
    scheduler: str = "default"
    # Optional per-block identity scales, e.g. {"down": 0.5, "mid": 1.0, "up": 0.8}, for style freedom.
    identity_layers: dict[str, float] | None = None
    # Optional best-of-N for styles that tend to lose the likeness; overrides the operator's `best_of`.
    best_of: int | None = Field(default=None, ge=1, le=8)

    @field_validator("identity_layers")
    @classmethod
    def _known_blocks(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(IDENTITY_BLOCKS))
        if unknown:
            raise ValueError(f"unknown UNet block(s) {unknown}; valid: {', '.join(IDENTITY_BLOCKS)}")
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.5}
        if bad:
            raise ValueError(f"scales must be between 0 and 1.5, got {bad}")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; valid: {', '.join(FORMATS)}")
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {value!r}; valid: {', '.join(SCHEDULERS)}")
        return value


class Preset(_Strict):
    """One style preset, as written in a TOML file."""

    name: str = Field(pattern=NAME_RE)
    title: str = Field(min_length=1, max_length=40)
    emoji: str = Field(min_length=1, max_length=8)
    description: str = Field(min_length=1, max_length=140)
    category: str = Field(min_length=1, max_length=24)
    prompt: str = Field(min_length=1, description="Template with {subject} and optional {prompt} slots")
    negative_prompt: str = ""
    defaults: GenerationDefaults = GenerationDefaults()
    loras: tuple[LoraRef, ...] = ()
    style_image: str | None = Field(None, description="Optional style-reference image (path or URL)")

    @field_validator("prompt")
    @classmethod
    def _has_subject(cls, value: str) -> str:
        if "{subject}" not in value:
            raise ValueError("the prompt template must contain {subject}")
        unknown = set(re.findall(r"{(\w*)}", value)) - {"subject", "prompt"}
        if unknown:
            raise ValueError(f"unknown slot(s) {sorted(unknown)}; only {{subject}} and {{prompt}} exist")
        return value

    @field_validator("negative_prompt")
    @classmethod
    def _no_slots(cls, value: str) -> str:
        # Negative prompts are used as written; a slot there would reach the model verbatim.
        if re.search(r"{\w*}", value):
            raise ValueError("the negative prompt is used as written and cannot contain {slots}")
        return value


class PromptPart(_Strict):
    """One weighted prompt of an effective preset (fusion has several, summing to 1)."""

    weight: float
    template: str
    negative: str = ""


class EffectivePreset(_Strict):
    """A preset or a fusion of presets, resolved to exactly what one generation needs."""

    spec: str = Field(description="Canonical spec, e.g. `ghibli` or `ghibli:0.7+headshot:0.3`")
    parts: tuple[tuple[str, float], ...]
    title: str
    emoji: str
    prompts: tuple[PromptPart, ...]
    defaults: GenerationDefaults
    loras: tuple[LoraRef, ...] = ()
    style_image: str | None = None

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> EffectivePreset:
        total = sum(p.weight for p in self.prompts)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"prompt weights must sum to 1, got {total}")
        return self

    @property
    def lora_set(self) -> tuple[tuple[str, float], ...]:
        """Hashable LoRA set (batching key: jobs with the same set can share one diffusers call)."""
        return tuple(sorted((lora.key, round(lora.weight, 4)) for lora in self.loras))

    def render(self, subject: str, user_prompt: str = "", framing: str = "") -> list[tuple[float, str, str]]:
        """(weight, prompt, negative) per part: LoRA trigger words, the filled template, the framing.

        Trigger words lead because CLIP keeps only the first 77 tokens; framing words close the prompt.
        """
        # Two LoRAs may share a trigger word; saying it twice only costs tokens.
        triggers = ", ".join(dict.fromkeys(w.strip() for lora in self.loras for w in lora.trigger_words if w.strip()))
        rendered = []
        for part in self.prompts:
            text = render_prompt(part.template, subject, user_prompt)
            prompt = ", ".join(x for x in (triggers, text, framing.strip()) if x)
            rendered.append((part.weight, prompt, part.negative))
        return rendered

    def describe(self) -> str:
        """Human label, e.g. `🍃 Ghibli` or `🍃 Ghibli 70% + 💼 Headshot 30%`."""
        return self.title


def render_prompt(template: str, subject: str, user_prompt: str = "") -> str:
    """Fill `{subject}` and `{prompt}` into a comma-separated template.

    An empty user prompt drops the comma-separated fragment holding `{prompt}` (or, when that fragment
    also holds `{subject}`, just the slot), so no dangling commas or words remain. A template without
    `{prompt}` gets the user prompt appended at the end.
    """
    # Stray commas and line breaks in the user's text would leave empty fragments (", ,").
    user_prompt = ", ".join(p for p in (" ".join(frag.split()) for frag in user_prompt.split(",")) if p)
    out = []
    for frag in template.split(","):
        if "{prompt}" in frag and not user_prompt and "{subject}" not in frag:
            continue
        # One pass, so text inside the user prompt is never taken for a slot.
        frag = _SLOT_RE.sub(lambda m: subject if m.group(1) == "subject" else user_prompt, frag)
        frag = " ".join(frag.split())
        if frag:
            out.append(frag)
    if user_prompt and "{prompt}" not in template:
        out.append(user_prompt)
    return ", ".join(out)


_SLOT_RE = re.compile(r"{(subject|prompt)}")
