"""Edit masks: probabilities (CLIPSeg) or a user's mask image → the exact pixels an edit may change.

Steps for a text-chosen region: 1. threshold the probabilities, 2. remove small islands and fill small
holes, 3. invert (background = not the person), 4. check coverage (an empty or all-covering mask is a user
error), 5. grow the region by a margin, 6. feather inside that margin. The blend weight `alpha` is 1 on
the region, ramps down across the margin and is exactly 0 beyond it, so compositing keeps every pixel
outside the grown area byte-identical to the source.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from likeness.errors import EmptyMask, InvalidImage
from likeness.images import sniff_image

__all__ = [
    "MAX_COVERAGE",
    "MIN_COVERAGE",
    "EditMask",
    "MaskProvider",
    "clean_mask",
    "composite",
    "load_user_mask",
    "mask_from_probabilities",
    "mask_from_user_image",
]

MaskProvider = Callable[[Image.Image, Sequence[str]], np.ndarray]
"""`(image, queries) -> float (H, W) probabilities in [0, 1]`; `TextMasker` is one, tests inject others."""

MIN_COVERAGE = 0.005
MAX_COVERAGE = 0.97
DEFAULT_THRESHOLD = 0.4
# Islands (and holes) smaller than this fraction of the image are noise, not a region.
MIN_ISLAND = 0.002


@dataclass(frozen=True, eq=False)
class EditMask:
    """Where an edit applies, at the source image's size.

    `region` is what was asked for (fully redrawn); `area` is the region grown by the margin (the only
    pixels that may differ from the source); `alpha` is the blend weight (1 on region, 0 outside area).
    """

    region: np.ndarray
    area: np.ndarray
    alpha: np.ndarray
    coverage: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), like PIL."""
        return self.region.shape[1], self.region.shape[0]

    def image(self) -> Image.Image:
        """The grown area as a black/white "L" image (white = inpaint), for the diffusers pipeline."""
        return Image.fromarray(np.where(self.area, 255, 0).astype(np.uint8), mode="L")

    def bbox_fraction(self) -> float:
        """Area of the grown mask's bounding box over the image area (small → crop around it)."""
        rows, cols = np.any(self.area, axis=1), np.any(self.area, axis=0)
        if not rows.any():
            return 0.0
        top, bottom = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
        left, right = np.argmax(cols), len(cols) - np.argmax(cols[::-1])
        return float((bottom - top) * (right - left)) / self.area.size


def mask_from_probabilities(
    probs: np.ndarray,
    *,
    label: str,
    threshold: float = DEFAULT_THRESHOLD,
    invert: bool = False,
    grow: float = 0.02,
) -> EditMask:
    """Threshold, clean, optionally invert, check coverage, grow by `grow` × short side, and feather.

    `label` names what was looked for (with `invert`, what is kept: "person") in the error a user sees
    when the mask is empty or covers everything.
    """
    if probs.ndim != 2 or probs.size == 0:
        raise ValueError(f"probabilities must be a non-empty 2-D array, got shape {probs.shape}")
    region = clean_mask(np.asarray(probs) >= threshold)
    if invert:
        region = ~region
    _check_coverage(region, label, inverted=invert)
    return _grow(region, grow)


def mask_from_user_image(mask: Image.Image, size: tuple[int, int], *, grow: float = 0.0) -> EditMask:
    """A user's mask (white = change): resized to `size` (width, height), binarised at 50 %, checked.

    Transparent pixels count as black ("keep"). A mask with another aspect ratio than the image is refused,
    because stretching it would edit the wrong place.
    """
    width, height = size
    if abs(mask.width / mask.height - width / height) > 0.02:
        raise InvalidImage(
            message=(
                f"The mask is {mask.width}×{mask.height} but the image is {width}×{height}. "
                "Please send a mask with the same shape as the image (white = change, black = keep)."
            )
        )
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        mask = Image.alpha_composite(black, rgba)
    grey = mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    region = np.asarray(grey) >= 128
    _check_coverage(region, "mask", user_mask=True)
    return _grow(region, grow)


