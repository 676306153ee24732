"""The likeness score: how much an output's main face looks like the selfie's, as a percentage.

Each backend measures similarity its own way; a logistic curve centred on that backend's usual
same-person threshold maps it to 0–100 %, so 50 % means "at the edge of being the same person":

dlib (L2 distance between 128-d embeddings; dlib's own threshold is 0.6, 99.38 % on LFW):

    percent = 100 / (1 + exp((distance - 0.6) / 0.1))

    distance  0.2   0.3   0.4   0.5   0.6   0.7   0.8   0.9
    percent   98.2  95.3  88.1  73.1  50.0  26.9  11.9   4.7

insightface (cosine similarity between ArcFace buffalo_l embeddings; 0.32 is the usual verification
threshold, e.g. deepface's ArcFace cosine-distance threshold 0.68):

    percent = 100 / (1 + exp(-(similarity - 0.32) / 0.1))

    similarity  0.0   0.1   0.2   0.32  0.4   0.5   0.6   0.7
    percent     3.9   10.0  23.1  50.0  69.0  85.8  94.3  97.8

An output without a face has no score (`None`, shown as "n/a"): never 0, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from likeness.generation._faces import Face, FaceAnalyzer

__all__ = [
    "CALIBRATIONS",
    "Calibration",
    "distance_to_percent",
    "face_similarity",
    "format_score",
    "likeness_score",
    "similarity_to_percent",
]


@dataclass(frozen=True)
class Calibration:
    """How one backend's raw similarity maps to a percentage (a logistic curve)."""

    metric: Literal["l2", "cosine"]
    threshold: float
    """Raw value scored 50 %: the backend's usual same-person decision threshold."""
    width: float
    """Raw change that moves the score from 50 % to ≈73 % (or ≈27 %): smaller is steeper."""

    def raw(self, a: Sequence[float], b: Sequence[float]) -> float:
        """The backend's raw measure between two embeddings (L2 distance or cosine similarity)."""
        va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if va.shape != vb.shape:
            raise ValueError(f"embeddings differ in size: {va.shape} vs {vb.shape}")
        if self.metric == "l2":
            return float(np.linalg.norm(va - vb))
        norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
        return float(va @ vb / norms) if norms > 0 else 0.0

    def percent(self, raw: float) -> float:
        """Map a raw measure to 0–100 % (distances: lower is more alike; similarities: higher is)."""
        if self.metric == "l2":
            return distance_to_percent(raw, threshold=self.threshold, width=self.width)
        return similarity_to_percent(raw, threshold=self.threshold, width=self.width)


CALIBRATIONS: dict[str, Calibration] = {
    "dlib": Calibration(metric="l2", threshold=0.6, width=0.1),
    "insightface": Calibration(metric="cosine", threshold=0.32, width=0.1),
}


def _logistic_percent(x: float) -> float:
    # Split by sign so exp never overflows for far-off inputs.
    if x >= 0:
        return 100.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return 100.0 * z / (1.0 + z)


def distance_to_percent(distance: float, *, threshold: float = 0.6, width: float = 0.1) -> float:
    """Likeness in % for an embedding distance: `threshold` ↦ 50 %, smaller distances ↦ higher scores."""
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number ≥ 0, got {distance}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return _logistic_percent((threshold - distance) / width)


def similarity_to_percent(similarity: float, *, threshold: float = 0.32, width: float = 0.1) -> float:
    """Likeness in % for a cosine similarity: `threshold` ↦ 50 %, higher similarities ↦ higher scores."""
    if not math.isfinite(similarity) or not -1.0001 <= similarity <= 1.0001:
        raise ValueError(f"cosine similarity must be in [-1, 1], got {similarity}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return _logistic_percent((similarity - threshold) / width)


def face_similarity(reference: Face, face: Face) -> float:
    """Likeness in % between two faces embedded by the same backend."""
    if reference.backend != face.backend:
        raise ValueError(f"cannot compare a {reference.backend} face with a {face.backend} face")
    calibration = CALIBRATIONS.get(reference.backend)
    if calibration is None:
        raise ValueError(f"no likeness calibration for face backend {reference.backend!r}")
    return calibration.percent(calibration.raw(reference.embedding, face.embedding))


def likeness_score(analyzer: FaceAnalyzer, reference: Face, image: Image.Image) -> float | None:
    """Likeness in % of `image`'s main face to `reference` (the selfie's face); `None` if it has no face.

    `reference` must come from the same backend as `analyzer` (a `ValueError` otherwise: a wiring bug).
    """
    if reference.backend != analyzer.backend:
        raise ValueError(f"reference face is from {reference.backend}, analyzer is {analyzer.backend}")
    face = analyzer.main_face(image)
    return None if face is None else face_similarity(reference, face)


def format_score(score: float | None) -> str:
    """How a score is shown to users: whole percent, or "n/a" when the output has no face."""
    return "n/a" if score is None else f"{score:.0f}%"
