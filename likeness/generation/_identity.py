"""The one step from a selfie to the picture the identity adapter sees."""

from __future__ import annotations

from PIL import Image

__all__ = ["identity_image"]

# CLIP encoders see 224² pixels; a little more keeps resampling sharp without holding 40 MP in memory.
_MAX_SIDE = 448


def identity_image(selfie: Image.Image) -> Image.Image:
    """The centred square crop of `selfie`, at most 448² pixels, in RGB.

    Every path (single, batched, best-of) goes through here, so a face crop can later replace the
    centre crop in one place.
    """
    rgb = selfie if selfie.mode == "RGB" else selfie.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side > _MAX_SIDE:
        square = square.resize((_MAX_SIDE, _MAX_SIDE), Image.Resampling.LANCZOS)
    return square
