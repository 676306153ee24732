"""The text grammar of chat commands, shared by every frontend.

    /portrait <preset or fusion> [free prompt] [format:<name>] [n:<count>]

`ghibli wearing a red scarf format:story` → preset `ghibli`, prompt `wearing a red scarf`, format `story`.
Options may appear anywhere as `key:value` or `key=value`. The preset is the first word; fusions are
written without spaces (`ghibli+headshot`, `ghibli:0.7+headshot:0.3`). Discord passes the same fields as
slash-command options and skips the parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from likeness.errors import InvalidPresetSpec, UserError

__all__ = ["MAX_COUNT", "PortraitArgs", "parse_portrait_args", "split_command"]

MAX_COUNT = 4
_OPTION_RE = re.compile(r"(?<!\S)(format|n|count)\s*[:=]\s*(\S+)", re.IGNORECASE)
_DANGLING_RE = re.compile(r"(?<!\S)(format|n|count)\s*[:=]\s*$", re.IGNORECASE)  # an option left without a value
_COMMAND_RE = re.compile(r"^/(\w+)(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PortraitArgs:
    """What a user asked for; checked against presets and limits by the core."""

    preset: str
    prompt: str = ""
    format: str | None = None
    count: int = 1


def split_command(text: str) -> tuple[str, str] | None:
    """`/portrait@MyBot ghibli ...` → (`portrait`, `ghibli ...`); None if `text` is not a command."""
    match = _COMMAND_RE.match(text.strip())
    if not match:
        return None
    return match.group(1).lower(), (match.group(2) or "").strip()


def parse_portrait_args(text: str) -> PortraitArgs:
    """Parse the argument text of /portrait (see module docstring)."""
    fmt: str | None = None
    count = 1
    if dangling := _DANGLING_RE.search(text):
        raise UserError(message=f"`{dangling.group(1).lower()}:` needs a value, e.g. `format:story` or `n:2`.")
    for key, value in _OPTION_RE.findall(text):
        if key.lower() == "format":
            fmt = value.lower()
        else:
            count = _parse_count(value)
    rest = _OPTION_RE.sub(" ", text).split()
    if not rest:
        raise InvalidPresetSpec(
            message="Which style? Write a preset after the command, e.g. `/portrait ghibli`. See /presets."
        )
    return PortraitArgs(preset=rest[0], prompt=" ".join(rest[1:]), format=fmt, count=count)


def _parse_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise UserError(message=f"`n:` takes a number of images from 1 to {MAX_COUNT}.") from None
    if not 1 <= count <= MAX_COUNT:
        raise UserError(message=f"I can make 1 to {MAX_COUNT} images at a time.")
    return count
