"""Output formats: each maps to a size the model family was trained near, with the format's shape."""

from __future__ import annotations

import math

import pytest

from likeness.errors import UnknownFormat
from likeness.requests import FORMATS, Format, get_format, size_for

# (base, multiple, aspect tolerance as |log ratio|, pixel-count tolerance as a fraction of base²)
FAMILIES = {
    "sdxl": (1024, 64, 0.05, 0.10),
    "sd15": (512, 64, 0.05, 0.20),
    "tiny": (96, 16, 0.10, 0.40),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_sizes_fit_the_family(family: str, name: str) -> None:
    base, multiple, aspect_tol, pixel_tol = FAMILIES[family]
    fmt = FORMATS[name]
    width, height = size_for(name, base, multiple)
    assert width % multiple == 0 and height % multiple == 0
    assert abs(math.log(width / height / fmt.aspect)) <= aspect_tol, (width, height)
    assert abs(width * height / base**2 - 1) <= pixel_tol, (width, height)
    assert size_for(fmt, base, multiple) == (width, height)  # a Format or its name


def test_sdxl_sizes_are_its_training_buckets() -> None:
    # Buckets from the SDXL paper's multi-aspect training (appendix), the ones these formats should hit.
    buckets = {(1024, 1024), (896, 1152), (768, 1344), (1344, 768), (832, 1216), (1216, 832), (1728, 576)}
    for name in ("square", "linkedin", "instagram", "story", "youtube", "banner"):
        assert size_for(name, 1024, 64) in buckets, name


def test_shapes_follow_the_aspect() -> None:
    for name, fmt in FORMATS.items():
        width, height = size_for(name, 1024, 64)
        assert (width > height) == (fmt.aspect > 1) and (width == height) == (fmt.aspect == 1), name


def test_every_format_has_framing_words_and_a_description() -> None:
    for fmt in FORMATS.values():
        assert fmt.framing and "," not in fmt.framing[:1] and fmt.description


def test_lookup_is_case_insensitive() -> None:
    assert get_format(" LinkedIn ") is FORMATS["linkedin"]


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownFormat) as info:
        get_format("poster")
    message = info.value.user_message
    assert "poster" in message
    assert all(name in message for name in FORMATS)
    with pytest.raises(UnknownFormat):
        size_for("poster", 1024)


@pytest.mark.parametrize(("base", "multiple"), [(0, 64), (1024, 0), (-512, 64)])
def test_nonsense_bases_are_refused(base: int, multiple: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        size_for("square", base, multiple)


def test_extreme_aspects_still_give_valid_sizes() -> None:
    for aspect in (0.1, 0.5, 1.0, 2.0, 10.0):
        width, height = size_for(Format("x", aspect, "", ""), 96, 16)
        assert width >= 16 and height >= 16 and width % 16 == 0 and height % 16 == 0
