"""The validated shape of a request: built once by the bot, stored as-is by the queue, run by the worker.

    args = parse_portrait_args("ghibli wearing a red scarf format:story")     # what the user typed
    args = check_portrait_args(args, max_prompt_chars=400)                 # sizes and ranges (cheap)
    ...                                                                    # the bot's prompt policy here
    spec = portrait_spec(args, presets)                                    # presets and format: PortraitSpec
    edit = edit_spec("make the hair blue", has_mask=False, max_chars=400)  # parsed once: EditSpec

The prompt policy runs between the two steps: after the sizes are known to be sane, before a preset name
is ever echoed back. Nothing downstream validates a spec again: the queue stores it in the job payload, the
worker resolves the preset once and calls the engine. Every refusal is a `UserError` fit for the user.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from likeness.errors import BadInstruction, InvalidPresetSpec, PromptTooLong, UserError
from likeness.requests._edits import EditInstruction, parse_instruction
from likeness.requests._formats import get_format
from likeness.requests._grammar import MAX_COUNT, PortraitArgs
from likeness.requests._seeds import SEED_LIMIT

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_SPEC_CHARS",
    "EditSpec",
    "PortraitSpec",
    "PresetResolver",
    "check_instruction",
    "check_portrait_args",
    "edit_spec",
    "portrait_spec",
]

MAX_SPEC_CHARS = 200
"""A preset spec: up to four fused names with weights."""
MAX_PROMPT_CHARS = 4000
"""Upper bound of any prompt setting (`max_prompt_chars` is lower); also what a stored spec may hold."""


class _Resolved(Protocol):
    @property
    def spec(self) -> str: ...


class PresetResolver(Protocol):
    """What validation needs from a preset catalog (`likeness.presets.PresetCatalog`)."""

    def resolve(self, spec: str) -> _Resolved: ...


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PortraitSpec(_Spec):
    """A portrait request, validated: canonical preset spec, free prompt, format name, count, first seed."""

    preset: str = Field(min_length=1, max_length=MAX_SPEC_CHARS, description="Canonical spec: `ghibli:0.7+anime:0.3`")
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    format: str | None = Field(default=None, max_length=32, description="A format name; None: the preset's own")
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description="Images to make, one seed each")
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT, description="The user's first seed; None: random")


class EditSpec(_Spec):
    """An edit request, parsed: where and into what (`EditInstruction`), and whether a painted mask comes."""

    instruction: EditInstruction
    mask_blob_id: str | None = Field(default=None, max_length=128, description="Set by the queue when stored")


def check_portrait_args(args: PortraitArgs, *, max_prompt_chars: int) -> PortraitArgs:
    """The cheap checks of raw portrait args (preset spec present and short, count, seed, prompt length); the
    args back with whitespace trimmed."""
    spec = args.preset.strip()
    if not spec:
        raise InvalidPresetSpec(message="Which style? Write a preset after the command, e.g. `ghibli`. See /presets.")
    if len(spec) > MAX_SPEC_CHARS:
        raise InvalidPresetSpec(message="That style is too long. Write a preset like `ghibli`; see /presets.")
    if not 1 <= args.count <= MAX_COUNT:
        raise UserError(message=f"I can make 1 to {MAX_COUNT} images at a time.")
    if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        raise UserError(message=f"A seed is a number from 0 to {SEED_LIMIT - 1}.")
    prompt = args.prompt.strip()
    limit = min(max_prompt_chars, MAX_PROMPT_CHARS)
    if len(prompt) > limit:
        raise PromptTooLong(length=len(prompt), limit=limit)
    return replace(args, preset=spec, prompt=prompt)


def portrait_spec(args: PortraitArgs, presets: PresetResolver) -> PortraitSpec:
    """Checked args (`check_portrait_args`) resolved against the presets (known names, fusion) and formats."""
    fmt = None if args.format is None else get_format(args.format).name
    resolved = presets.resolve(args.preset).spec
    return PortraitSpec(preset=resolved, prompt=args.prompt, format=fmt, count=args.count, seed=args.seed)


def check_instruction(text: str, *, max_chars: int) -> str:
    """An edit instruction trimmed, refused when over-long (before any policy or parsing sees it)."""
    raw = text.strip()
    limit = min(max_chars, MAX_PROMPT_CHARS)
    if len(raw) > limit:
        raise BadInstruction(message=f"That instruction is {len(raw)} characters long; please keep it under {limit}.")
    return raw


def edit_spec(text: str, *, has_mask: bool, max_chars: int) -> EditSpec:
    """Parse an edit instruction once (`BadInstruction` with examples when it is not understood)."""
    return EditSpec(instruction=parse_instruction(text, has_mask=has_mask, max_chars=min(max_chars, MAX_PROMPT_CHARS)))