def load_user_mask(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an uploaded mask (size limits and bomb checks as for photos), upright, keeping transparency.

    Unlike `likeness.images.load_image`, alpha is not flattened onto white: a transparent area means "keep".
    """
    sniff_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            upright = ImageOps.exif_transpose(img)
            transparent = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            mask = upright.convert("RGBA" if transparent else "L")
            mask.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(message="That mask image looks damaged or cut off. Please send it again.") from exc
    return mask


def clean_mask(region: np.ndarray, min_island: float = MIN_ISLAND) -> np.ndarray:
    """Drop connected islands and fill holes smaller than `min_island` × image area."""
    min_pixels = max(1, round(min_island * region.size))
    region = _drop_small(region, min_pixels)
    return ~_drop_small(~region, min_pixels)


def composite(source: Image.Image, generated: Image.Image, mask: EditMask) -> Image.Image:
    """`generated` blended over `source` by `mask.alpha`; pixels where alpha is 0 are the source's bytes."""
    src = np.asarray(source.convert("RGB"), dtype=np.uint8)
    if generated.size != source.size:
        generated = generated.resize(source.size, Image.Resampling.LANCZOS)
    gen = np.asarray(generated.convert("RGB"), dtype=np.float32)
    alpha = mask.alpha[..., None]
    blended = np.clip(np.rint(gen * alpha + src.astype(np.float32) * (1.0 - alpha)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(mask.area[..., None], blended, src), mode="RGB")


def _drop_small(region: np.ndarray, min_pixels: int) -> np.ndarray:
    labels, count = ndimage.label(region)
    if count == 0:
        return region.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return np.asarray(keep[labels], dtype=bool)


def _grow(region: np.ndarray, grow: float) -> EditMask:
    """Grow by a margin and ramp alpha from 1 (region edge) to 0 (margin edge)."""
    margin = round(grow * min(region.shape))
    coverage = float(region.mean())
    if margin <= 0:
        return EditMask(region=region, area=region.copy(), alpha=region.astype(np.float32), coverage=coverage)
    distance = ndimage.distance_transform_edt(~region)
    area = distance <= margin
    alpha = np.clip(1.0 - distance / (margin + 1.0), 0.0, 1.0).astype(np.float32)
    alpha[~area] = 0.0
    return EditMask(region=region, area=area, alpha=alpha, coverage=coverage)


def _check_coverage(region: np.ndarray, label: str, *, user_mask: bool = False, inverted: bool = False) -> None:
    """Refuse a region under `MIN_COVERAGE` or over `MAX_COVERAGE` with a text that says what to do instead."""
    coverage = float(region.mean())
    if MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        return
    empty = coverage < MIN_COVERAGE
    mask_hint = "send a mask image (white = the part to change) with your instruction"
    if user_mask:
        text = (
            "Your mask is (almost) all black, so there is nothing to change. Paint the part to change white."
            if empty
            else "Your mask is (almost) all white. Paint only the part to change white and keep the rest black."
        )
    elif inverted:
        text = (
            f"The {label} fills the whole picture, so there is nothing around it to change. Try naming a part "
            f"instead (e.g. “hair: …”), or {mask_hint}."
            if empty
            else f"I couldn't find the {label} in this image, so everything would be redrawn. Try a look for the "
            f"whole picture instead (e.g. “make it vintage”), or {mask_hint}."
        )
    else:
        text = (
            f"I couldn't find the {label} in this image, so there is nothing to change. Try naming it "
            f"differently, or {mask_hint}."
            if empty
            else f"The {label} covers almost the whole image, so this would redraw everything. Try a look for the "
            f"whole picture instead (e.g. “make it vintage”), or {mask_hint}."
        )
    raise EmptyMask(message=text)
