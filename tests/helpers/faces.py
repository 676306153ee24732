"""Real face photos that ship inside installed packages, and augmented copies of them.

- `astronaut()`: scikit-image's Eileen Collins portrait (512², face ≈ 90 px, plus a mission patch that
  HOG mistakes for a face when upsampled).
- `grace_hopper()`: matplotlib's sample portrait (512×600, face ≈ 200 px): a different person.
- `coffee()`: scikit-image's coffee cup, no face.

Builders return fresh copies, so tests may mutate them.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageEnhance

from likeness.generation._faces_dlib import DlibFaceAnalyzer

__all__ = [
    "astronaut",
    "coffee",
    "colour_jitter",
    "crop",
    "grace_hopper",
    "jpeg",
    "jpeg_with_exif",
    "shared_analyzer",
    "shrink",
    "two_faces",
]


@functools.cache
def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@functools.cache
def _grace_hopper() -> Image.Image:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return img.convert("RGB")


@functools.cache
def _coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


def astronaut() -> Image.Image:
    return _astronaut().copy()


def grace_hopper() -> Image.Image:
    return _grace_hopper().copy()


def coffee() -> Image.Image:
    return _coffee().copy()


@functools.cache
def shared_analyzer() -> DlibFaceAnalyzer:
    """One dlib analyzer for the whole test run (models load once, ≈0.4 s)."""
    return DlibFaceAnalyzer()


def crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A tighter framing of the same photo."""
    return image.crop(box)


def shrink(image: Image.Image, factor: float) -> Image.Image:
    """The photo resized by `factor` (both sides)."""
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def colour_jitter(image: Image.Image, *, brightness: float, contrast: float, saturation: float) -> Image.Image:
    """Brightness, contrast and saturation changed like a different camera or filter would."""
    out = ImageEnhance.Brightness(image).enhance(brightness)
    out = ImageEnhance.Contrast(out).enhance(contrast)
    return ImageEnhance.Color(out).enhance(saturation)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The photo after a lossy JPEG round trip (as chat apps do)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def two_faces() -> Image.Image:
    """Grace Hopper (face ≈ 190 px) beside a smaller astronaut (face ≈ 90 px) on one grey canvas."""
    big = grace_hopper()
    small = crop(astronaut(), (96, 0, 352, 256))
    canvas = Image.new("RGB", (big.width + small.width + 40, big.height), (128, 128, 128))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width + 20, 120))
    return canvas


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Random pixels: an 'output' with no face in it."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def jpeg_with_exif(image: Image.Image) -> bytes:
    """JPEG bytes carrying EXIF with a camera model and GPS position (to check outputs drop them)."""
    exif = Image.Exif()
    exif[0x0110] = "Test Camera"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 24.0)  # GPSLatitudeRef, GPSLatitude
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=90)
    return buf.getvalue()
