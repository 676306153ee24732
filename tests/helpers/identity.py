"""Face analyzers and scorers tests control, for the identity paths of the engine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from likeness.generation import Face, FaceAnalysis
from tests.helpers.faces import shared_analyzer

__all__ = ["ArcFaceStandIn", "brightness_scorer"]


class ArcFaceStandIn:
    """An "insightface" analyzer without insightface: dlib finds and crops the face, and its 128-d embedding
    is lifted to a deterministic, normed 512-d one (a fixed random projection chosen by `seed`).

    Same face → same embedding, other face → other embedding, like ArcFace; the insightface package
    (and its non-commercial model pack) is not needed to run the FaceID path.
    """

    backend = "insightface"

    def __init__(self, seed: int = 0) -> None:
        self._dlib = shared_analyzer()
        self._projection = np.random.default_rng(seed).standard_normal((128, 512))

    def load(self) -> None:
        self._dlib.load()

    def _lift(self, face: Face) -> Face:
        vector = np.asarray(face.embedding) @ self._projection
        vector /= np.linalg.norm(vector)
        return replace(face, embedding=tuple(float(v) for v in vector), backend=self.backend)

    def analyze(self, image: Image.Image) -> FaceAnalysis:
        analysis = self._dlib.analyze(image)
        return replace(analysis, face=self._lift(analysis.face))

    def main_face(self, image: Image.Image) -> Face | None:
        face = self._dlib.main_face(image)
        return None if face is None else self._lift(face)


def brightness_scorer(reference: Face, image: Image.Image) -> float:
    """A likeness "score" that is just the image's mean brightness in %: predictable ranking for best-of tests."""
    return float(np.asarray(image.convert("L"), dtype=np.float64).mean() / 255 * 100)
