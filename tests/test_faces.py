"""Face analysis on real photos with the real dlib models (no mocks)."""

from __future__ import annotations

import importlib.machinery
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from likeness.errors import ConfigError, FaceTooSmall, LikenessError, NoFace
from likeness.generation import load_face_analyzer
from likeness.generation._faces import CROP_SIZE, MIN_FACE_PX, FaceAnalyzer, align_crop
from likeness.generation._faces_dlib import DlibFaceAnalyzer
from tests.helpers.faces import astronaut, coffee, crop, grace_hopper, jpeg, noise, shared_analyzer, shrink, two_faces


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return shared_analyzer()


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def test_astronaut_face_is_found_not_the_mission_patch(analyzer: DlibFaceAnalyzer) -> None:
    result = analyzer.analyze(astronaut())
    box = result.face.box
    # The face sits in the upper middle of the portrait; the patch HOG likes is low on the left (y > 330).
    assert 150 < box.center[0] < 300 and box.center[1] < 200
    assert MIN_FACE_PX <= result.face.size <= 150
    assert result.faces_found == 1 and result.notices == ()
    left, right, nose = result.face.left_eye, result.face.right_eye, result.face.nose
    assert left[0] < nose[0] < right[0] and nose[1] > max(left[1], right[1])
    assert len(result.face.embedding) == 128 and result.face.backend == "dlib"
    assert pickle.loads(pickle.dumps(result.face)) == result.face  # can be cached beside the selfie


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_other_image_modes_are_analysed_as_rgb(analyzer: DlibFaceAnalyzer, mode: str) -> None:
    result = analyzer.analyze(astronaut().convert(mode))
    assert result.crop.mode == "RGB" and result.face.box.center[1] < 200


def test_tiny_image_is_no_face_not_a_crash(analyzer: DlibFaceAnalyzer) -> None:
    with pytest.raises(NoFace):
        analyzer.analyze(shrink(astronaut(), 1 / 32))  # 16x16


def test_crop_is_square_aligned_and_centred_on_the_same_face(analyzer: DlibFaceAnalyzer) -> None:
    result = analyzer.analyze(astronaut())
    assert result.crop.size == (CROP_SIZE, CROP_SIZE) and result.crop.mode == "RGB"
    inside = analyzer.main_face(result.crop)
    assert inside is not None
    assert abs(inside.roll_degrees) < 3
    cx, cy = inside.box.center
    assert abs(cx - CROP_SIZE / 2) < 0.1 * CROP_SIZE and abs(cy - CROP_SIZE / 2) < 0.15 * CROP_SIZE
    # The face fills about 1/margin of the crop: context for hair and chin, not a thumbnail.
    assert 0.4 < inside.box.side / CROP_SIZE < 0.75
    assert _distance(inside.embedding, result.face.embedding) < 0.3


def test_tilted_head_is_rotated_level_in_the_crop(analyzer: DlibFaceAnalyzer) -> None:
    tilted = astronaut().rotate(15, resample=Image.Resampling.BICUBIC)
    result = analyzer.analyze(tilted)
    assert abs(result.face.roll_degrees) > 10
    inside = analyzer.main_face(result.crop)
    assert inside is not None and abs(inside.roll_degrees) < 3


def test_crop_slides_inside_the_photo_instead_of_padding(analyzer: DlibFaceAnalyzer) -> None:
    # The face touches the left border: a centred 1.8x square would stick out on the left.
    photo = crop(astronaut(), (170, 40, 470, 340))
    result = analyzer.analyze(photo)
    pixels = np.asarray(result.crop)
    assert pixels[:, :8].mean() > 20, "left edge of the crop is black padding"
    assert analyzer.main_face(result.crop) is not None


def test_crop_pads_when_the_photo_is_smaller_than_the_margin(analyzer: DlibFaceAnalyzer) -> None:
    face = analyzer.analyze(astronaut()).face
    tight = crop(astronaut(), (170, 75, 275, 180))  # barely more than the face box
    moved = type(face)(
        box=type(face.box)(face.box.left - 170, face.box.top - 75, face.box.right - 170, face.box.bottom - 75),
        left_eye=(face.left_eye[0] - 170, face.left_eye[1] - 75),
        right_eye=(face.right_eye[0] - 170, face.right_eye[1] - 75),
        nose=(face.nose[0] - 170, face.nose[1] - 75),
        landmarks=(),
        embedding=face.embedding,
        backend=face.backend,
        detector_score=face.detector_score,
    )
    out = align_crop(tight, moved, size=128)
    assert out.size == (128, 128)
    corners = np.asarray(out)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all(), "outside the photo should be black"


