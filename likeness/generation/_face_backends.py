"""Which face analyzer a worker uses: `settings.face_backend` (dlib, or insightface when installed)."""

from __future__ import annotations

import importlib.util

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.generation._faces import FaceAnalyzer

__all__ = ["load_face_analyzer"]


def load_face_analyzer(settings: Settings) -> FaceAnalyzer:
    """The analyzer chosen by `settings.face_backend`; raises `ConfigError` if its packages are missing."""
    if settings.face_backend == "insightface":
        from likeness.generation._faces_insightface import InsightFaceAnalyzer  # optional packages

        return InsightFaceAnalyzer(settings.data_dir / "insightface", use_gpu=settings.device in ("auto", "cuda"))
    if importlib.util.find_spec("dlib") is None:
        raise ConfigError(message="The dlib face backend needs dlib: pip install dlib-bin face-recognition-models")
    from likeness.generation._faces_dlib import DlibFaceAnalyzer, dlib_model_files, dlib_models_dir

    dlib_model_files(dlib_models_dir())  # fail at startup, not on the first selfie
    return DlibFaceAnalyzer()
