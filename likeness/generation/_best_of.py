"""Best-of-N: generate N candidates per returned image, keep the ones that look most like the user.

Pure selection logic (no torch). The worker's flow:

    selection = select_best(candidates, scorer, keep=k)
    if needs_retry(selection.scores, settings.likeness_threshold):
        strength = retry_identity_strength(strength)      # +0.2, capped at 1.0
        selection = select_best(more_candidates, scorer, keep=k, earlier=selection)
    metadata["likeness"] = selection.record.as_metadata()

A retry happens once: the second selection picks from both tries' candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "MAX_RETRY_STRENGTH",
    "RETRY_STRENGTH_STEP",
    "BestOfRecord",
    "Candidate",
    "Scored",
    "Selection",
    "needs_retry",
    "retry_identity_strength",
    "select_best",
]

ImageT = TypeVar("ImageT")

RETRY_STRENGTH_STEP = 0.2
"""How much the identity strength rises for the retry."""

MAX_RETRY_STRENGTH = 1.0
"""The retry never raises the identity strength above this: higher values copy the selfie's pose and
lighting and wash out the style."""


@dataclass(frozen=True)
class Candidate(Generic[ImageT]):
    """One generated image and the seed that made it."""

    image: ImageT
    seed: int


@dataclass(frozen=True)
class Scored(Generic[ImageT]):
    """A candidate with its likeness score (`None`: no face in it) and the try (1 or 2) that made it."""

    image: ImageT
    seed: int
    score: float | None
    attempt: int


@dataclass(frozen=True)
class BestOfRecord:
    """What best-of-N did, for result metadata: every score in generation order, tries, chosen seeds."""

    seeds: tuple[int, ...]
    scores: tuple[float | None, ...]
    attempts: tuple[int, ...]
    tries: int
    chosen_seeds: tuple[int, ...]

    def as_metadata(self) -> dict[str, Any]:
        """JSON-able form: `{"tries": 2, "chosen_seeds": [...], "candidates": [{"seed", "score", "try"}...]}`."""
        return {
            "tries": self.tries,
            "chosen_seeds": list(self.chosen_seeds),
            "candidates": [
                {"seed": seed, "score": None if score is None else round(score, 1), "try": attempt}
                for seed, score, attempt in zip(self.seeds, self.scores, self.attempts, strict=True)
            ],
        }


@dataclass(frozen=True)
class Selection(Generic[ImageT]):
    """The chosen candidates (best first) and every scored candidate (generation order)."""

    chosen: tuple[Scored[ImageT], ...]
    candidates: tuple[Scored[ImageT], ...]
    tries: int

    @property
    def scores(self) -> tuple[float | None, ...]:
        """Scores of every candidate so far, in generation order."""
        return tuple(c.score for c in self.candidates)

    @property
    def record(self) -> BestOfRecord:
        return BestOfRecord(
            seeds=tuple(c.seed for c in self.candidates),
            scores=self.scores,
            attempts=tuple(c.attempt for c in self.candidates),
            tries=self.tries,
            chosen_seeds=tuple(c.seed for c in self.chosen),
        )


def _rank_key(scored: Scored[Any]) -> tuple[int, float]:
    # Faces first (highest score first), then candidates without a face; sorted() keeps generation order on ties.
    return (1, 0.0) if scored.score is None else (0, -scored.score)


def select_best(
    candidates: Iterable[Candidate[ImageT]],
    scorer: Callable[[ImageT], float | None],
    *,
    keep: int = 1,
    earlier: Selection[ImageT] | None = None,
) -> Selection[ImageT]:
    """Score `candidates` with `scorer` and keep the best `keep`, sorted by score (no face ranks last).

    `earlier`: the first try's selection; its candidates stay in the pool and this counts as the next try.
    A score that is not a finite number counts as no face.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    attempt = 1 if earlier is None else earlier.tries + 1
    fresh = []
    for candidate in candidates:
        score = scorer(candidate.image)
        if score is not None and not math.isfinite(score):
            score = None
        fresh.append(Scored(image=candidate.image, seed=candidate.seed, score=score, attempt=attempt))
    if not fresh:
        raise ValueError("best-of-N needs at least one candidate")
    pool = (*(earlier.candidates if earlier is not None else ()), *fresh)
    chosen = tuple(sorted(pool, key=_rank_key)[:keep])
    return Selection(chosen=chosen, candidates=pool, tries=attempt)


def needs_retry(scores: Sequence[float | None], threshold: float) -> bool:
    """True when no candidate reaches `threshold` % (candidates without a face never do).

    The caller retries once, with `retry_identity_strength`; an empty list needs no retry.
    """
    return bool(scores) and all(score is None or score < threshold for score in scores)


def retry_identity_strength(
    current: float, *, step: float = RETRY_STRENGTH_STEP, cap: float = MAX_RETRY_STRENGTH
) -> float:
    """Identity strength for the retry: `current + step`, at most `cap`, never below `current`.

    A preset already at or above the cap keeps its strength (the retry then only tries new seeds).
    """
    if not math.isfinite(current) or current < 0:
        raise ValueError(f"identity strength must be a finite number ≥ 0, got {current}")
    return max(current, round(min(current + step, cap), 6))  # 0.7 + 0.2 is 0.8999…; keep metadata tidy
