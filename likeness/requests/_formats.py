"""Output formats: an aspect ratio plus framing words, mapped to a model family's native buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from likeness.errors import UnknownFormat, echo

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
        Format("portrait", 2 / 3, "tall portrait composition, head to waist", "2:3 poster"),
        Format("landscape", 3 / 2, "landscape composition, subject in the foreground", "3:2 photo print"),
        Format("banner", 3.0, "ultra-wide panoramic banner, subject on one side", "3:1 header banner"),
    )
}


def get_format(name: str) -> Format:
    """Look up a format by name (case-insensitive) or raise `UnknownFormat` naming the valid ones."""
    try:
        return FORMATS[name.strip().lower()]
    except KeyError:
        raise UnknownFormat(name=echo(name), valid=", ".join(FORMATS)) from None


def size_for(fmt: Format | str, base: int, multiple: int = 64) -> tuple[int, int]:
    """(width, height), both multiples of `multiple`, near the format's aspect and `base`² pixels.

    Picks the candidate with the smallest combined aspect and pixel-count error (aspect counts double,
    since a squashed portrait shows; the pixel count only has to stay near what the model was trained
    on). With SDXL (base 1024) this gives its training buckets (1024², 896×1152, 768×1344, 1344×768,
    1728×576, ...); with SD1.5 (base 512) the usual 512², 448×576, ...
    """
    if base <= 0 or multiple <= 0:
        raise ValueError(f"base and multiple must be positive, got base={base}, multiple={multiple}")
    aspect = (get_format(fmt) if isinstance(fmt, str) else fmt).aspect
    target_height = base / math.sqrt(aspect)
    best: tuple[float, int, int] | None = None
    # Heights from half to twice the ideal cover every sensible candidate, even for tiny bases.
    for steps in range(max(1, math.floor(target_height / 2 / multiple)), math.ceil(target_height * 2 / multiple) + 1):
        height = steps * multiple
        width = max(multiple, round(height * aspect / multiple) * multiple)
        cost = 2 * abs(math.log(width / height / aspect)) + abs(math.log(width * height / (base * base)))
        if best is None or cost < best[0]:
            best = (cost, width, height)
    assert best is not None  # the range above is never empty
    return best[1], best[2]
