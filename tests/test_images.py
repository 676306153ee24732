"""Untrusted selfies: `load_image` gives an upright RGB image or a clear `InvalidImage`; outputs carry no metadata."""

from __future__ import annotations

import io
import pickle
import struct

import pytest
from PIL import Image

from likeness.errors import InvalidImage
from likeness.images import encode_image, load_image, sniff_image
from tests.helpers.image_bytes import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    animated,
    jpeg_with_exif,
    png_claiming_size,
    quadrants,
    save,
    with_corrupt_exif,
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
    assert "KB" in info.value.user_message  # the size is shown in units a person reads
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