def test_no_face_raises_nofaces_with_a_friendly_text(analyzer: DlibFaceAnalyzer) -> None:
    with pytest.raises(NoFace) as info:
        analyzer.analyze(coffee())
    assert "couldn't find a face" in info.value.user_message
    assert analyzer.main_face(coffee()) is None
    assert analyzer.main_face(noise((256, 256), seed=1)) is None


def test_small_face_raises_face_too_small_with_its_size(analyzer: DlibFaceAnalyzer) -> None:
    with pytest.raises(FaceTooSmall) as info:
        analyzer.analyze(shrink(astronaut(), 0.5))
    size = info.value.size
    assert 30 <= size < MIN_FACE_PX
    assert f"({size}px)" in info.value.user_message and "closer photo" in info.value.user_message
    # main_face (used on outputs) still reports small faces instead of refusing them.
    assert analyzer.main_face(shrink(astronaut(), 0.5)) is not None


def test_face_just_above_the_minimum_is_accepted(analyzer: DlibFaceAnalyzer) -> None:
    result = analyzer.analyze(shrink(astronaut(), 0.8))
    assert MIN_FACE_PX <= result.face.size < 100


def test_two_faces_uses_the_larger_and_tells_the_user(analyzer: DlibFaceAnalyzer) -> None:
    photo = two_faces()
    result = analyzer.analyze(photo)
    hopper = analyzer.analyze(grace_hopper()).face
    assert result.face.box.right < grace_hopper().width  # the left (larger) face
    assert _distance(result.face.embedding, hopper.embedding) < 0.2
    assert result.faces_found == 2
    assert result.notices == ("I found 2 faces and used the largest one.",)


@pytest.mark.parametrize("quality", [30, 50])
def test_jpeg_artefacts_do_not_turn_the_patch_into_a_face(analyzer: DlibFaceAnalyzer, quality: int) -> None:
    # Re-encoded, the mission patch becomes a HOG hit larger than the real face; it must not win.
    result = analyzer.analyze(jpeg(astronaut(), quality))
    assert result.face.box.center[1] < 200
    assert result.faces_found == 1 and result.notices == ()


def test_large_photo_reports_boxes_in_its_own_pixels(analyzer: DlibFaceAnalyzer) -> None:
    small = analyzer.analyze(astronaut()).face
    big = analyzer.analyze(shrink(astronaut(), 3.0)).face  # 1536², detected on a downscaled copy
    for a, b in zip(
        (small.box.left, small.box.top, small.box.right, small.box.bottom),
        (big.box.left, big.box.top, big.box.right, big.box.bottom),
        strict=True,
    ):
        assert abs(3 * a - b) < 0.1 * 3 * small.box.side


def test_analysis_of_a_512_selfie_is_fast(analyzer: DlibFaceAnalyzer) -> None:
    photo = astronaut()
    analyzer.analyze(photo)  # models loaded
    start = time.perf_counter()
    analyzer.analyze(photo)
    assert time.perf_counter() - start < 1.0  # ≈0.1 s measured on 2 CPU cores


def test_one_analyzer_shared_by_threads_gives_the_same_faces() -> None:
    # dlib's detector segfaults when one instance runs in two threads at once: the analyzer must serialise.
    fresh = DlibFaceAnalyzer()
    photos = [astronaut(), grace_hopper(), astronaut(), grace_hopper()]
    with ThreadPoolExecutor(4) as pool:
        faces = list(pool.map(fresh.main_face, photos))
    assert all(face is not None for face in faces)
    assert faces[0] == faces[2] and faces[1] == faces[3]
    assert faces[0] != faces[1]


def test_dlib_is_the_default_backend(make_settings) -> None:  # type: ignore[no-untyped-def]
    analyzer = load_face_analyzer(make_settings())
    assert isinstance(analyzer, DlibFaceAnalyzer) and isinstance(analyzer, FaceAnalyzer)
    assert analyzer.backend == "dlib"


def test_insightface_without_the_package_is_a_config_error(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "insightface", None)  # as if not installed, even where it is
    with pytest.raises(ConfigError) as info:
        load_face_analyzer(make_settings(face_backend="insightface"))
    assert "pip install insightface" in str(info.value)


