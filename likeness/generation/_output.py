"""What every generated image goes through before it leaves a worker: the output guard and the AI marker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from likeness.generation._nsfw import NsfwGuard
from likeness.provenance import encode_with_provenance

__all__ = ["finish_images"]


def finish_images(
    images: Sequence[Image.Image],
    metadata: dict[str, Any],
    *,
    guard: NsfwGuard,
    watermark: bool,
    marked_source: Image.Image | None = None,
) -> tuple[list[float], list[bytes]]:
    """NSFW scores of `images` and their PNGs marked as AI-generated (model and preset from `metadata`).

    `marked_source`: the already marked image an edit started from; its unchanged pixels stay byte-identical.
    """
    scores = [float(score) for score in guard.score(list(images))]
    marker = {"model": str(metadata.get("model", "")), "preset": str(metadata.get("preset", ""))}
    pngs = [
        encode_with_provenance(image, "png", extra=marker, watermark=watermark, marked_source=marked_source)
        for image in images
    ]
    return scores, pngs
