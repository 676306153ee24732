"""Property tests over untrusted input: image bytes and preset specs never fail with anything but our errors."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from likeness.errors import InvalidImage, InvalidPresetSpec, UnknownPreset
from likeness.images import load_image, prepare_selfie
from likeness.presets import PresetCatalog
from tests.helpers.image_bytes import animated, exif_bytes, heic, jpeg_with_exif, quadrants, save

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Valid files of every accepted format, cut anywhere by the fuzzer.
SAMPLES = {
    "png": save(quadrants(40, 30), "PNG"),
    "png-rgba": save(quadrants(40, 30).convert("RGBA"), "PNG"),
    "jpeg": save(quadrants(40, 30), "JPEG", quality=90),
    "jpeg-exif": jpeg_with_exif(quadrants(40, 30), orientation=6),
    "jpeg-progressive": save(quadrants(40, 30), "JPEG", quality=90, progressive=True),
    "webp": save(quadrants(40, 30), "WEBP", quality=80),
    "gif": animated("GIF", [(200, 0, 0), (0, 200, 0)], size=(24, 24)),
    "webp-animated": animated("WEBP", [(200, 0, 0), (0, 200, 0)], size=(24, 24)),
    "avif": save(quadrants(40, 30), "AVIF", quality=80),
    "avif-rotated": save(quadrants(40, 30), "AVIF", quality=80, exif=exif_bytes(6)),  # `irot` box
    "avif-alpha": save(quadrants(40, 30).convert("RGBA"), "AVIF", quality=80),
    "heic": heic(quadrants(40, 30), quality=80),  # a `clap` crop box: HEVC codes 64×64
    "heic-rotated": heic(quadrants(40, 30), quality=80, exif=exif_bytes(6)),
}


def check_load(data: bytes) -> None:
    """The property: `InvalidImage` or an RGB image within the limits; nothing else."""
    try:
        img = load_image(data, **LIMITS)
    except InvalidImage as exc:
        assert exc.user_message
        return
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.width >= 16 and img.height >= 16
    assert img.width * img.height <= LIMITS["max_pixels"]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check_load(data)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_truncated_valid_files(kind: str, data: st.DataObject) -> None:
    full = SAMPLES[kind]
    cut = data.draw(st.integers(min_value=0, max_value=len(full)), label="cut")
    check_load(full[:cut])


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_corrupted_valid_files(kind: str, data: st.DataObject) -> None:
    """Flip a few bytes of a valid file (headers included): decoders meet impossible values."""
    buf = bytearray(SAMPLES[kind])
    for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="flips")):
        pos = data.draw(st.integers(min_value=0, max_value=len(buf) - 1), label="pos")
        buf[pos] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    check_load(bytes(buf))


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_prepared_selfies_load_in_the_worker(kind: str, data: st.DataObject) -> None:
    """`prepare_selfie` on damaged uploads: `InvalidImage`, or a JPEG that the worker's `load_image` takes."""
    buf = bytearray(SAMPLES[kind])
    for _ in range(data.draw(st.integers(min_value=0, max_value=4), label="flips")):
        pos = data.draw(st.integers(min_value=0, max_value=len(buf) - 1), label="pos")
        buf[pos] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    try:
        stored = prepare_selfie(bytes(buf), **LIMITS, max_side=32)
    except InvalidImage as exc:
        assert exc.user_message
        return
    img = load_image(stored, **LIMITS)
    assert img.mode == "RGB"
    assert max(img.size) <= 32
    assert min(img.size) >= 16


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "LAB", "HSV"]
SAVE_AS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "avif": "AVIF"}


@FUZZ
@given(
    st.sampled_from(MODES),
    st.integers(min_value=1, max_value=80),
    st.integers(min_value=1, max_value=80),
    st.sampled_from(sorted(SAVE_AS)),
)
def test_random_mode_size_and_format(mode: str, width: int, height: int, fmt: str) -> None:
    try:
        data = save(Image.new(mode, (width, height)), SAVE_AS[fmt])
    except (OSError, ValueError, KeyError):
        return  # Pillow can't write that combination, so no user can send it either
    check_load(data)
    if width >= 16 and height >= 16:  # a well-formed file of a sane size must load
        assert load_image(data, **LIMITS).size == (width, height)


@functools.cache
def catalog() -> PresetCatalog:
    return PresetCatalog.load()


SPEC_PIECES = st.sampled_from(
    ["ghibli", "HEADSHOT", "anime", "nope", "+", ":", "0.5", "-1", "nan", "inf", "1e309", "0", " ", ",", "é", "1e-9"]
)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.lists(SPEC_PIECES, max_size=12).map("".join)))
def test_preset_specs(spec: str) -> None:
    try:
        effective = catalog().resolve(spec)
    except (UnknownPreset, InvalidPresetSpec) as exc:
        assert exc.user_message
        assert len(exc.user_message) < 2000  # echoed input is clipped
        return
    assert abs(sum(w for _, w in effective.parts) - 1) < 1e-9
    # The canonical spec is a fixed point: resolving it again gives exactly the same preset.
    assert catalog().resolve(effective.spec) == effective


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["ghibli", "headshot", "anime", "viking"]), st.floats(0.01, 100)),
        min_size=1,
        max_size=4,
        unique_by=lambda p: p[0],
    )
)
def test_weighted_fusions_round_trip(parts: list[tuple[str, float]]) -> None:
    spec = "+".join(f"{name}:{weight!r}" for name, weight in parts)
    try:
        effective = catalog().resolve(spec)
    except InvalidPresetSpec as exc:  # only a part under 1% may be refused
        assert "1%" in exc.user_message
        total = sum(w for _, w in parts)
        assert min(w for _, w in parts) / total < 0.01
        return
    assert [name for name, _ in effective.parts] == [name for name, _ in parts]
    assert abs(sum(w for _, w in effective.parts) - 1) < 1e-9
    assert catalog().resolve(effective.spec) == effective
