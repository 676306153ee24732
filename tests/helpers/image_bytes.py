"""Builders for image files as a user would send them (made with Pillow, no binaries in the repo)."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image

# Distinct corner colours make rotations and flips visible.
RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)


def quadrants(width: int = 64, height: int = 48) -> Image.Image:
    """RGB image with a red top-left, green top-right, blue bottom-left and yellow bottom-right quarter."""
    img = Image.new("RGB", (width, height))
    w2, h2 = width // 2, height // 2
    img.paste(RED, (0, 0, w2, h2))
    img.paste(GREEN, (w2, 0, width, h2))
    img.paste(BLUE, (0, h2, w2, height))
    img.paste(YELLOW, (w2, h2, width, height))
    return img


def save(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg_with_exif(img: Image.Image, *, orientation: int = 1, gps: bool = True) -> bytes:
    """A JPEG like a phone writes it: orientation tag, camera make, GPS position."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "PhoneMaker"  # Make
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPSInfo
    return save(img, "JPEG", exif=exif, quality=95)


def animated(fmt: str, frames: list[tuple[int, int, int]], size: tuple[int, int] = (40, 40)) -> bytes:
    """An animated GIF or WebP whose frames are solid colours, in order."""
    images = [Image.new("RGB", size, colour) for colour in frames]
    params: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        params["lossless"] = True
    return save(images[0], fmt, **params)


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose IHDR (with a valid CRC) claims `width`×`height`: a decompression bomb header."""
    data = bytearray(save(Image.new("RGB", (1, 1)), "PNG"))
    # Signature (8) + chunk length (4) + b"IHDR" (4), then width and height.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF  # type + 13 data bytes
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def with_corrupt_exif(jpeg: bytes) -> bytes:
    """Retype the EXIF `Make` entry from ASCII to RATIONAL: a broken EXIF block around intact pixels.

    Pillow's `ImageOps.exif_transpose` raised AttributeError on this (found by fuzzing).
    """
    entry = b"\x01\x0f\x00\x02"  # big-endian IFD entry: tag 0x010F (Make), type 2 (ASCII)
    assert jpeg.count(entry) == 1
    return jpeg.replace(entry, b"\x01\x0f\x00\x05")


def heic(img: Image.Image, **params: Any) -> bytes:
    """An HEVC-coded HEIF file as phones write them (needs pillow-heif, whose wheel ships the x265 encoder).

    An EXIF orientation passed as `exif=<bytes>` is written as the `irot`/`imir` boxes, as iPhones do.
    """
    import pillow_heif

    pillow_heif.register_heif_opener()  # the save side; options the code under test set are left alone
    return save(img, "HEIF", **{"quality": 90, **params})


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    return exif.tobytes()


def with_ispe(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the one `ispe` (image spatial extents) box of a HEIF/AVIF file: the header's claimed size."""
    assert data.count(b"ispe") == 1
    at = data.index(b"ispe") + 8  # box type, then version and flags (4), then width and height
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


def jpeg_markers(data: bytes) -> list[int]:
    """The segment markers of a JPEG up to its first scan (SOS), e.g. 0xE0 for APP0, 0xFE for a comment."""
    assert data[:2] == b"\xff\xd8"
    markers, at = [], 2
    while True:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        at += 2 + length
