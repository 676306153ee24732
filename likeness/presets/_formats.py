"""Output formats: an aspect ratio plus framing words, mapped to a model family's native buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from likeness.errors import UnknownFormat

__all__ = ["FORMATS", "Format", "get_format", "size_for"]


@dataclass(frozen=True, slots=True)
class Format:
    """A named output shape. `aspect` is width / height."""

    name: str
    aspect: float
    framing: str
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("square", 1.0, "centered portrait", "1:1, the default"),
        Format(
            "linkedin", 1.0, "professional head-and-shoulders headshot, centered, clean background", "1:1 profile photo"
        ),
        Format("instagram", 4 / 5, "portrait composition, head and upper body", "4:5 feed post"),
        Format("story", 9 / 16, "vertical full-height composition, subject in the middle third", "9:16 story / reel"),
        Format("youtube", 16 / 9, "wide cinematic shot, subject off-center, space for a title", "16:9 thumbnail"),
        Format("banner", 3.0, "ultra-wide panoramic banner, subject on one side", "3:1 header banner"),
    )
}


def get_format(name: str) -> Format:
    """Look up a format by name (case-insensitive) or raise `UnknownFormat` naming the valid ones."""
    try:
        return FORMATS[name.strip().lower()]
    except KeyError:
        raise UnknownFormat(name=name, valid=", ".join(FORMATS)) from None


def size_for(fmt: Format | str, base: int, multiple: int = 64) -> tuple[int, int]:
    """(width, height) with about `base`² pixels, the format's aspect, both sides multiples of `multiple`.

    With SDXL (base 1024) this gives its training buckets (1024², 896×1152, 768×1344, 1344×768, ...);
    with SD1.5 (base 512) the usual 512², 448×576, ...
    """
    aspect = (get_format(fmt) if isinstance(fmt, str) else fmt).aspect
    width = math.sqrt(base * base * aspect)
    height = width / aspect
    return _snap(width, multiple), _snap(height, multiple)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
