"""Optional ArcFace backend (insightface `buffalo_l`), chosen with `LIKENESS_FACE_BACKEND=insightface`."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from likeness.errors import ConfigError
from likeness.generation._faces import (
    CROP_MARGIN,
    CROP_SIZE,
    MIN_FACE_PX,
    Box,
    Detection,
    Face,
    FaceAnalysis,
    analysis_of,
    count_usable,
    sorted_plausible,
)

__all__ = ["INSIGHTFACE_HINT", "InsightFaceAnalyzer"]

INSIGHTFACE_HINT = (
    "face_backend = 'insightface' needs the insightface package: pip install insightface onnxruntime-gpu "
    "(or onnxruntime on CPU). Or set LIKENESS_FACE_BACKEND=dlib."
)


class InsightFaceAnalyzer:
    """ArcFace backend (insightface `buffalo_l`: RetinaFace detector, 512-d normed embeddings).

    More accurate than dlib and better at profiles and small faces, but its model pack is licensed for
    NON-COMMERCIAL research use only; operators must check their use allows it. The pack is downloaded
    into `root` (`<data_dir>/insightface`) on first use, so the first call needs network access.
    """

    backend = "insightface"

    def __init__(
        self,
        root: Path,
        *,
        use_gpu: bool = True,
        min_face_px: int = MIN_FACE_PX,
        crop_size: int = CROP_SIZE,
        crop_margin: float = CROP_MARGIN,
    ) -> None:
        if importlib.util.find_spec("insightface") is None:
            raise ConfigError(message=INSIGHTFACE_HINT)
        self._root = root
        self._use_gpu = use_gpu
        self.min_face_px = min_face_px
        self.crop_size = crop_size
        self.crop_margin = crop_margin
        self._lock = threading.Lock()
        self._app: Any = None

    def _load(self) -> Any:
        """The insightface app, prepared on first call; call with `self._lock` held."""
        if self._app is None:
            from insightface.app import FaceAnalysis as InsightApp

            providers = ["CUDAExecutionProvider"] if self._use_gpu else []
            app = InsightApp(
                name="buffalo_l",
                root=str(self._root),
                allowed_modules=["detection", "recognition"],
                providers=[*providers, "CPUExecutionProvider"],
            )
            app.prepare(ctx_id=0 if self._use_gpu else -1, det_size=(640, 640))
            self._app = app
        return self._app

    def load(self) -> None:
        """Load (and on first use download) the model pack now; idempotent."""
        with self._lock:
            self._load()

    def _find(self, image: Image.Image) -> tuple[Face, int] | None:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        with self._lock:  # one image at a time, like the dlib backend
            hits = self._load().get(bgr)
        detections = []
        for hit in hits:
            kps = tuple((float(x), float(y)) for x, y in hit.kps)  # left eye, right eye, nose, mouth l/r
            x1, y1, x2, y2 = (float(v) for v in hit.bbox)
            detections.append(
                Detection(
                    box=Box(x1, y1, x2, y2),
                    left_eye=kps[0],
                    right_eye=kps[1],
                    nose=kps[2],
                    landmarks=kps,
                    score=float(hit.det_score),
                    raw=hit,
                )
            )
        plausible = sorted_plausible(detections)
        if not plausible:
            return None
        main = plausible[0]
        face = Face(
            box=main.box,
            left_eye=main.left_eye,
            right_eye=main.right_eye,
            nose=main.nose,
            landmarks=main.landmarks,
            embedding=tuple(float(v) for v in main.raw.normed_embedding),
            backend=self.backend,
            detector_score=main.score,
        )
        return face, count_usable(plausible, 1.0, self.min_face_px)

    def analyze(self, image: Image.Image) -> FaceAnalysis:
        """Main face of a selfie with its aligned crop; raises `NoFace` or `FaceTooSmall`."""
        return analysis_of(
            image, self._find(image), min_face_px=self.min_face_px, crop_size=self.crop_size, margin=self.crop_margin
        )

    def main_face(self, image: Image.Image) -> Face | None:
        """Largest plausible face of any image, with its embedding; `None` if there is none."""
        found = self._find(image)
        return None if found is None else found[0]
