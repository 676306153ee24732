"""Deliver / spoiler / withhold for each place type, driven by a guard whose scores the test controls."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from PIL import Image

from likeness.bot._safety import Decision, Place, decide, is_flagged, notice
from likeness.generation._nsfw import NsfwGuard

CLEAN = (20, 120, 40)
EXPLICIT = (230, 180, 160)


class ColourGuard:
    """Scores an image by its top-left pixel: the test decides what is 'explicit'."""

    name = "fake"

    def __init__(self, scores: dict[tuple[int, int, int], float]) -> None:
        self.scores = scores

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        return [self.scores[img.convert("RGB").getpixel((0, 0))] for img in images]  # type: ignore[index]


NORMAL = Place(age_restricted=False, allow_nsfw=False)
NORMAL_OPTED_IN = Place(age_restricted=False, allow_nsfw=True)  # a community opt-in cannot make a place 18+
RESTRICTED = Place(age_restricted=True, allow_nsfw=False)
RESTRICTED_OPTED_IN = Place(age_restricted=True, allow_nsfw=True)


@pytest.mark.parametrize(
    ("place", "operator_allows", "expected_flagged"),
    [
        (NORMAL, False, Decision.WITHHOLD),
        (NORMAL, True, Decision.WITHHOLD),
        (NORMAL_OPTED_IN, True, Decision.WITHHOLD),
        (RESTRICTED, False, Decision.WITHHOLD),
        (RESTRICTED, True, Decision.WITHHOLD),
        (RESTRICTED_OPTED_IN, False, Decision.WITHHOLD),
        (RESTRICTED_OPTED_IN, True, Decision.SPOILER),
    ],
)
def test_guard_scores_drive_the_decision_in_every_place(
    make_settings, place: Place, operator_allows: bool, expected_flagged: Decision
) -> None:
    settings = make_settings(allow_nsfw_age_restricted=operator_allows)
    guard = ColourGuard({CLEAN: 0.03, EXPLICIT: 0.97})
    assert isinstance(guard, NsfwGuard)
    images = [Image.new("RGB", (64, 64), CLEAN), Image.new("RGB", (64, 64), EXPLICIT)]
    decisions = [decide(score, place, settings) for score in guard.score(images)]
    assert decisions == [Decision.DELIVER, expected_flagged]


def test_threshold_comes_from_settings(make_settings) -> None:
    guard = ColourGuard({CLEAN: 0.55})
    [score] = guard.score([Image.new("RGB", (8, 8), CLEAN)])
    assert decide(score, NORMAL, make_settings()) is Decision.WITHHOLD  # default 0.5
    assert decide(score, NORMAL, make_settings(nsfw_threshold=0.8)) is Decision.DELIVER
    assert decide(0.8, NORMAL, make_settings(nsfw_threshold=0.8)) is Decision.WITHHOLD  # inclusive


def test_ready_made_flags_and_bad_scores(make_settings) -> None:
    settings = make_settings(allow_nsfw_age_restricted=True)
    assert decide(True, RESTRICTED_OPTED_IN, settings) is Decision.SPOILER
    assert decide(False, NORMAL, settings) is Decision.DELIVER
    assert is_flagged(True, settings) and not is_flagged(0.1, settings)
    with pytest.raises(ValueError, match="probability"):
        decide(1.5, NORMAL, settings)


def test_notices_tell_the_user_what_happened_and_what_admins_can_do(make_settings) -> None:
    strict = make_settings()
    lenient = make_settings(allow_nsfw_age_restricted=True)
    assert notice(Decision.DELIVER, NORMAL, strict) is None
    withheld = notice(Decision.WITHHOLD, NORMAL, strict)
    assert withheld and "flagged" in withheld and "spoiler" not in withheld  # no hint the operator forbids
    hint = notice(Decision.WITHHOLD, NORMAL, lenient)
    assert hint and "age-restricted" in hint
    here = notice(Decision.WITHHOLD, RESTRICTED, lenient)
    assert here and "here" in here
    spoiler = notice(Decision.SPOILER, RESTRICTED_OPTED_IN, lenient)
    assert spoiler and "spoiler" in spoiler
