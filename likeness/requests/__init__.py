"""What a user can ask for, validated once: the portrait and edit grammars, formats, the seed rule, and the
specs that the bot builds, the queue stores as-is and the worker runs. Torch-free, I/O-free.

    args = check_portrait_args(parse_portrait_args("ghibli wearing a red scarf seed:42"), max_prompt_chars=400)
    spec = portrait_spec(args, presets)                           # -> PortraitSpec (or a UserError)
    edit = edit_spec("make the hair blue", has_mask=False, max_chars=400)
"""

from likeness.requests._edits import EXAMPLES, REGIONS, EditInstruction, Region, parse_instruction
from likeness.requests._formats import FORMATS, Format, get_format, size_for
from likeness.requests._grammar import MAX_COUNT, PortraitArgs, parse_portrait_args, parse_seed, split_command
from likeness.requests._seeds import SEED_LIMIT, candidate_seeds, request_seeds
from likeness.requests._specs import (
    MAX_PROMPT_CHARS,
    MAX_SPEC_CHARS,
    EditSpec,
    PortraitSpec,
    PresetResolver,
    check_instruction,
    check_portrait_args,
    edit_spec,
    portrait_spec,
)

__all__ = [
    "EXAMPLES",
    "FORMATS",
    "MAX_COUNT",
    "MAX_PROMPT_CHARS",
    "MAX_SPEC_CHARS",
    "REGIONS",
    "SEED_LIMIT",
    "EditInstruction",
    "EditSpec",
    "Format",
    "PortraitArgs",
    "PortraitSpec",
    "PresetResolver",
    "Region",
    "candidate_seeds",
    "check_instruction",
    "check_portrait_args",
    "edit_spec",
    "get_format",
    "parse_instruction",
    "parse_portrait_args",
    "parse_seed",
    "portrait_spec",
    "request_seeds",
    "size_for",
    "split_command",
]
