"""Decoding untrusted images and encoding outputs with Pillow (pillow-heif for HEIC): no torch, safe on the bot side.

Input images (JPEG, PNG, WebP, GIF, BMP, AVIF, and HEIC when pillow-heif is installed): size-checked before
decoding, the pixel count checked from the header before any pixel is read (decompression bombs; for AVIF also
from its AV1 streams' own headers, which libavif trusts over the container's, see `_avif_headers`), orientation
applied (EXIF; HEIF/AVIF `irot`/`imir`; a corrupt EXIF block is ignored), first frame of GIF and WebP
animations (animated AVIF is refused), converted to 8-bit RGB (alpha flattened onto white, 16-bit scaled).
`prepare_selfie` turns an upload into what is stored for the worker: that image, downscaled and re-encoded as a
fresh JPEG. Outputs are written fresh, so no input metadata (EXIF, GPS, ICC, XMP) survives.
"""

from __future__ import annotations

import functools
import io
import warnings

from PIL import Image, PngImagePlugin, UnidentifiedImageError, features

from likeness._avif_headers import ImageSequence, coded_pixels
from likeness.errors import InvalidImage

__all__ = ["encode_image", "format_size", "load_image", "prepare_mask", "prepare_selfie", "sniff_image"]

_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
# Decoders we accept: fewer decoders, less attack surface. ("JPEG" also opens phones' multi-picture MPO files.)
# AVIF (Pillow ≥ 11.2 built with libavif) and HEIF (pillow-heif) are added by `_input_formats` when present.
_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Major or compatible brands of HEVC-coded HEIF files: what iPhones (and many Android phones) send as files.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MIN_SIDE = 16
# What Pillow's decoders raise on broken files; tests/test_input_fuzz.py checks that nothing else escapes.
# RuntimeError: pillow-heif's libheif errors at decode ("Security limit exceeded", unsupported codec).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, RuntimeError)
# prepare_selfie's JPEG: quality 95 with full-resolution colour (4:4:4) for photos; noise-like content that
# would pass 0.75 byte per pixel (3 MiB at 2048×2048) steps down. Measured on 2048×2048: a photo 0.95 MiB at
# the first rung; a photo with heavy sensor noise (σ 12) 4.4 MiB at the first, 2.8 MiB at the second;
# uniform RGB noise (the worst case) 9.7, 7.5, 6.3, then 2.7 MiB at (80, 4:2:0).
_SELFIE_JPEG = ((95, "4:4:4"), (90, "4:4:4"), (85, "4:4:4"), (80, "4:2:0"), (60, "4:2:0"), (30, "4:2:0"))
_SELFIE_BYTES_PER_PIXEL = 0.75
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
        raise InvalidImage(message=f"That file is empty. Please send a photo ({_accepted()}).")
    if len(data) > max_bytes:
        size, limit = format_size(len(data)), format_size(max_bytes)
        if size == limit:  # "too large (20 MiB); the limit is 20 MiB" would read as a contradiction
            raise InvalidImage(message=f"That file is just over the size limit of {limit}.")
        raise InvalidImage(message=f"That file is too large ({size}); the limit is {limit}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on corrupt EXIF: not actionable
            with Image.open(io.BytesIO(data), formats=_input_formats()) as probe:
                width, height, fmt = *probe.size, probe.format
    except UnidentifiedImageError as exc:
        brands = _brands(data)
        if brands & _HEIC_BRANDS and "HEIF" not in _input_formats():
            raise InvalidImage(message=f"HEIC photos can't be read here. Please send a {_accepted()} instead.") from exc
        if brands & _HEIC_BRANDS or (brands & _AVIF_BRANDS and "AVIF" in _input_formats()):
            # A phone format we read whose container didn't parse (libavif refuses a cut file when opening).
            raise InvalidImage(message="That image looks damaged. Please send it again.") from exc
        raise InvalidImage(
            message=f"That file isn't an image I can read. Please send a photo ({_accepted()})."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(message="That image looks damaged. Please send it again.") from exc
    if width * height > max_pixels:
        raise _bomb(max_pixels)
    if fmt == "AVIF":
        _check_av1_streams(data, max_pixels)
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
            with Image.open(io.BytesIO(data), formats=_input_formats()) as img:
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


def prepare_selfie(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int = 2048) -> bytes:
    """What to store for the worker instead of the upload: a fresh JPEG of the upright picture, long side ≤ `max_side`.

    Decoded by `load_image` (every guard applies, `InvalidImage` on bad input), downscaled with Lanczos (never
    up; a side is kept at 16 pixels or more), encoded at quality 95 with full-resolution colour (4:4:4) and no
    metadata at all: no EXIF, GPS, ICC profile, XMP or comment; bytes after the image (trailing junk) go too.
    Noise-like content steps the quality down to stay under 0.75 byte per pixel (3 MiB at 2048×2048) and
    under `max_bytes`. Deterministic: the same upload gives the same bytes. CPU-bound, measured on 2 cores for
    a 12 MP photo: 0.25–0.35 s from JPEG, 0.4–0.5 s from AVIF, 0.55 s from HEIC; call it off the event loop.
    """
    if max_side < _MIN_SIDE:
        raise ValueError(f"max_side must be at least {_MIN_SIDE}, got {max_side}")
    img = _fit(load_image(data, max_bytes=max_bytes, max_pixels=max_pixels), max_side)
    budget = min(max_bytes, _SELFIE_BYTES_PER_PIXEL * img.width * img.height)
    for quality, subsampling in _SELFIE_JPEG:
        buf = io.BytesIO()
        # `img.info` is empty (load_image clears it), so Pillow writes no comment, ICC profile, EXIF or XMP.
        img.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        if buf.tell() <= budget:
            break
    return buf.getvalue()


def prepare_mask(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int = 2048) -> bytes:
    """A user-painted mask as stored for the worker (never the upload itself): white = change, black = keep.

    Decoded with the same guards as photos, upright; transparent pixels count as black ("keep", as painters
    leave them), so unlike `load_image` alpha goes onto black, not white. A fresh grey PNG, long side
    ≤ `max_side`, without metadata.
    """
    sniff_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(io.BytesIO(data), formats=_input_formats()) as img:
                img.seek(0)
                orientation = _orientation(img)
                if _has_alpha(img):
                    rgba = img.convert("RGBA")
                    grey = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")
                else:
                    grey = img.convert("L")
                grey.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(message="That mask image looks damaged or cut off. Please send it again.") from exc
    if orientation in _UPRIGHT:
        grey = grey.transpose(_UPRIGHT[orientation])
    return encode_image(_fit(grey, max_side), "png")


def format_size(n: int) -> str:
    """A byte count in binary units, as the limits are set: "900 bytes", "512 KiB", "1.5 MiB", "20 MiB"."""
    if n < 0:
        raise ValueError(f"a size can't be negative: {n}")
    if n < 1024:
        return "1 byte" if n == 1 else f"{n} bytes"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while round(value, 1) >= 1024 and len(units) > 1:  # 1023.96 KiB reads "1 MiB", not "1024 KiB"
        value /= 1024
        units.pop(0)
    return f"{value:.1f}".removesuffix(".0") + f" {units[0]}"


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


@functools.cache
def _input_formats() -> tuple[str, ...]:
    """Pillow format ids `Image.open` may try; registers a HEIF opener on first use, if one is installed:
    `pi-heif` (the dependency: decoder only, LGPL) or `pillow-heif` (same API; its wheels bundle a GPL encoder,
    so only the tests use it, to write HEIC files).

    Lazy rather than at import: `import likeness.images` stays free of side effects on Pillow's global
    registry and of pillow-heif's native libraries (~20 ms) in processes that never decode a photo.
    AVIF comes before HEIF: both plugins accept the generic `mif1` brand, and pillow-heif's wheel has no AV1
    decoder. Its thumbnails, depth and auxiliary images are never needed, so they are not even parsed.
    """
    formats = _BASE_FORMATS + (("AVIF",) if features.check("avif") else ())
    try:
        import pi_heif as heif
    except ImportError:
        try:
            import pillow_heif as heif
        except ImportError:
            return formats
    heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return (*formats, "HEIF")


def _check_av1_streams(data: bytes, max_pixels: int) -> None:
    """The pixel check for what libavif will really decode: its AV1 streams, whatever the `ispe` header says.

    See `likeness._avif_headers`. Twice `max_pixels`, because alpha (or a gain map) can double an honest
    photo's streams; measured, a 64×64 `ispe` over a 16384×16384 stream (3 KiB) cost ~1 GB and 1.2 s unchecked.
    """
    try:
        coded = coded_pixels(data)
    except ImageSequence as exc:
        raise InvalidImage(message="I can't read animated AVIF files. Please send a still photo.") from exc
    except ValueError as exc:
        raise InvalidImage(message="That image looks damaged. Please send it again.") from exc
    if coded > 2 * max_pixels:
        raise _bomb(max_pixels)


def _accepted() -> str:
    """The photo formats we read, for users: "JPEG, PNG, WebP, AVIF or HEIC" (GIF and BMP go unmentioned)."""
    names = ["JPEG", "PNG", "WebP"] + [
        name for fmt, name in (("AVIF", "AVIF"), ("HEIF", "HEIC")) if fmt in _input_formats()
    ]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF file (HEIF, AVIF); empty for anything else."""
    if data[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    return {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}  # bytes 12-16: minor version


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    """`img` scaled down so its long side is `max_side` (sides kept ≥ 16 px); returned as is if it fits.

    `reducing_gap=1.5` first shrinks by a whole factor with a box filter when the scale allows (a 48 MP photo:
    by 2), then Lanczos does the rest: measured 0.19 s instead of 0.55 s for 8000×6000 → 2048×1536, within
    2 levels of plain Lanczos (mean 0.2). 12 MP photos take plain Lanczos either way (~0.17 s).
    """
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(_MIN_SIDE, round(img.width * scale)), max(_MIN_SIDE, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=1.5)


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


def _bomb(max_pixels: int) -> InvalidImage:
    return InvalidImage(
        message=f"That image has too many pixels (limit {max_pixels / 1e6:g} megapixels). Please send a normal photo."
    )
