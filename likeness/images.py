"""Decoding untrusted images and encoding outputs, with Pillow only (safe to import on the bot side).

Input images: size-checked before decoding, the pixel count checked from the header before any pixel
is read (decompression bombs), EXIF orientation applied, first frame of animations, converted to RGB
(alpha flattened onto white). Outputs are written fresh, so no input metadata (EXIF, GPS) survives.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from likeness.errors import InvalidImage

__all__ = ["encode_image", "load_image", "sniff_image"]

_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


def sniff_image(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """Check size limits and that `data` looks like an image; returns (width, height) without decoding."""
    if not data:
        raise InvalidImage(message="That file is empty. Please send a photo (JPEG, PNG or WebP).")
    if len(data) > max_bytes:
        raise InvalidImage(
            message=f"That file is too large ({len(data) / 1e6:.1f} MB); the limit is {max_bytes / 1e6:.0f} MB."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise InvalidImage(
                message="That file isn't an image I can read. Please send a photo (JPEG, PNG or WebP)."
            ) from exc
        raise _bomb(max_pixels) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(message="That image looks damaged. Please send it again.") from exc
    if width * height > max_pixels:
        raise _bomb(max_pixels)
    if width < 16 or height < 16:
        raise InvalidImage(message=f"That image is only {width}×{height} pixels; please send a bigger photo.")
    return width, height


def load_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise `InvalidImage` with a clear text."""
    sniff_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)
                upright = ImageOps.exif_transpose(img)
                rgb = _to_rgb(upright)
                rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(message="That image looks damaged or cut off. Please send it again.") from exc
    rgb.info = {}
    return rgb


def encode_image(
    image: Image.Image, fmt: str = "png", *, quality: int = 92, pnginfo: object = None, xmp: bytes | None = None
) -> bytes:
    """Encode a generated image; only what the caller passes is written, never input metadata.

    `xmp` is an XMP packet stored the standard way: PNG iTXt `XML:com.adobe.xmp`, JPEG APP1, WebP `XMP ` chunk.
    """
    try:
        pil_format = _FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unsupported output format {fmt!r}; use one of {sorted(_FORMATS)}") from None
    clean = Image.new(image.mode if image.mode in ("RGB", "RGBA", "L") else "RGB", image.size)
    clean.paste(image if image.mode == clean.mode else image.convert(clean.mode))
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
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale into 8 bits instead of clipping to white.
        _lo, hi = img.getextrema()  # type: ignore[misc]
        scale = 255.0 / (float(hi) or 1.0)
        return img.convert("F").point(lambda v: v * scale).convert("L").convert("RGB")
    return img.convert("RGB")


def _bomb(max_pixels: int) -> InvalidImage:
    return InvalidImage(
        message=f"That image has too many pixels (limit {max_pixels / 1e6:.0f} megapixels). Please send a normal photo."
    )
