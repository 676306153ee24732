"""Provenance: the AI-generated XMP marker in every format, no input metadata, and the invisible watermark."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import ExifTags, Image
from skimage import data

import likeness
from likeness.images import encode_image, load_image
from likeness.provenance import (
    TRAINED_ALGORITHMIC_MEDIA,
    WATERMARK_SCHEME,
    detect_watermark,
    encode_with_provenance,
    mark,
    read_provenance,
    watermark_score,
)

SECRET = "SECRET-CAMERA-7731"


def _selfie_with_gps() -> bytes:
    """A JPEG as phones send it: EXIF with camera make, description and GPS coordinates."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = SECRET
    exif[ExifTags.Base.ImageDescription] = SECRET
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", exif=exif, quality=90)
    return buf.getvalue()


def _reopen(blob: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(blob))
    img.load()
    return img


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_marker_present_and_no_input_metadata(fmt: str) -> None:
    selfie = _selfie_with_gps()
    original = Image.open(io.BytesIO(selfie))
    assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the input really carries GPS
    # straight from the decoder, info["exif"] included: the encoder must still drop it
    blob = encode_with_provenance(original, fmt, extra={"preset": "ghibli", "model": "tiny"})
    marker = read_provenance(blob)
    assert marker is not None
    assert marker["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert marker["creator_tool"] == f"Likeness {likeness.__version__}"
    assert marker["ai_system"] == "Likeness" and marker["ai_system_version"] == likeness.__version__
    assert marker["description"] == "AI-generated image"
    assert marker["extra"] == {"preset": "ghibli", "model": "tiny"}
    assert marker["watermark"] is None
    out = _reopen(blob)
    assert out.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert not out.getexif()
    assert "exif" not in out.info and "icc_profile" not in out.info
    assert SECRET.encode() not in blob
    # the same goes for the bot's normal input path
    loaded = load_image(selfie, max_bytes=10_000_000, max_pixels=10_000_000)
    assert SECRET.encode() not in encode_with_provenance(loaded, fmt)


def test_generator_name_and_version_are_configurable() -> None:
    blob = encode_with_provenance(Image.new("RGB", (32, 32)), "png", generator="MyBot", version="9.9")
    marker = read_provenance(blob)
    assert marker and marker["creator_tool"] == "MyBot 9.9" and marker["ai_system_version"] == "9.9"


def test_bad_extra_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="identifier"):
        encode_with_provenance(Image.new("RGB", (8, 8)), "png", extra={"bad key": "x"})


def test_unmarked_and_unreadable_files_have_no_provenance() -> None:
    assert read_provenance(encode_image(Image.new("RGB", (32, 32)), "png")) is None
    assert read_provenance(encode_image(Image.new("RGB", (32, 32)), "jpeg")) is None
    assert read_provenance(b"not an image") is None


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {
        "astronaut": Image.fromarray(data.astronaut()),
        "coffee": Image.fromarray(data.coffee()),
        "camera": Image.fromarray(data.camera()).convert("RGB"),
    }


def _psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


def test_watermark_is_invisible_and_found_after_reencoding(photos: dict[str, Image.Image]) -> None:
    for name, photo in photos.items():
        marked = mark(photo)
        assert marked.size == photo.size
        assert _psnr(photo, marked) >= 40, name
        assert not detect_watermark(photo), name
        assert detect_watermark(_reopen(encode_image(marked, "png"))), name
        assert detect_watermark(_reopen(encode_image(marked, "jpeg", quality=90))), name
        assert detect_watermark(_reopen(encode_image(marked, "webp", quality=90))), name
        assert not detect_watermark(_reopen(encode_image(photo, "jpeg", quality=90))), name
        assert detect_watermark(marked.crop((13, 29, photo.width - 5, photo.height))), name  # off-grid crop


def test_watermark_is_keyed(photos: dict[str, Image.Image]) -> None:
    marked = mark(photos["astronaut"], key="operator-secret")
    assert detect_watermark(marked, key="operator-secret")
    assert not detect_watermark(marked)


def test_encode_with_watermark_records_the_scheme(photos: dict[str, Image.Image]) -> None:
    blob = encode_with_provenance(photos["coffee"], "jpeg", watermark=True)
    marker = read_provenance(blob)
    assert marker and marker["watermark"] == WATERMARK_SCHEME
    assert detect_watermark(_reopen(blob))
    plain = _reopen(encode_with_provenance(photos["coffee"], "jpeg"))
    assert watermark_score(plain) < watermark_score(_reopen(blob))
    assert not detect_watermark(plain)


def test_tiny_images_do_not_crash_detection() -> None:
    small = Image.new("RGB", (40, 20), (120, 80, 60))
    assert mark(small).size == small.size
    assert detect_watermark(mark(small)) is False  # below one tile: documented as undetectable
    assert detect_watermark(Image.new("RGB", (256, 256), (128, 128, 128))) is False  # flat image


def test_marking_an_edit_keeps_the_untouched_pixels_of_its_marked_source() -> None:
    from likeness.provenance import detect_watermark, mark

    rng = np.random.default_rng(3)
    source = mark(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), "RGB"))
    edited = source.copy()
    edited.paste(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "RGB"), (96, 96))
    out = np.asarray(mark(edited, marked_source=source), dtype=np.int16)
    src = np.asarray(source, dtype=np.int16)
    outside = np.ones(src.shape[:2], bool)
    outside[96:160, 96:160] = False
    assert (out[outside] == src[outside]).all()
    assert (out[96:160, 96:160] != np.asarray(edited, dtype=np.int16)[96:160, 96:160]).any()
    assert detect_watermark(Image.fromarray(out.astype(np.uint8)))
