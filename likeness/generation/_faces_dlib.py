"""The dlib face backend (default, `face_backend = "dlib"`): HOG detector (weak hits confirmed by the CNN
detector), the 5-point landmark model and the ResNet recognition model (128-d embeddings, L2 < 0.6 = same
person). Model files come from the `face_recognition_models` package folder, loaded by path."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

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
    detection_scales,
    midpoint,
    resize_for_detection,
    scaled,
    sorted_plausible,
)

__all__ = ["DlibFaceAnalyzer", "dlib_model_files", "dlib_models_dir"]

# HOG scores real frontal faces ≈ 1–1.6 and its false positives (badges, patches) ≈ 0–0.3. Hits below this
# are confirmed by dlib's CNN detector on a small crop around them (≈0.2 s each, at most a few per image).
_CONFIDENT_SCORE = 0.5
_MAX_VERIFICATIONS = 3


def dlib_models_dir() -> Path:
    """The `face_recognition_models/models` folder, found without importing the package (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            message="The dlib face backend needs its model files: pip install dlib-bin face-recognition-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def dlib_model_files(folder: Path) -> tuple[Path, Path, Path]:
    """Paths of the 5-point landmark, ResNet recognition and CNN detector models; `ConfigError` if one is missing."""
    paths = (
        folder / "shape_predictor_5_face_landmarks.dat",
        folder / "dlib_face_recognition_resnet_model_v1.dat",
        folder / "mmod_human_face_detector.dat",
    )
    for path in paths:
        if not path.is_file():
            raise ConfigError(message=f"dlib face model file missing: {path} (pip install face-recognition-models)")
    return paths


class _DlibModels(NamedTuple):
    detector: Any  # HOG frontal face detector
    predictor: Any  # 5-point shape predictor
    recognizer: Any  # ResNet face recognition model
    cnn: Any  # MMOD CNN face detector, only to confirm weak HOG hits


class DlibFaceAnalyzer:
    """dlib backend: HOG detector, 5-point landmarks, ResNet 128-d embeddings (CPU, ≈0.1 s on a 512² selfie).

    Models load on first use (≈0.4 s), once per analyzer. dlib's detector crashes when one instance runs
    in two threads at once and the networks keep scratch state, so each analyzer works one image at a
    time under a lock: safe to share between threads, not parallel (make one analyzer per thread for that).
    """

    backend = "dlib"

    def __init__(
        self,
        models_dir: Path | None = None,
        *,
        min_face_px: int = MIN_FACE_PX,
        crop_size: int = CROP_SIZE,
        crop_margin: float = CROP_MARGIN,
    ) -> None:
        self._models_dir = models_dir
        self.min_face_px = min_face_px
        self.crop_size = crop_size
        self.crop_margin = crop_margin
        self._lock = threading.Lock()
        self._models: _DlibModels | None = None

    def _load(self) -> _DlibModels:
        """The models, loaded on first call; call with `self._lock` held."""
        if self._models is None:
            landmarks, resnet, cnn = dlib_model_files(self._models_dir or dlib_models_dir())
            try:
                import dlib
            except ImportError as exc:
                raise ConfigError(message="The dlib face backend needs dlib: pip install dlib-bin") from exc
            self._models = _DlibModels(
                detector=dlib.get_frontal_face_detector(),
                predictor=dlib.shape_predictor(str(landmarks)),
                recognizer=dlib.face_recognition_model_v1(str(resnet)),
                cnn=dlib.cnn_face_detection_model_v1(str(cnn)),
            )
        return self._models

    def load(self) -> None:
        """Load the models now (idempotent), e.g. at worker startup so the first selfie isn't slower."""
        with self._lock:
            self._load()

    def _find(self, image: Image.Image) -> tuple[Face, int] | None:
        """Main face (embedded, in original pixels) and the usable face count, or None."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        with self._lock:
            models = self._load()
            for factor in detection_scales(*rgb.size):
                pixels = np.asarray(resize_for_detection(rgb, factor))
                faces = _confirmed(models, pixels, sorted_plausible(_detect(models, pixels)))
                if not faces:
                    continue
                main = faces[0]
                embedding = models.recognizer.compute_face_descriptor(pixels, main.raw)
                face = Face(
                    box=main.box.scaled(1 / factor),
                    left_eye=scaled(main.left_eye, 1 / factor),
                    right_eye=scaled(main.right_eye, 1 / factor),
                    nose=scaled(main.nose, 1 / factor),
                    landmarks=tuple(scaled(p, 1 / factor) for p in main.landmarks),
                    embedding=tuple(float(v) for v in embedding),
                    backend=self.backend,
                    detector_score=main.score,
                )
                return face, count_usable(faces, factor, self.min_face_px)
        return None

    def analyze(self, image: Image.Image) -> FaceAnalysis:
        """Main face of a selfie with its aligned crop; raises `NoFace` or `FaceTooSmall`."""
        return analysis_of(
            image, self._find(image), min_face_px=self.min_face_px, crop_size=self.crop_size, margin=self.crop_margin
        )

    def main_face(self, image: Image.Image) -> Face | None:
        """Largest plausible face of any image, with its embedding; `None` if there is none."""
        found = self._find(image)
        return None if found is None else found[0]


def _detect(models: _DlibModels, pixels: np.ndarray) -> list[Detection]:
    """HOG hits with their 5-point landmarks."""
    rects, scores, _ = models.detector.run(pixels, 0, 0.0)
    detections = []
    for rect, score in zip(rects, scores, strict=True):
        shape = models.predictor(pixels, rect)
        # 5-point model: 0-1 corners of the image-right eye, 2-3 of the image-left eye, 4 under the nose.
        pts = tuple((float(p.x), float(p.y)) for p in shape.parts())
        detections.append(
            Detection(
                box=Box(float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)),
                left_eye=midpoint(pts[2], pts[3]),
                right_eye=midpoint(pts[0], pts[1]),
                nose=pts[4],
                landmarks=pts,
                score=float(score),
                raw=shape,
            )
        )
    return detections


def _confirmed(models: _DlibModels, pixels: np.ndarray, detections: Sequence[Detection]) -> list[Detection]:
    """Keep confident HOG hits, and weak ones the CNN detector also sees (at most `_MAX_VERIFICATIONS` checks)."""
    kept = []
    budget = _MAX_VERIFICATIONS
    for det in detections:
        if det.score >= _CONFIDENT_SCORE:
            kept.append(det)
        elif budget > 0:
            budget -= 1
            if _cnn_sees_face(models, pixels, det.box):
                kept.append(det)
    return kept


def _cnn_sees_face(models: _DlibModels, pixels: np.ndarray, box: Box) -> bool:
    """Run the CNN detector on a 200² crop twice the size of `box`: does it find a face in the middle?"""
    cx, cy = box.center
    half = box.side
    region = Image.fromarray(pixels).crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    for hit in models.cnn(np.asarray(region.resize((200, 200), Image.Resampling.BILINEAR)), 0):
        r = hit.rect
        hx, hy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        if abs(hx - 100) < 35 and abs(hy - 100) < 35 and r.width() > 50:
            return True
    return False
