"""The edit-instruction parser: many phrasings → region + prompt, and helpful refusals."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeness.errors import BadInstruction
from likeness.requests import EXAMPLES, EditInstruction, parse_instruction

# (instruction, kind, region, words the prompt must contain, inverted)
TABLE = [
    ("make the hair blue", "inpaint", "hair", ["blue", "hair"], False),
    ("Make the hair BLUE!!! 💙", "inpaint", "hair", ["blue", "hair"], False),
    ("make my hair blue please", "inpaint", "hair", ["blue", "hair"], False),
    ("hair: pink bob", "inpaint", "hair", ["pink bob"], False),
    ("hair -> platinum blonde", "inpaint", "hair", ["platinum blonde"], False),
    ("give me blue hair", "inpaint", "hair", ["blue hair"], False),
    ("turn my hair into braids", "inpaint", "hair", ["braids"], False),
    ("dye my hair purple", "inpaint", "hair", ["purple"], False),
    ("blue hair", "inpaint", "hair", ["blue hair"], False),
    ("background: Paris at night", "inpaint", "background", ["paris at night"], True),
    ("change the background to a snowy forest", "inpaint", "background", ["snowy forest"], True),
    ("cyberpunk city background", "inpaint", "background", ["cyberpunk city"], True),
    ("make the background a beach", "inpaint", "background", ["beach"], True),
    ("put me on a beach", "inpaint", "background", ["beach"], True),
    ("in Tokyo at night", "inpaint", "background", ["tokyo at night"], True),
    ("remove the background", "inpaint", "background", ["background"], True),
    ("add a dragon", "inpaint", "background", ["dragon"], True),
    ("change the shirt to a tuxedo", "inpaint", "clothes", ["tuxedo"], False),
    ("replace the jacket with a hoodie", "inpaint", "clothes", ["hoodie"], False),
    ("outfit: medieval armor", "inpaint", "clothes", ["medieval armor"], False),
    ("make my shirt red", "inpaint", "clothes", ["red shirt"], False),
    ("add sunglasses", "inpaint", "face_accessories", ["sunglasses"], False),
    ("Add a hat 🎩", "inpaint", "face_accessories", ["hat"], False),
    ("add a red scarf", "inpaint", "face_accessories", ["red scarf"], False),
    ("remove the glasses", "inpaint", "face_accessories", ["natural eyes"], False),
    ("turn the sky into a sunset", "inpaint", "sky", ["sunset", "sky"], False),
    ("add stars to the sky", "inpaint", "sky", ["stars", "sky"], False),
    ("please make the eyes green thanks", "inpaint", "eyes", ["green eyes"], False),
    ("eyes: bright green", "inpaint", "eyes", ["bright green"], False),
    ("give me a beard", "inpaint", "beard", ["beard"], False),
    ("make the car red", "inpaint", "car", ["red car"], False),
    ("make the coffee cup bright red", "inpaint", "coffee cup", ["bright red coffee cup"], False),
    ("lighting: golden hour", "global", "image", ["golden hour lighting"], False),
    ("LIGHTING : Studio", "global", "image", ["studio lighting"], False),
    ("studio lighting", "global", "image", ["studio lighting"], False),
    ("golden hour", "global", "image", ["golden hour"], False),
    ("make it black and white", "global", "image", ["black and white"], False),
    ("in black and white", "global", "image", ["black and white"], False),
    ("vintage look", "global", "image", ["vintage"], False),
    ("can you make it look vintage please", "global", "image", ["vintage"], False),
    ("make the lighting warmer", "global", "image", ["warmer lighting"], False),
    ("sepia", "global", "image", ["sepia"], False),
    ("turn me into a zombie", "global", "image", ["zombie"], False),
    ("add more light", "global", "image", ["more light"], False),
    ("put a hat on me", "inpaint", "face_accessories", ["wearing a hat"], False),
    ("put me in a tuxedo", "inpaint", "clothes", ["wearing a tuxedo"], False),
    ("change the color of the shirt to green", "inpaint", "clothes", ["wearing green shirt"], False),
    ("outfit: pirate", "inpaint", "clothes", ["wearing pirate outfit"], False),
    ("make the background blurry", "inpaint", "background", ["blurred background"], True),
    ("add freckles", "inpaint", "face", ["freckles"], False),
    ("add a tattoo on the arm", "inpaint", "arm", ["tattoo"], False),
]


@pytest.mark.parametrize(("text", "kind", "region", "words", "invert"), TABLE, ids=[row[0] for row in TABLE])
def test_phrasings_map_to_region_and_prompt(text: str, kind: str, region: str, words: list[str], invert: bool) -> None:
    parsed = parse_instruction(text)
    assert (parsed.kind, parsed.region, parsed.invert) == (kind, region, invert)
    for word in words:
        assert word in parsed.prompt
    assert parsed.text == text.strip()
    if kind == "inpaint":
        assert parsed.queries, "an inpaint edit needs something to segment"
        assert 0.5 <= parsed.strength <= 1.0
    else:
        assert parsed.queries == ()
        assert parsed.strength <= 0.5, "global looks redraw the whole image, gently"


def test_specific_garment_is_also_segmented() -> None:
    assert parse_instruction("change the shirt to a tuxedo").queries == ("clothes", "shirt")


def test_accessories_are_masked_where_they_go() -> None:
    assert parse_instruction("add sunglasses").queries == ("eyes",)
    assert parse_instruction("add a hat").queries == ("hair",)
    assert parse_instruction("add earrings").queries == ("ears",)
    # Removing segments the item itself and keeps it out of the picture through the negative prompt.
    removed = parse_instruction("remove the hat")
    assert (removed.action, removed.queries, removed.negative) == ("remove", ("hat",), "hat")


def test_background_is_everything_but_the_person() -> None:
    parsed = parse_instruction("background: Paris at night")
    assert parsed.invert and parsed.queries == ("person",)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "🔥🔥", "!!!", "hello", "asdf qwerty", "12345", "make", "add", "remove", "change the to",
     "rends les cheveux bleus", "把头发变成蓝色", "hair:", "make the hair", "background"],
)  # fmt: skip
def test_unknown_or_empty_gets_help_with_examples(text: str) -> None:
    with pytest.raises(BadInstruction) as info:
        parse_instruction(text)
    message = info.value.user_message
    assert EXAMPLES[0] in message and "mask" in message


def test_missing_target_names_the_region() -> None:
    with pytest.raises(BadInstruction, match="What should the hair become"):
        parse_instruction("hair:")


def test_removing_clothes_is_refused() -> None:
    with pytest.raises(BadInstruction, match="not remove"):
        parse_instruction("remove my shirt")


def test_too_long_is_refused() -> None:
    with pytest.raises(BadInstruction, match="characters long"):
        parse_instruction("make the hair blue " * 30, max_chars=100)


def test_with_a_user_mask_any_text_is_the_prompt() -> None:
    free = parse_instruction("a small red heart tattoo", has_mask=True)
    assert (free.region, free.kind, free.prompt, free.queries) == ("mask", "inpaint", "a small red heart tattoo", ())
    parsed = parse_instruction("make the hair blue", has_mask=True)
    assert (parsed.region, parsed.prompt) == ("mask", "blue hair")
    with pytest.raises(BadInstruction, match="white area"):
        parse_instruction("  ", has_mask=True)


def test_instruction_is_frozen_and_picklable() -> None:
    parsed = parse_instruction("make the hair blue")
    assert pickle.loads(pickle.dumps(parsed)) == parsed
    with pytest.raises(AttributeError):
        parsed.prompt = "x"  # type: ignore[misc]
    assert parsed.describe() == "hair → blue hair"


def test_bad_instruction_survives_the_queue() -> None:
    with pytest.raises(BadInstruction) as info:
        parse_instruction("hello")
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, BadInstruction) and again.user_message == info.value.user_message


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_never_raises_anything_but_bad_instruction(text: str) -> None:
    try:
        parsed = parse_instruction(text)
    except BadInstruction as exc:
        assert exc.user_message
        return
    assert isinstance(parsed, EditInstruction)
    assert parsed.prompt.strip() and any(ch.isalpha() for ch in parsed.prompt)
    assert parsed.kind == "global" or parsed.queries


_VERBS = st.sampled_from(["make", "change", "turn", "add", "remove", "give me", "put me in", "replace", "", "hair:"])
_WORDS = st.sampled_from(["the", "hair", "blue", "to", "into", "with", "background", "a", "sky", "it", ":", "💙", "é"])


@settings(max_examples=300, deadline=None)
@given(_VERBS, st.lists(_WORDS, max_size=6), st.booleans())
def test_fuzz_instruction_like_text(verb: str, words: list[str], has_mask: bool) -> None:
    text = " ".join([verb, *words])
    try:
        parsed = parse_instruction(text, has_mask=has_mask)
    except BadInstruction:
        return
    assert parsed.prompt.strip()
    if has_mask:
        assert parsed.region == "mask"
