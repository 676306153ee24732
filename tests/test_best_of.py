"""Best-of-N selection: ranking, retry decision and strength, metadata; one run with the real scorer."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
from PIL import Image

from likeness.generation._best_of import (
    MAX_RETRY_STRENGTH,
    Candidate,
    needs_retry,
    retry_identity_strength,
    select_best,
)
from likeness.generation._scoring import likeness_score
from tests.helpers.faces import astronaut, coffee, colour_jitter, grace_hopper, jpeg, shared_analyzer, shrink


def _scorer(scores: dict[str, float | None]):  # type: ignore[no-untyped-def]
    """A scorer we control: candidates are named, the name says the score."""
    calls: list[str] = []

    def score(name: str) -> float | None:
        calls.append(name)
        return scores[name]

    return score, calls


def _candidates(*names: str) -> list[Candidate[str]]:
    return [Candidate(image=name, seed=100 + i) for i, name in enumerate(names)]


def test_keeps_the_best_k_sorted_by_score() -> None:
    score, calls = _scorer({"a": 40.0, "b": 91.0, "c": None, "d": 75.5, "e": 12.0})
    selection = select_best(_candidates("a", "b", "c", "d", "e"), score, keep=2)
    assert [c.image for c in selection.chosen] == ["b", "d"]
    assert [c.score for c in selection.chosen] == [91.0, 75.5]
    assert sorted(calls) == ["a", "b", "c", "d", "e"]  # each candidate scored exactly once


def test_candidates_without_a_face_rank_last() -> None:
    score, _ = _scorer({"a": None, "b": 3.0, "c": None})
    selection = select_best(_candidates("a", "b", "c"), score, keep=3)
    assert [c.image for c in selection.chosen] == ["b", "a", "c"]


def test_not_a_number_counts_as_no_face() -> None:
    score, _ = _scorer({"a": math.nan, "b": 10.0})
    selection = select_best(_candidates("a", "b"), score, keep=2)
    assert [c.image for c in selection.chosen] == ["b", "a"]
    assert selection.chosen[1].score is None


def test_ties_keep_generation_order() -> None:
    score, _ = _scorer({"a": 60.0, "b": 80.0, "c": 80.0, "d": 80.0})
    selection = select_best(_candidates("a", "b", "c", "d"), score, keep=2)
    assert [c.seed for c in selection.chosen] == [101, 102]


def test_keep_more_than_generated_returns_all() -> None:
    score, _ = _scorer({"a": 1.0, "b": 2.0})
    assert len(select_best(_candidates("a", "b"), score, keep=5).chosen) == 2


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_must_be_positive(keep: int) -> None:
    score, _ = _scorer({"a": 1.0})
    with pytest.raises(ValueError, match="keep"):
        select_best(_candidates("a"), score, keep=keep)


def test_no_candidates_is_an_error() -> None:
    score, _ = _scorer({})
    with pytest.raises(ValueError, match="at least one"):
        select_best([], score)


@pytest.mark.parametrize(
    ("scores", "retry"),
    [
        ([49.9, 10.0], True),
        ([None, None], True),
        ([None, 30.0], True),
        ([50.0, 10.0], False),  # reaching the threshold is enough
        ([None, 88.0], False),
        ([], False),
    ],
)
def test_retry_only_when_every_candidate_is_below_the_threshold(scores: list[float | None], retry: bool) -> None:
    assert needs_retry(scores, 50.0) is retry


@pytest.mark.parametrize(
    ("current", "expected"),
    [(0.0, 0.2), (0.6, 0.8), (0.7, 0.9), (0.9, MAX_RETRY_STRENGTH), (1.0, 1.0), (1.3, 1.3)],
)
def test_retry_strength_rises_but_is_capped(current: float, expected: float) -> None:
    assert retry_identity_strength(current) == expected


@pytest.mark.parametrize("bad", [-0.1, math.nan])
def test_retry_strength_rejects_nonsense(bad: float) -> None:
    with pytest.raises(ValueError):
        retry_identity_strength(bad)


def test_retry_pools_both_tries_and_records_everything() -> None:
    score, _ = _scorer({"a": 20.0, "b": None, "c": 45.0, "d": 70.0, "e": None})
    first = select_best(_candidates("a", "b", "c"), score, keep=2)
    assert needs_retry(first.scores, 50.0)
    second = select_best([Candidate("d", 7), Candidate("e", 8)], score, keep=2, earlier=first)
    assert second.tries == 2
    assert [(c.image, c.attempt) for c in second.chosen] == [("d", 2), ("c", 1)]
    record = second.record
    assert record.seeds == (100, 101, 102, 7, 8)
    assert record.scores == (20.0, None, 45.0, 70.0, None)
    assert record.attempts == (1, 1, 1, 2, 2)
    assert record.chosen_seeds == (7, 102)
    meta = json.loads(json.dumps(record.as_metadata()))
    assert meta["tries"] == 2 and meta["chosen_seeds"] == [7, 102]
    assert meta["candidates"][1] == {"seed": 101, "score": None, "try": 1}
    assert meta["candidates"][3] == {"seed": 7, "score": 70.0, "try": 2}


def test_real_scorer_prefers_the_user_over_a_stranger() -> None:
    analyzer = shared_analyzer()
    reference = analyzer.analyze(astronaut()).face
    scorer = partial(likeness_score, analyzer, reference)
    images: list[Image.Image] = [
        grace_hopper(),
        jpeg(shrink(astronaut(), 0.8), 60),
        coffee(),
        colour_jitter(astronaut(), brightness=0.8, contrast=1.2, saturation=1.3),
    ]
    candidates = [Candidate(image=image, seed=seed) for seed, image in enumerate(images)]
    selection = select_best(candidates, scorer, keep=2)
    assert sorted(c.seed for c in selection.chosen) == [1, 3]
    assert all(c.score is not None and c.score > 90 for c in selection.chosen)
    assert not needs_retry(selection.scores, 50.0)
    scores = dict(zip(selection.record.seeds, selection.record.scores, strict=True))
    assert scores[2] is None  # the coffee cup: n/a, not 0
    assert scores[0] is not None and scores[0] < 50
    # With only the stranger and the cup, every candidate is below 50 %: retry.
    assert needs_retry([scores[0], scores[2]], 50.0)
