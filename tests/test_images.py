"""Untrusted selfies: `load_image` gives an upright RGB image or a clear `InvalidImage`; outputs carry no metadata."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from likeness import images
from likeness.errors import InvalidImage
from likeness.images import encode_image, format_size, load_image, prepare_selfie, sniff_image
from tests.helpers.image_bytes import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    animated,
    exif_bytes,
    heic,
    jpeg_markers,
    jpeg_with_exif,
    png_claiming_size,
    quadrants,
    save,
    with_corrupt_exif,
    with_ispe,
)

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 40_000_000}


def load(data: bytes, **overrides: int) -> Image.Image:
    return load_image(data, **{**LIMITS, **overrides})


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def corner_colours(img: Image.Image) -> list[tuple[int, ...]]:
    """Colours at the centre of each quarter: top-left, top-right, bottom-left, bottom-right."""
    w, h = img.size
    return [img.getpixel((x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4)]


def test_a_plain_photo_loads_as_rgb() -> None:
    img = load(save(quadrants(), "PNG"))
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    assert corner_colours(img) == [RED, GREEN, BLUE, YELLOW]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 this is a document, not a selfie" * 10, "isn't an image"),
        (b"\x00" * 500, "isn't an image"),
        (b"GIF89a" + b"\xff" * 20, "isn't an image"),
        (save(quadrants(), "PNG")[:60], "damaged"),
    ],
    ids=["empty", "pdf", "zeros", "gif-signature-only", "png-cut-in-first-chunk"],
)
def test_non_images_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(InvalidImage) as info:
        load(data)
    assert words in info.value.user_message


def test_a_format_outside_the_allow_list_is_refused() -> None:
    # TIFF decodes fine in Pillow, but its many codecs are attack surface a selfie bot doesn't need.
    with pytest.raises(InvalidImage, match="isn't an image"):
        load(save(quadrants(), "TIFF"))


def test_bmp_is_accepted() -> None:
    assert corner_colours(load(save(quadrants(), "BMP"))) == [RED, GREEN, BLUE, YELLOW]


def test_oversized_files_are_refused_before_decoding() -> None:
    data = save(quadrants(), "PNG")
    with pytest.raises(InvalidImage, match="too large") as info:
        load(data, max_bytes=len(data) - 1)
    assert f"({len(data)} bytes)" in info.value.user_message  # the size is shown in units a person reads
    assert load(data, max_bytes=len(data)).size == (64, 48)


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (7_000, 7_000)])
def test_decompression_bombs_are_refused_from_the_header(width: int, height: int) -> None:
    data = png_claiming_size(width, height)
    assert struct.unpack(">II", data[16:24]) == (width, height)  # the header really claims that size
    with pytest.raises(InvalidImage, match="too many pixels"):
        load(data)


def test_the_pixel_limit_is_the_callers() -> None:
    data = save(quadrants(200, 100), "PNG")
    with pytest.raises(InvalidImage, match="too many pixels"):
        load(data, max_pixels=200 * 100 - 1)
    assert sniff_image(data, max_bytes=10**6, max_pixels=200 * 100) == (200, 100)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_jpeg_is_refused(keep: float) -> None:
    data = save(quadrants(256, 256), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="damaged"):
        load(data[: int(len(data) * keep)])


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    upright = quadrants(48, 64)
    # Phones store the sensor's pixels and an orientation tag; 6 = "rotate 90° clockwise to view".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    img = load(jpeg_with_exif(stored, orientation=6))
    assert img.size == (48, 64)
    for got, want in zip(corner_colours(img), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert close(got, want), (got, want)


def test_corrupt_exif_does_not_lose_the_photo() -> None:
    upright = quadrants(48, 64)
    img = load(with_corrupt_exif(jpeg_with_exif(upright.transpose(Image.Transpose.ROTATE_90), orientation=6)))
    assert img.size == (48, 64)  # the orientation tag itself is still read
    for got, want in zip(corner_colours(img), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert close(got, want), (got, want)


def test_cmyk_jpeg_keeps_its_colours() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red in print colours
    img = load(save(cmyk, "JPEG", quality=95))
    assert img.mode == "RGB"
    assert close(img.getpixel((20, 20)), (255, 0, 0))


def test_16_bit_png_is_scaled_not_clipped() -> None:
    grey16 = Image.new("I;16", (32, 32), 128 * 257)  # mid grey in 16 bits
    data = save(grey16, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = load(data)
    assert img.mode == "RGB"
    assert close(img.getpixel((5, 5)), (128, 128, 128), tol=2)


def test_palette_transparency_is_flattened_on_white() -> None:
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, 16, 32))  # left half uses the transparent index 0 (black in the palette)
    img = load(save(pal, "PNG", transparency=0))
    assert img.getpixel((4, 16)) == (255, 255, 255)
    assert img.getpixel((28, 16)) == RED


def test_rgba_alpha_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (*BLUE, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))
    img = load(save(rgba, "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((4, 16)) == (255, 255, 255)
    assert img.getpixel((28, 16)) == BLUE


@pytest.mark.parametrize("mode", ["L", "1", "LA"])
def test_grey_modes_become_rgb(mode: str) -> None:
    img = load(save(Image.new(mode, (20, 20), 255 if mode != "LA" else (255, 255)), "PNG"))
    assert img.mode == "RGB"
    assert img.getpixel((3, 3)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_give_their_first_frame(fmt: str) -> None:
    data = animated(fmt, [RED, GREEN, BLUE])
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.n_frames == 3
    img = load(data)
    assert img.mode == "RGB"
    assert close(img.getpixel((20, 20)), RED, tol=10)


@pytest.mark.parametrize("size", [(8, 8), (15, 200), (200, 15)])
def test_tiny_images_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidImage, match=f"{size[0]}×{size[1]}"):
        load(save(Image.new("RGB", size), "PNG"))


def test_loaded_image_keeps_no_input_metadata() -> None:
    img = load(jpeg_with_exif(quadrants(), orientation=1))
    assert img.info == {}
    assert not img.getexif()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encoded_output_carries_no_exif_or_gps(fmt: str) -> None:
    selfie = jpeg_with_exif(quadrants(), orientation=1, gps=True)
    with Image.open(io.BytesIO(selfie)) as original:  # the input really has them
        assert original.getexif().get_ifd(0x8825)
        # Pass the raw decoded image on purpose: its .info still holds the EXIF block.
        original.load()
        assert "exif" in original.info
        out = encode_image(original, fmt)
    assert b"PhoneMaker" not in out
    with Image.open(io.BytesIO(out)) as result:
        assert result.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        assert not result.getexif()
        assert "exif" not in result.info
        assert result.size == (64, 48)


def test_encode_keeps_alpha_where_the_format_can() -> None:
    rgba = Image.new("RGBA", (20, 20), (*GREEN, 0))
    with Image.open(io.BytesIO(encode_image(rgba, "png"))) as png:
        assert png.mode == "RGBA"
        assert png.getpixel((1, 1))[3] == 0
    with Image.open(io.BytesIO(encode_image(rgba, "jpeg"))) as jpeg:  # no alpha in JPEG: white
        assert jpeg.mode == "RGB"
        assert close(jpeg.getpixel((1, 1)), (255, 255, 255), tol=3)


def test_encode_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="gif"):
        encode_image(quadrants(), "gif")


def test_invalid_image_survives_pickling() -> None:
    with pytest.raises(InvalidImage) as info:
        load(b"")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is InvalidImage
    assert again.user_message == info.value.user_message


# --- sizes in texts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (512 * 1024, "512 KiB"),
        (1024 * 1024 - 1, "1 MiB"),  # 1023.999 KiB: not "1024 KiB"
        (1536 * 1024, "1.5 MiB"),
        (20 * 1024 * 1024, "20 MiB"),
        (21_000_000, "20 MiB"),  # what "21 MB" used to mean
        (3 * 1024**3, "3 GiB"),
    ],
)
def test_format_size_uses_binary_units(n: int, text: str) -> None:
    assert format_size(n) == text


def test_too_large_texts_use_the_limits_units() -> None:
    limit = 20 * 1024 * 1024
    with pytest.raises(InvalidImage) as info:
        sniff_image(b"\xff" * (limit + 3 * 1024 * 1024 // 2), max_bytes=limit, max_pixels=10**6)
    assert info.value.user_message == "That file is too large (21.5 MiB); the limit is 20 MiB."
    with pytest.raises(InvalidImage) as info:  # rounds to the limit itself: said without a contradiction
        sniff_image(b"\xff" * (limit + 1), max_bytes=limit, max_pixels=10**6)
    assert info.value.user_message == "That file is just over the size limit of 20 MiB."


# --- phones' formats: AVIF (Pillow) and HEIC (pillow-heif) ----------------------------------------------------


def avif(img: Image.Image, **params: object) -> bytes:
    return save(img, "AVIF", **{"quality": 90, **params})


PHONE_FORMATS = {"avif": avif, "heic": heic}


@pytest.fixture
def forget_formats() -> Iterator[None]:
    """The accepted formats are looked up afresh before and after the test (they are cached per process)."""
    images._input_formats.cache_clear()
    yield
    images._input_formats.cache_clear()


@pytest.mark.parametrize("fmt", sorted(PHONE_FORMATS))
def test_phone_formats_load(fmt: str) -> None:
    img = load(PHONE_FORMATS[fmt](quadrants()))
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    for got, want in zip(corner_colours(img), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert close(got, want), (got, want)


@pytest.mark.parametrize("fmt", sorted(PHONE_FORMATS))
def test_phone_formats_come_out_upright(fmt: str) -> None:
    upright = quadrants(48, 64)
    # Stored sideways with "rotate 90° clockwise to view": both encoders turn that into an `irot` box.
    data = PHONE_FORMATS[fmt](upright.transpose(Image.Transpose.ROTATE_90), exif=exif_bytes(6))
    assert b"irot" in data
    for img in (load(data), Image.open(io.BytesIO(prepare_selfie(data, **LIMITS)))):
        assert img.size == (48, 64)
        for got, want in zip(corner_colours(img), [RED, GREEN, BLUE, YELLOW], strict=True):
            assert close(got, want), (fmt, got, want)


@pytest.mark.parametrize("fmt", sorted(PHONE_FORMATS))
def test_phone_format_bombs_are_refused_from_the_header(fmt: str) -> None:
    # 64×64 needs no crop box (`clap`), so `ispe` alone states the size.
    data = with_ispe(PHONE_FORMATS[fmt](quadrants(64, 64), quality=50), 7_000, 7_000)
    with pytest.raises(InvalidImage, match="too many pixels"):
        sniff_image(data, **LIMITS)  # sniffing reads the header only: refused before any decoding
    with pytest.raises(InvalidImage, match="too many pixels"):
        load(data)


def test_heic_whose_picture_is_bigger_than_its_header_is_refused() -> None:
    # The header passes the pixel check; libheif refuses to decode more than it declared.
    data = with_ispe(heic(Image.effect_noise((256, 256), 60).convert("RGB"), quality=50), 64, 64)
    assert sniff_image(data, **LIMITS) == (64, 64)
    with pytest.raises(InvalidImage, match="damaged"):
        load(data)


@pytest.mark.parametrize("fmt", sorted(PHONE_FORMATS))
def test_cut_phone_formats_are_refused_as_damaged(fmt: str) -> None:
    data = PHONE_FORMATS[fmt](Image.effect_noise((128, 128), 60).convert("RGB"))
    with pytest.raises(InvalidImage, match="damaged"):
        load(data[: int(len(data) * 0.8)])


def test_texts_name_the_phone_formats() -> None:
    with pytest.raises(InvalidImage) as info:
        load(b"%PDF-1.7 not a selfie" * 10)
    assert "JPEG, PNG, WebP, AVIF or HEIC" in info.value.user_message


@pytest.mark.usefixtures("forget_formats")
def test_without_a_heif_decoder_heic_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    data = heic(quadrants())
    for module in ("pi_heif", "pillow_heif"):  # as on an install without either: the imports fail
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InvalidImage) as info:
        load(data)
    assert info.value.user_message == "HEIC photos can't be read here. Please send a JPEG, PNG, WebP or AVIF instead."
    assert load(avif(quadrants())).size == (64, 48)  # the rest still reads


def test_importing_images_leaves_pillow_alone() -> None:
    """The HEIF opener is registered on first use, not as a side effect of the import."""
    code = "import sys, likeness.images\nprint('pillow_heif' in sys.modules or 'pi_heif' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- prepare_selfie: what is stored for the worker ------------------------------------------------------------


def astronaut(size: tuple[int, int]) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut()).resize(size, Image.Resampling.LANCZOS)


def mean_difference(a: Image.Image, b: Image.Image, size: tuple[int, int] = (256, 192)) -> float:
    small = [np.asarray(i.convert("RGB").resize(size, Image.Resampling.BOX), dtype=np.float32) for i in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())


def test_a_big_phone_photo_with_trailing_junk_is_stored_small_and_upright() -> None:
    photo = astronaut((4000, 3000))
    # Sideways sensor pixels plus an orientation tag, then 15 MiB of junk after the end of the JPEG.
    upload = jpeg_with_exif(photo.transpose(Image.Transpose.ROTATE_90), orientation=6)
    upload += b"\x00junk\xff" * (3 * 1024 * 1024)
    assert len(upload) > 15 * 1024 * 1024
    stored = prepare_selfie(upload, max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)
    assert len(stored) < 1024 * 1024
    with Image.open(io.BytesIO(stored)) as out:
        assert out.format == "JPEG"
        assert out.size == (2048, 1536)  # the long side at max_side, the aspect ratio kept
        assert mean_difference(out, photo) < 2.0  # the same picture, the right way up
        assert mean_difference(out, photo.transpose(Image.Transpose.ROTATE_180)) > 20
    assert load_image(stored, max_bytes=20 * 1024 * 1024, max_pixels=40_000_000).size == (2048, 1536)


def test_worst_case_noise_stays_within_3_mib() -> None:
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8))
    upload = save(noise, "PNG")
    assert len(upload) > 12 * 1024 * 1024  # incompressible: 12 MiB of pixels
    stored = prepare_selfie(upload, max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)
    assert len(stored) <= 3 * 1024 * 1024
    assert Image.open(io.BytesIO(stored)).size == (2048, 2048)


def test_a_photo_keeps_quality_95_and_full_colour_resolution() -> None:
    stored = prepare_selfie(save(astronaut((1024, 1024)), "PNG"), **LIMITS)
    with Image.open(io.BytesIO(stored)) as out:
        assert out.size == (1024, 1024)  # never upscaled
        assert out.layer == [(1, 1, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)]  # 4:4:4: no chroma subsampling
        assert out.quantization[0][0] <= 3  # quality 95's DC step (quality 75 would use 8)


def test_stored_selfie_carries_no_metadata() -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">PhoneMaker XMP</x:xmpmeta>'
    upload = save(quadrants(), "JPEG", exif=exif, icc_profile=icc, xmp=xmp, comment=b"PhoneMaker comment")
    assert {0xE1, 0xE2, 0xFE} <= set(jpeg_markers(upload))  # the input really has EXIF/XMP, ICC and a comment
    stored = prepare_selfie(upload, **LIMITS)
    # SOI, then JFIF's APP0, quantisation tables, the frame, Huffman tables, the scan: no APP1-15, no comment.
    assert set(jpeg_markers(stored)) == {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}
    assert b"PhoneMaker" not in stored
    with Image.open(io.BytesIO(stored)) as out:
        assert not out.getexif()
        assert set(out.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}


def test_prepare_selfie_is_deterministic() -> None:
    upload = save(astronaut((900, 700)), "WEBP", quality=80)
    assert prepare_selfie(upload, **LIMITS, max_side=512) == prepare_selfie(upload, **LIMITS, max_side=512)


def test_a_long_thin_image_keeps_a_loadable_short_side() -> None:
    stored = prepare_selfie(save(quadrants(16, 5000), "PNG"), **LIMITS)
    assert Image.open(io.BytesIO(stored)).size == (16, 2048)
    assert load(stored).size == (16, 2048)


@pytest.mark.parametrize("fmt", sorted(PHONE_FORMATS))
def test_phone_photos_are_stored_as_jpeg(fmt: str) -> None:
    photo = astronaut((800, 600))
    stored = prepare_selfie(PHONE_FORMATS[fmt](photo), **LIMITS, max_side=512)
    with Image.open(io.BytesIO(stored)) as out:
        assert (out.format, out.size) == ("JPEG", (512, 384))
        assert mean_difference(out, photo) < 2.5


def test_prepare_selfie_refuses_what_load_image_refuses() -> None:
    with pytest.raises(InvalidImage, match="isn't an image"):
        prepare_selfie(b"%PDF-1.7" * 100, **LIMITS)
    with pytest.raises(InvalidImage, match="too many pixels"):
        prepare_selfie(png_claiming_size(7_000, 7_000), **LIMITS)
