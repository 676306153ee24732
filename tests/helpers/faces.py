"""Test images: real face photos that ship inside installed packages, and encoders for upload bytes."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def astronaut() -> Image.Image:
    """scikit-image's astronaut photo (Eileen Collins), 512² RGB."""
    from skimage import data

    return Image.fromarray(data.astronaut()).convert("RGB")


def grace_hopper() -> Image.Image:
    """matplotlib's sample photo of Grace Hopper, 512×600 RGB (another person than `astronaut`)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return img.convert("RGB")


def jpeg_with_exif(image: Image.Image) -> bytes:
    """JPEG bytes carrying EXIF with a camera model and GPS position (to check outputs drop them)."""
    exif = Image.Exif()
    exif[0x0110] = "Test Camera"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 24.0)  # GPSLatitudeRef, GPSLatitude
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif, quality=90)
    return buf.getvalue()
