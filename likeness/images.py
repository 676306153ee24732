"""Decoding untrusted images and encoding outputs, with Pillow only (safe to import on the bot side).

Input images (JPEG, PNG, WebP, GIF, BMP): size-checked before decoding, the pixel count checked from the
header before any pixel is read (decompression bombs), EXIF orientation applied (a corrupt EXIF block is
ignored), first frame of animations, converted to 8-bit RGB (alpha flattened onto white, 16-bit scaled).
Outputs are written fresh, so no input metadata (EXIF, GPS) survives.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from likeness.errors import InvalidImage

__all__ = ["encode_image", "load_image", "sniff_image"]

_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
# Decoders we accept: fewer decoders, less attack surface. ("JPEG" also opens phones' multi-picture MPO files.)
_INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_MIN_SIDE = 16
# What Pillow's decoders raise on broken files; tests/test_input_fuzz.py checks that nothing else escapes.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def sniff_image(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """Check size limits and that `data` looks like an image; returns (width, height) without decoding."""
    if not data:
        raise InvalidImage(message="That file is empty. Please send a photo (JPEG, PNG or WebP).")
    if len(data) > max_bytes:
        raise InvalidImage(message=f"That file is too large ({_size(len(data))}); the limit is {_size(max_bytes)}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on corrupt EXIF: not actionable
            with Image.open(io.BytesIO(data), formats=_INPUT_FORMATS) as probe:
                width, height = probe.size
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            message="That file isn't an image I can read. Please send a photo (JPEG, PNG or WebP)."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(message="That image looks damaged. Please send it again.") from exc
    if width * height > max_pixels:
        raise _bomb(max_pixels)
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise InvalidImage(message=f"That image is only {width}×{height} pixels; please send a bigger photo.")
    return width, height


def load_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise `InvalidImage` with a clear text."""
    sniff_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on corrupt EXIF: not actionable
            with Image.open(io.BytesIO(data), formats=_INPUT_FORMATS) as img:
                img.seek(0)
                orientation = _orientation(img)
                rgb = _to_rgb(img)
                rgb.load()
                if orientation in _UPRIGHT:
                    rgb = rgb.transpose(_UPRIGHT[orientation])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(message="That image looks damaged or cut off. Please send it again.") from exc
    if rgb.width < _MIN_SIDE or rgb.height < _MIN_SIDE:  # a header can lie about the size
        raise InvalidImage(message=f"That image is only {rgb.width}×{rgb.height} pixels; please send a bigger photo.")
    rgb.info = {}
    return rgb


def encode_image(
    image: Image.Image, fmt: str = "png", *, quality: int = 92, pnginfo: object = None, xmp: bytes | None = None
) -> bytes:
    """Encode a generated image; only what the caller passes is written, never input metadata.

    Alpha is kept for PNG and WebP and flattened onto white for JPEG. `xmp` is an XMP packet stored the
    standard way: PNG iTXt `XML:com.adobe.xmp`, JPEG APP1, WebP `XMP ` chunk.
    """
    try:
        pil_format = _FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unsupported output format {fmt!r}; use one of {sorted(_FORMATS)}") from None
    if pil_format != "JPEG" and _has_alpha(image):
        source = image.convert("RGBA")
    elif image.mode == "L":
        source = image
    else:
        source = _to_rgb(image)  # flattens any alpha onto white
    # A fresh image carries pixels only: no EXIF, GPS, ICC profile or text chunks from `image`.
    clean = Image.new(source.mode, source.size)
    clean.paste(source)
    buf = io.BytesIO()
    params: dict[str, object] = {}
    if pil_format == "PNG" and xmp is not None:
        info = PngImagePlugin.PngInfo()
        if isinstance(pnginfo, PngImagePlugin.PngInfo):
            info.chunks = list(pnginfo.chunks)  # a copy: the caller's object stays as it was
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), zip=False)
        pnginfo = info
    if pil_format == "PNG" and pnginfo is not None:
        params["pnginfo"] = pnginfo
    if pil_format != "PNG" and xmp is not None:
        params["xmp"] = xmp
    if pil_format in ("JPEG", "WEBP"):
        params["quality"] = quality
    clean.save(buf, format=pil_format, **params)
    return buf.getvalue()


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow clips these to 8 bits (most of a 16-bit photo turns white); scale instead.
        hi = float(img.getextrema()[1])  # type: ignore[arg-type]  # single band: (min, max) numbers
        scale = 255.0 if img.mode == "F" and hi <= 1.0 else 1 / 257 if hi > 255 else 1.0
        return img.convert("F").point(lambda v: v * scale).convert("L").convert("RGB")
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, or 1 (upright) when there is none or the EXIF block is corrupt.

    Not `ImageOps.exif_transpose`: it also rewrites the EXIF block, and on a corrupt one raises
    TypeError or struct.error (fuzzing found both) for a photo whose pixels are fine.
    """
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # any EXIF parse failure: Pillow documents no exception list for it
        return 1
    return value if isinstance(value, int) else 1


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}".removesuffix(".0") + " MB"
    return f"{max(1, round(n / 1e3))} KB"


def _bomb(max_pixels: int) -> InvalidImage:
    return InvalidImage(
        message=f"That image has too many pixels (limit {max_pixels / 1e6:g} megapixels). Please send a normal photo."
    )


# TEMPORARY (replaced by the images branch)
def format_size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def prepare_selfie(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int = 2048) -> bytes:
    image = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return encode_image(image, "jpeg", quality=95)


def prepare_mask(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int = 2048) -> bytes:
    image = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return encode_image(image.convert("L"), "png")