def test_missing_model_files_are_a_config_error(tmp_path: Path) -> None:
    analyzer = DlibFaceAnalyzer(models_dir=tmp_path)
    for call in (analyzer.load, lambda: analyzer.analyze(astronaut())):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(tmp_path) in str(info.value)


def test_missing_model_package_fails_at_startup(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(ConfigError, match="pip install"):
        load_face_analyzer(make_settings())


@pytest.mark.parametrize(
    "error", [NoFace(), FaceTooSmall(size=44), ConfigError(message="pip install insightface")], ids=type
)
def test_face_errors_survive_pickling(error: LikenessError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert clone.user_message == error.user_message
    assert clone.data == error.data


class _FakeInsightApp:
    """Stands in for `insightface.app.FaceAnalysis` (not installable offline: it downloads its models).

    Same surface as insightface 0.7: `FaceAnalysis(name, root, allowed_modules, providers)`,
    `prepare(ctx_id, det_size)`, `get(bgr) -> [Face(bbox, kps, det_score, normed_embedding)]`.
    Its answers come from dlib on the same pixels, plus one implausible hit (nose above the eyes).
    """

    seen: ClassVar[list[np.ndarray]] = []

    def __init__(self, *, name: str, root: str, allowed_modules: list[str], providers: list[str]) -> None:
        assert name == "buffalo_l" and "recognition" in allowed_modules and providers[-1] == "CPUExecutionProvider"
        self.root = root

    def prepare(self, ctx_id: int, det_size: tuple[int, int]) -> None:
        assert det_size == (640, 640)

    def get(self, bgr: np.ndarray) -> list[object]:
        from types import SimpleNamespace

        self.seen.append(bgr)
        face = shared_analyzer().main_face(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])))
        if face is None:
            return []
        b = face.box
        vector = np.resize(np.asarray(face.embedding), 512)
        real = SimpleNamespace(
            bbox=np.array([b.left, b.top, b.right, b.bottom], dtype=np.float32),
            kps=np.array([face.left_eye, face.right_eye, face.nose, face.nose, face.nose], dtype=np.float32),
            det_score=np.float32(0.9),
            normed_embedding=(vector / np.linalg.norm(vector)).astype(np.float32),
        )
        upside_down = SimpleNamespace(
            bbox=np.array([0, 0, 400, 400], dtype=np.float32),  # larger, but not a face
            kps=np.array([[100, 300], [300, 300], [200, 100], [150, 50], [250, 50]], dtype=np.float32),
            det_score=np.float32(0.6),
            normed_embedding=np.ones(512, dtype=np.float32) / np.sqrt(512),
        )
        return [upside_down, real]


def test_insightface_backend_glue(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Our side of the insightface backend: BGR input, landmark order, plausibility, crop, cosine score."""
    import types

    from likeness.generation._scoring import likeness_score

    app_module = types.ModuleType("insightface.app")
    app_module.FaceAnalysis = _FakeInsightApp  # type: ignore[attr-defined]
    package = types.ModuleType("insightface")
    package.__path__ = []  # a package, so find_spec sees it
    package.__spec__ = importlib.machinery.ModuleSpec("insightface", None, is_package=True)
    package.app = app_module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "insightface", package)
    monkeypatch.setitem(sys.modules, "insightface.app", app_module)

    analyzer = load_face_analyzer(make_settings(face_backend="insightface", device="cpu"))
    assert analyzer.backend == "insightface" and isinstance(analyzer, FaceAnalyzer)
    photo = astronaut()
    result = analyzer.analyze(photo)
    assert np.array_equal(_FakeInsightApp.seen[-1][:, :, ::-1], np.asarray(photo)), "insightface wants BGR"
    assert result.face.box.center[1] < 200 and result.faces_found == 1  # the upside-down hit was rejected
    assert len(result.face.embedding) == 512 and result.face.backend == "insightface"
    assert result.crop.size == (CROP_SIZE, CROP_SIZE)
    same = likeness_score(analyzer, result.face, jpeg(astronaut(), 50))
    other = likeness_score(analyzer, result.face, grace_hopper())
    # dlib vectors are not centred like ArcFace's, so only the order is meaningful with this stand-in.
    assert same is not None and other is not None and same > 90 and same > other
    assert likeness_score(analyzer, result.face, coffee()) is None
    with pytest.raises(NoFace):
        analyzer.analyze(coffee())
