"""Property tests over the chat command grammar: any text gives a valid result or a clear `UserError`.

Covers `split_command`, `parse_portrait_args` (then the preset spec and format it names, as the core does)
and `parse_button_id` (callback data is attacker-controlled: anyone can send any bytes as button data).
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from likeness.bot import Action, Button, parse_button_id
from likeness.errors import UserError
from likeness.presets import PresetCatalog
from likeness.requests import FORMATS, MAX_COUNT, get_format, parse_portrait_args, split_command

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CATALOG = PresetCatalog.load(None)
OPTION = re.compile(r"(?<!\S)(format|n|count)\s*[:=]", re.IGNORECASE)

# Chat text as users send it: any unicode (emoji, RTL, zero-width, control characters), plus the
# grammar's own punctuation often enough that options and fusions actually get parsed.
grammar_bits = st.sampled_from(
    ["/portrait", "@Bot", " ", "  ", "\n", "\t", ":", "=", "+", "format", "n", "count", "0", "1", "4", "5",
     "-1", "0.7", "ghibli", "headshot", "story", "square", "STORY", "ｎ", "\u200b", "\u202e", "🔄", "x" * 300]
)  # fmt: skip
chat_text = st.lists(st.one_of(st.text(max_size=12), grammar_bits), max_size=16).map("".join)
words = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=12)


def check_user_error(exc: UserError) -> None:
    assert isinstance(exc.user_message, str) and exc.user_message.strip(), repr(exc)


@FUZZ
@given(chat_text)
@example("/")
@example("/@")
@example("/portrait@")
@example("/PORTRAIT@Bot   ")
@example("\u0660/portrait")
def test_split_command_never_fails(text: str) -> None:
    parsed = split_command(text)
    if parsed is None:
        return
    command, rest = parsed
    assert command and command == command.lower() and re.fullmatch(r"\w+", command)
    assert rest == rest.strip()
    assert text.strip().startswith("/")


@FUZZ
@given(st.from_regex(r"[A-Za-z0-9_]{1,20}", fullmatch=True), st.text(max_size=60), st.booleans())
def test_split_command_round_trip(command: str, args: str, mention: bool) -> None:
    text = f"/{command}{'@LikenessBot' if mention else ''} {args}"
    assert split_command(text) == (command.lower(), args.strip())


@FUZZ
@given(chat_text)
@example("")
@example("format:story")
@example("n:0 ghibli")
@example("ghibli n:99999999999999999999999999")
@example("ghibli n:٣")  # an Arabic-Indic digit: int() accepts it
@example("ghibli count=-1")
@example("ghibli format:")
@example("format:")  # found by hypothesis: the option was taken for the preset
@example("ghibli:nan+headshot:inf")
@example("+")
@example(":")
def test_portrait_args_are_valid_or_a_user_error(text: str) -> None:
    """The whole chat path before the queue: grammar, then the preset spec and format it names."""
    try:
        args = parse_portrait_args(text)
    except UserError as exc:
        check_user_error(exc)
        return
    assert args.preset and not re.search(r"\s", args.preset)
    assert not OPTION.match(args.preset), "an option was taken for the preset"
    assert 1 <= args.count <= MAX_COUNT
    assert args.prompt == args.prompt.strip()
    assert args.format is None or (args.format and args.format == args.format.lower())
    try:
        preset = CATALOG.resolve(args.preset)
        fmt = get_format(args.format) if args.format is not None else None
    except UserError as exc:
        check_user_error(exc)
        return
    assert preset.spec and abs(sum(part.weight for part in preset.prompts) - 1.0) < 1e-6
    assert fmt is None or fmt.name in FORMATS


@FUZZ
@given(
    preset=st.sampled_from(sorted(p.name for p in CATALOG)),
    prompt=st.lists(words, max_size=6),
    fmt=st.none() | st.sampled_from(sorted(FORMATS)),
    count=st.none() | st.integers(1, MAX_COUNT),
    positions=st.lists(st.integers(0, 10), min_size=2, max_size=2),
    sep=st.sampled_from([":", "=", " : ", "= "]),
)
def test_portrait_args_round_trip(preset, prompt, fmt, count, positions, sep) -> None:
    """Options may appear anywhere; the preset is the first word, the rest is the prompt, in order."""
    assume(not any(OPTION.match(w) for w in prompt))
    tokens = list(prompt)
    if fmt is not None:
        tokens.insert(min(positions[0], len(tokens)), f"format{sep}{fmt.upper()}")
    if count is not None:
        tokens.insert(min(positions[1], len(tokens)), f"n{sep}{count}")
    args = parse_portrait_args(" ".join([preset, *tokens]))
    assert (args.preset, args.prompt, args.format, args.count) == (preset, " ".join(prompt), fmt, count or 1)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.from_regex(r"lk:[a-z]{0,8}:[A-Za-z0-9_\-]{0,60}", fullmatch=True)))
@example("lk:reroll:")
@example("lk:reroll:abc\n")
@example("lk:REROLL:abc")
@example("lk:nope:abc")
@example("lk:full:" + "a" * 49)
def test_button_ids_parse_or_are_ignored(data: str) -> None:
    parsed = parse_button_id(data)
    if parsed is None:
        return
    action, result_id = parsed
    assert isinstance(action, Action)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,48}", result_id)
    assert data == f"lk:{action.value}:{result_id}"


@FUZZ
@given(st.sampled_from(list(Action)), st.from_regex(r"[A-Za-z0-9_-]{1,48}", fullmatch=True))
def test_every_button_we_make_parses_back_within_telegram_limits(action: Action, result_id: str) -> None:
    button = Button("label", action, result_id)
    assert len(button.id.encode()) <= 64, "Telegram callback data is limited to 64 bytes"
    assert parse_button_id(button.id) == (action, result_id)
