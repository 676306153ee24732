"""Face analysis: find the main face of a photo, embed it, and crop it aligned for the identity adapter.

This module holds what the backends share (the `FaceAnalyzer` protocol, `Face`, boxes, plausibility checks,
alignment); each backend is a module of its own, chosen by `_face_backends.load_face_analyzer`:

- `DlibFaceAnalyzer` (default, ``face_backend = "dlib"``): dlib's HOG frontal detector (weak hits
  confirmed by its CNN detector), the 5-point landmark model and the ResNet recognition model (128-d
  embeddings, L2 distance < 0.6 = same person). Model files come from the `face_recognition_models`
  package folder, loaded by path (importing that package, or `face_recognition`, needs `pkg_resources`,
  gone from new setuptools). These models are public domain; the 68-point landmark model is trained on
  non-commercial data, so it is never used.
- `InsightFaceAnalyzer` (``face_backend = "insightface"``): ArcFace `buffalo_l` (512-d normed embeddings).
  Optional: needs `pip install insightface onnxruntime`; downloads its model pack on first use.

Images arrive upright RGB (`likeness.images.load_image` applies EXIF orientation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from likeness.errors import FaceTooSmall, NoFace

__all__ = [
    "CROP_MARGIN",
    "CROP_SIZE",
    "MIN_FACE_PX",
    "Box",
    "Detection",
    "Face",
    "FaceAnalysis",
    "FaceAnalyzer",
    "Point",
    "align_crop",
    "analysis_of",
    "count_usable",
    "detection_scales",
    "midpoint",
    "resize_for_detection",
    "scaled",
    "sorted_plausible",
]

MIN_FACE_PX = 64
"""Smallest accepted face (side of the detector's box, in pixels of the photo as sent).

Below this the identity embedding is mostly noise and the adapter has too little to work with."""

CROP_SIZE = 512
"""Side of the aligned face crop handed to the identity adapter (it resizes further as it needs)."""

CROP_MARGIN = 1.8
"""Crop side as a multiple of the face box side: enough context for hair and chin."""

# Detection runs on a copy whose long side is at most this, then on 2x, 4x... copies while nothing is
# found (HOG's 80 px window misses smaller faces), as long as the copy stays under the pixel budget.
_DETECT_SIDE = 1024
_DETECT_BUDGET = 2100 * 2100
_MAX_MAGNIFICATION = 4.0

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """Axis-aligned face box in pixels of the analysed image."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def side(self) -> float:
        """The face size: the longer side of the box."""
        return max(self.width, self.height)

    @property
    def center(self) -> Point:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def scaled(self, factor: float) -> Box:
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)


@dataclass(frozen=True)
class Face:
    """One face: where it is, its key points and its identity embedding (all in original image pixels).

    `left_eye` is the eye on the image's left. `landmarks` are the backend's raw points (dlib: 5 points,
    insightface: 5 points in its own order). `embedding` is only comparable within one `backend`.
    """

    box: Box
    left_eye: Point
    right_eye: Point
    nose: Point
    landmarks: tuple[Point, ...]
    embedding: tuple[float, ...]
    backend: str
    detector_score: float

    @property
    def size(self) -> int:
        """Face size in pixels (box side, rounded)."""
        return round(self.box.side)

    @property
    def roll_degrees(self) -> float:
        """Angle of the eye line against the horizontal (positive: the right eye is lower)."""
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        return math.degrees(math.atan2(ry - ly, rx - lx))


@dataclass(frozen=True)
class FaceAnalysis:
    """The main face of a photo, its aligned square crop, how many usable faces were seen, notes for the user."""

    face: Face
    crop: Image.Image
    faces_found: int
    notices: tuple[str, ...] = ()


@runtime_checkable
class FaceAnalyzer(Protocol):
    """Finds and embeds faces. Implementations load their models once, lazily, and are thread-safe."""

    @property
    def backend(self) -> str:
        """Name of the embedding space (`Face.backend`): scores compare faces of one backend only."""
        ...

    def load(self) -> None:
        """Load the models now instead of on first use (idempotent)."""
        ...

    def analyze(self, image: Image.Image) -> FaceAnalysis:
        """Main face of a selfie with its crop; raises `NoFace` or `FaceTooSmall`."""
        ...

    def main_face(self, image: Image.Image) -> Face | None:
        """Main face of any image (e.g. a generated portrait), however small; `None` if there is none."""
        ...


# --- shared geometry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """A detector hit in pixels of the analysed image, before embedding."""

    box: Box
    left_eye: Point
    right_eye: Point
    nose: Point
    landmarks: tuple[Point, ...]
    score: float
    raw: Any = None  # backend object needed to embed this face (dlib shape, insightface Face)


