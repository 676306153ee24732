"""The text grammar of chat commands, shared by every frontend.

    /portrait <preset or fusion> [free prompt] [format:<name>] [n:<count>] [seed:<number>]

`ghibli wearing a red scarf format:story` → preset `ghibli`, prompt `wearing a red scarf`, format `story`.
Options may appear anywhere as `key:value` or `key=value`. The preset is the first word; fusions are
written without spaces (`ghibli+headshot`, `ghibli:0.7+headshot:0.3`). `seed:` takes the number a caption
shows, to make that picture again. Discord passes the same fields as slash-command options and skips the
parsing. What comes out is raw user input (`PortraitArgs`); `portrait_spec` validates it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from likeness.errors import InvalidPresetSpec, UserError
from likeness.requests._seeds import SEED_LIMIT

__all__ = ["MAX_COUNT", "PortraitArgs", "parse_portrait_args", "parse_seed", "split_command"]

MAX_COUNT = 4
_OPTION_RE = re.compile(r"(?<!\S)(format|n|count|seed)\s*[:=]\s*(\S+)", re.IGNORECASE)
_DANGLING_RE = re.compile(r"(?<!\S)(format|n|count|seed)\s*[:=]\s*$", re.IGNORECASE)  # an option without a value
_COMMAND_RE = re.compile(r"^/(\w+)(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PortraitArgs:
    """What a user asked for, as typed; `portrait_spec` checks it against presets and limits."""

    preset: str
    prompt: str = ""
    format: str | None = None
    count: int = 1
    seed: int | None = None


def split_command(text: str) -> tuple[str, str] | None:
    """`/portrait@MyBot ghibli ...` → (`portrait`, `ghibli ...`); None if `text` is not a command."""
    match = _COMMAND_RE.match(text.strip())
    if not match:
        return None
    return match.group(1).lower(), (match.group(2) or "").strip()


def parse_portrait_args(text: str) -> PortraitArgs:
    """Parse the argument text of /portrait (see module docstring)."""
    fmt: str | None = None
    count, seed = 1, None
    if dangling := _DANGLING_RE.search(text):
        raise UserError(message=f"`{dangling.group(1).lower()}:` needs a value, e.g. `format:story` or `n:2`.")
    for key, value in _OPTION_RE.findall(text):
        if key.lower() == "format":
            fmt = value.lower()
        elif key.lower() == "seed":
            seed = parse_seed(value)
        else:
            count = _parse_count(value)
    rest = _OPTION_RE.sub(" ", text).split()
    if not rest:
        raise InvalidPresetSpec(
            message="Which style? Write a preset after the command, e.g. `/portrait ghibli`. See /presets."
        )
    return PortraitArgs(preset=rest[0], prompt=" ".join(rest[1:]), format=fmt, count=count, seed=seed)


def parse_seed(value: str | int) -> int:
    """A seed as typed (`seed:1234`, a form field) or sent (a Discord integer option); `UserError` if unusable."""
    try:
        seed = int(value)
    except ValueError:
        raise UserError(message="`seed:` takes the number a caption shows, e.g. `seed:1234`.") from None
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(message=f"A seed is a number from 0 to {SEED_LIMIT - 1}.")
    return seed


def _parse_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise UserError(message=f"`n:` takes a number of images from 1 to {MAX_COUNT}.") from None
    if not 1 <= count <= MAX_COUNT:
        raise UserError(message=f"I can make 1 to {MAX_COUNT} images at a time.")
    return count
