"""The likeness score: calibration curves, and real dlib scores on the same and different people."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from likeness.generation import _scoring
from likeness.generation._faces import Face
from likeness.generation._faces_dlib import DlibFaceAnalyzer
from likeness.generation._scoring import (
    CALIBRATIONS,
    distance_to_percent,
    face_similarity,
    format_score,
    likeness_score,
    similarity_to_percent,
)
from tests.helpers.faces import (
    astronaut,
    coffee,
    colour_jitter,
    crop,
    grace_hopper,
    jpeg,
    noise,
    shared_analyzer,
    shrink,
)


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return shared_analyzer()


@pytest.fixture(scope="module")
def selfie_face(analyzer: DlibFaceAnalyzer) -> Face:
    return analyzer.analyze(astronaut()).face


# --- calibration -------------------------------------------------------------------------------------------


def test_dlib_calibration_thresholds() -> None:
    assert distance_to_percent(0.6) == pytest.approx(50.0)  # dlib's same-person threshold
    assert distance_to_percent(0.3) >= 90
    assert distance_to_percent(0.9) <= 10
    assert distance_to_percent(0.0) > 99 and distance_to_percent(5.0) >= 0


def test_insightface_calibration_thresholds() -> None:
    assert similarity_to_percent(0.32) == pytest.approx(50.0)
    assert similarity_to_percent(0.6) >= 90
    assert similarity_to_percent(0.1) <= 10
    assert 0 <= similarity_to_percent(-1.0) < similarity_to_percent(1.0) <= 100


@given(st.floats(0, 3), st.floats(0, 3))
def test_closer_faces_never_score_lower(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= distance_to_percent(high) <= distance_to_percent(low) <= 100


@given(st.floats(-1, 1), st.floats(-1, 1))
def test_more_similar_faces_never_score_lower(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= similarity_to_percent(low) <= similarity_to_percent(high) <= 100


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_impossible_distances_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        distance_to_percent(bad)


def test_documented_tables_match_the_curves() -> None:
    """The tables in the module docstring are what operators read: they must be the real numbers."""
    doc = _scoring.__doc__ or ""
    tables = {
        "distance": (distance_to_percent, re.search(r"distance((?:\s+[\d.]+)+)\s+percent((?:\s+[\d.]+)+)", doc)),
        "similarity": (similarity_to_percent, re.search(r"similarity((?:\s+[\d.]+)+)\s+percent((?:\s+[\d.]+)+)", doc)),
    }
    for name, (curve, match) in tables.items():
        assert match, f"no {name} table in the docstring"
        raws, percents = (list(map(float, group.split())) for group in match.groups())
        assert len(raws) == len(percents) >= 6
        for raw, percent in zip(raws, percents, strict=True):
            assert curve(raw) == pytest.approx(percent, abs=0.05), (name, raw)


def test_every_backend_has_a_calibration() -> None:
    assert set(CALIBRATIONS) == {"dlib", "insightface"}
    assert CALIBRATIONS["dlib"].percent(0.6) == pytest.approx(50.0)
    assert CALIBRATIONS["insightface"].percent(0.32) == pytest.approx(50.0)
    assert CALIBRATIONS["insightface"].raw((1.0, 0.0), (2.0, 0.0)) == pytest.approx(1.0)
    assert CALIBRATIONS["dlib"].raw((0.0, 0.0), (3.0, 4.0)) == pytest.approx(5.0)


def test_format_score() -> None:
    assert format_score(None) == "n/a"
    assert format_score(87.4) == "87%"


# --- real faces --------------------------------------------------------------------------------------------


SAME_PERSON = {
    "crop": lambda: crop(astronaut(), (100, 20, 420, 340)),
    "smaller": lambda: shrink(astronaut(), 0.75),
    "larger": lambda: shrink(astronaut(), 1.6),
    "colour": lambda: colour_jitter(astronaut(), brightness=1.25, contrast=0.8, saturation=0.6),
    "jpeg": lambda: jpeg(astronaut(), 30),
    "tilted": lambda: astronaut().rotate(12, resample=Image.Resampling.BICUBIC),
}


@pytest.mark.parametrize("variant", sorted(SAME_PERSON))
def test_same_person_scores_high(analyzer: DlibFaceAnalyzer, selfie_face: Face, variant: str) -> None:
    score = likeness_score(analyzer, selfie_face, SAME_PERSON[variant]())
    assert score is not None
    assert score >= distance_to_percent(0.3)  # well inside the same-person side (≥ 95 %)


def test_different_person_scores_low(analyzer: DlibFaceAnalyzer, selfie_face: Face) -> None:
    score = likeness_score(analyzer, selfie_face, grace_hopper())
    same = likeness_score(analyzer, selfie_face, jpeg(astronaut(), 50))
    assert score is not None and same is not None
    assert score < 50  # the other side of dlib's 0.6 threshold
    assert same - score > 40


def test_score_is_symmetric(analyzer: DlibFaceAnalyzer, selfie_face: Face) -> None:
    hopper = analyzer.analyze(grace_hopper()).face
    assert face_similarity(selfie_face, hopper) == pytest.approx(face_similarity(hopper, selfie_face))
    assert face_similarity(selfie_face, selfie_face) == pytest.approx(distance_to_percent(0.0))


@pytest.mark.parametrize("image", [coffee, lambda: noise((320, 240), seed=3)], ids=["coffee", "noise"])
def test_output_without_a_face_has_no_score(analyzer: DlibFaceAnalyzer, selfie_face: Face, image) -> None:  # type: ignore[no-untyped-def]
    score = likeness_score(analyzer, selfie_face, image())
    assert score is None
    assert format_score(score) == "n/a"


def test_small_face_in_an_output_is_still_scored(analyzer: DlibFaceAnalyzer, selfie_face: Face) -> None:
    # A full-body preset makes small faces: they get a score, not a FaceTooSmall error.
    score = likeness_score(analyzer, selfie_face, shrink(astronaut(), 0.5))
    assert score is not None and score > 50


def test_faces_of_different_backends_are_not_compared(selfie_face: Face) -> None:
    other = Face(
        box=selfie_face.box,
        left_eye=selfie_face.left_eye,
        right_eye=selfie_face.right_eye,
        nose=selfie_face.nose,
        landmarks=(),
        embedding=(0.0,) * 512,
        backend="insightface",
        detector_score=1.0,
    )
    with pytest.raises(ValueError, match="insightface"):
        face_similarity(selfie_face, other)