def _plausible(det: Detection) -> bool:
    """Reject detector false positives (HOG fires on badges and patches) by the landmark geometry.

    A face has both eyes roughly level (roll < 45°), inside a slightly grown box, an eye distance of
    25–75 % of the box width, and the nose below the eye line, between the eyes, 0.3–1.3 eye distances down.
    """
    (lx, ly), (rx, ry) = det.left_eye, det.right_eye
    dx, dy = rx - lx, ry - ly
    eye_dist = math.hypot(dx, dy)
    box = det.box
    if box.width <= 0 or eye_dist <= 0 or dx <= 0:
        return False
    if abs(math.degrees(math.atan2(dy, dx))) > 45:
        return False
    if not 0.25 <= eye_dist / box.width <= 0.75:
        return False
    grow = 0.15 * box.side
    for x, y in (det.left_eye, det.right_eye, det.nose):
        if not (box.left - grow <= x <= box.right + grow and box.top - grow <= y <= box.bottom + grow):
            return False
    # Nose in the eye frame: `along` runs left eye -> right eye (0..1), `down` is perpendicular (in eye distances).
    ux, uy = dx / eye_dist, dy / eye_dist
    nx, ny = det.nose[0] - lx, det.nose[1] - ly
    along = (nx * ux + ny * uy) / eye_dist
    down = (-nx * uy + ny * ux) / eye_dist
    return 0.1 <= along <= 0.9 and 0.3 <= down <= 1.3


def _face_center(left_eye: Point, right_eye: Point) -> Point:
    """Centre of the face: 0.6 eye distances below the eye midpoint, along the face's own vertical axis."""
    (lx, ly), (rx, ry) = left_eye, right_eye
    dx, dy = rx - lx, ry - ly
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    # (-dy, dx) is the eye line turned 90° towards the chin (image y grows downwards).
    return (mx - 0.6 * dy, my + 0.6 * dx)


def align_crop(image: Image.Image, face: Face, *, size: int = CROP_SIZE, margin: float = CROP_MARGIN) -> Image.Image:
    """Square crop around `face`, rotated so the eyes are level, resized to `size`².

    The crop side is `margin` × the face box side. When that square is larger than the photo it shrinks
    (down to 1.2× the face) and it slides to stay inside the photo; what still falls outside is black,
    as in the usual face-alignment crops the identity encoders were trained on.
    """
    if size < 16:
        raise ValueError(f"crop size must be at least 16 px, got {size}")
    if margin < 1:
        raise ValueError(f"crop margin must be at least 1, got {margin}")
    width, height = image.size
    side = min(margin * face.box.side, max(min(width, height), 1.2 * face.box.side))
    cx, cy = _face_center(face.left_eye, face.right_eye)
    if side <= width:
        cx = min(max(cx, side / 2), width - side / 2)
    if side <= height:
        cy = min(max(cy, side / 2), height - side / 2)
    theta = math.radians(face.roll_degrees)
    k = side / size  # input pixels per output pixel
    a, b = k * math.cos(theta), -k * math.sin(theta)
    d, e = k * math.sin(theta), k * math.cos(theta)
    half = size / 2
    # PIL's affine maps each output pixel to the input: x_in = a x + b y + c, y_in = d x + e y + f.
    coeffs = (a, b, cx - (a + b) * half, d, e, cy - (d + e) * half)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _several_faces_notice(count: int) -> str:
    return f"I found {count} faces and used the largest one."


def detection_scales(width: int, height: int) -> list[float]:
    """Resize factors to try, smallest first: from ≤ `_DETECT_SIDE` up by 2× while within the pixel budget."""
    factor = min(1.0, _DETECT_SIDE / max(width, height))
    scales = [factor]
    while True:
        factor *= 2
        if factor > _MAX_MAGNIFICATION or width * height * factor * factor > _DETECT_BUDGET:
            return scales
        scales.append(factor)


def resize_for_detection(image: Image.Image, factor: float) -> Image.Image:
    if factor == 1.0:
        return image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def sorted_plausible(detections: Sequence[Detection]) -> list[Detection]:
    return sorted((d for d in detections if _plausible(d)), key=lambda d: d.box.width * d.box.height, reverse=True)


def analysis_of(
    image: Image.Image, found: tuple[Face, int] | None, *, min_face_px: int, crop_size: int, margin: float
) -> FaceAnalysis:
    """Turn a backend's find (main face, usable face count) into a selfie analysis, or the user's error."""
    if found is None:
        raise NoFace()
    face, faces_found = found
    if face.box.side < min_face_px:
        raise FaceTooSmall(size=face.size)
    notices = (_several_faces_notice(faces_found),) if faces_found > 1 else ()
    return FaceAnalysis(
        face=face, crop=align_crop(image, face, size=crop_size, margin=margin), faces_found=faces_found, notices=notices
    )


def count_usable(detections: Sequence[Detection], factor: float, min_face_px: int) -> int:
    """Faces worth mentioning to the user: plausible and at least the minimum size (the main one always)."""
    return max(1, sum(1 for d in detections if d.box.side / factor >= min_face_px))


def midpoint(a: Point, b: Point) -> Point:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def scaled(p: Point, factor: float) -> Point:
    return (p[0] * factor, p[1] * factor)
