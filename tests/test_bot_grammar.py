"""The chat command grammar and button ids, shared by every frontend."""

from __future__ import annotations

import pytest

from likeness.bot import Action, parse_button_id, result_buttons
from likeness.errors import InvalidPresetSpec, UserError
from likeness.requests import parse_portrait_args, split_command


@pytest.mark.parametrize(
    ("text", "preset", "prompt", "fmt", "count"),
    [
        ("ghibli", "ghibli", "", None, 1),
        ("ghibli wearing a red scarf", "ghibli", "wearing a red scarf", None, 1),
        ("ghibli wearing a red scarf format:story", "ghibli", "wearing a red scarf", "story", 1),
        ("format=Story ghibli", "ghibli", "", "story", 1),
        ("ghibli:0.7+headshot:0.3 at sunset n:3", "ghibli:0.7+headshot:0.3", "at sunset", None, 3),
        ("viking  standing on a cliff\nat dawn", "viking", "standing on a cliff at dawn", None, 1),
        ("anime ratio:16 stays in the prompt", "anime", "ratio:16 stays in the prompt", None, 1),
    ],
)
def test_portrait_arguments(text: str, preset: str, prompt: str, fmt: str | None, count: int) -> None:
    args = parse_portrait_args(text)
    assert (args.preset, args.prompt, args.format, args.count) == (preset, prompt, fmt, count)


def test_missing_preset_explains_how() -> None:
    with pytest.raises(InvalidPresetSpec) as err:
        parse_portrait_args("   format:story ")
    assert "/portrait ghibli" in err.value.user_message


@pytest.mark.parametrize("value", ["0", "9", "many"])
def test_bad_image_count(value: str) -> None:
    with pytest.raises(UserError, match="1 to 4"):
        parse_portrait_args(f"ghibli n:{value}")


@pytest.mark.parametrize("text", ["format:", "ghibli format: ", "ghibli n="])
def test_an_option_without_a_value_is_explained(text: str) -> None:
    with pytest.raises(UserError, match=r"needs a value, e\.g\. `format:story`"):
        parse_portrait_args(text)


def test_split_command_handles_bot_mentions() -> None:
    assert split_command("/portrait@LikenessBot ghibli hat") == ("portrait", "ghibli hat")
    assert split_command("/Presets") == ("presets", "")
    assert split_command("make the hair blue") is None


def test_button_ids_round_trip_and_fit_platform_limits() -> None:
    buttons = result_buttons("r" * 32)
    assert [b.action for b in buttons] == [Action.REROLL, Action.EDIT, Action.VARIATIONS, Action.FULL_SIZE]
    for button in buttons:
        assert len(button.id.encode()) <= 64  # Telegram callback_data limit
        assert parse_button_id(button.id) == (button.action, "r" * 32)
    assert parse_button_id("lk:explode:abc") is None
    assert parse_button_id("someone-elses-button") is None
    assert parse_button_id("lk:reroll:../../etc") is None
