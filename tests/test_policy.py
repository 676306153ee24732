"""Prompt policy: block-list hits, evasions, near misses, combinations, operator files, refusal texts."""

from __future__ import annotations

import pickle
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeness.bot._policy import PromptPolicy
from likeness.errors import ConfigError, PromptRefused, PromptTooLong


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.load(max_chars=400)


@pytest.mark.parametrize(
    ("prompt", "rule"),
    [
        ("nude portrait", "explicit"),
        ("NAKED on the beach", "explicit"),
        ("nüde", "explicit"),  # accents
        ("ｎｕｄｅ", "explicit"),  # full-width
        ("sеx scene", "explicit"),  # Cyrillic е
        ("nu\u200bde", "explicit"),  # zero-width space inside
        ("s3x", "explicit"),  # leetspeak digits
        ("$ex appeal", "explicit"),
        ("pr0n", "explicit"),
        ("n u d e", "explicit"),  # spaced letters
        ("make me a n.u.d.e", "explicit"),
        ("n-a-k-e-d", "explicit"),
        ("nuuuuude", "explicit"),  # repeated letters
        ("naaked", "explicit"),  # doubled vowel
        ("pornographic", "explicit"),  # wildcard ending
        ("nudes!", "explicit"),  # plural + punctuation
        ("undress her", "blocked"),
        ("remove her clothes", "blocked"),
        ("take her bikini off", "blocked"),
        ("deep-fake of my boss", "blocked"),
        ("l0li", "blocked"),
        ("sexy teen", "sexualised-minor"),
        ("cute schoolgirl in lingerie", "sexualised-minor"),
        ("bikini, 12 yo", "sexualised-minor"),
        ("seductive 14-year-old", "sexualised-minor"),
        ("lingerie, fifteen years old", "sexualised-minor"),
        ("b a b y in lingerie", "sexualised-minor"),
        ("sexy photo of @alice_w", "sexualised-real-person"),
        ("seductive <@1234567>", "sexualised-real-person"),
        ("sexy celebrity lookalike", "sexualised-real-person"),
        ("my classmate in lingerie", "sexualised-real-person"),
    ],
)
def test_refuses_blocked_prompts_and_evasions(policy: PromptPolicy, prompt: str, rule: str) -> None:
    assert policy.violation(prompt) == rule
    with pytest.raises(PromptRefused):
        policy.check(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "classic oil portrait",
        "assassin in a hooded cloak",
        "Sussex countryside at dawn",
        "skirt steak dinner",
        "Scunthorpe United scarf",
        "Essex seaside",
        "Middlesex university gown",
        "analysis of light and shadow",
        "therapist office",
        "grape harvest",
        "cocktail party",
        "kidney bean farm",
        "sextant on a ship",
        "pedometer on my wrist",
        "magna cum laude graduation",
        "brass band with a child",
        "child at the beach",  # a minor term alone is fine
        "bikini at the beach",  # a suggestive term alone is fine
        "sexy leather jacket",
        "teenage mutant ninja turtles style",
        "as a famous painter",
        "18 year old graduate in a swimsuit",
        "nude lipstick, beige tones",  # allowed phrase
        "baby blue bikini",  # "baby" here is a colour, not a minor
        "3d render, 1girl, solo",
        "a s s e t",
    ],
)
def test_near_misses_pass(policy: PromptPolicy, prompt: str) -> None:
    assert policy.violation(prompt) is None
    policy.check(prompt)


def test_allowed_phrase_does_not_hide_the_rest(policy: PromptPolicy) -> None:
    assert policy.violation("nude lipstick, fully nude") == "explicit"


def test_refusal_text_never_echoes_the_prompt(policy: PromptPolicy) -> None:
    prompt = "naked schoolgirl, pr0n"
    with pytest.raises(PromptRefused) as info:
        policy.check(prompt)
    message = info.value.user_message.lower()
    assert message
    for word in ("naked", "schoolgirl", "pr0n", "porn", "minor", "sexual"):
        assert word not in message
    # the rule travels with the error (for the audit log) and survives the queue's pickling
    restored = pickle.loads(pickle.dumps(info.value))
    assert restored.rule == info.value.rule == "explicit"
    assert restored.user_message == info.value.user_message


def test_prompt_too_long_names_length_and_limit() -> None:
    policy = PromptPolicy.load(max_chars=20)
    policy.check("a red castle, dusk.")
    with pytest.raises(PromptTooLong) as info:
        policy.check("a castle in the clouds at dusk")
    assert info.value.length == 30 and info.value.limit == 20
    assert "30" in info.value.user_message and "20" in info.value.user_message


def test_from_settings_uses_limit_and_operator_file(make_settings, tmp_path: Path) -> None:
    path = tmp_path / "blocklist.toml"
    path.write_text("words = [\"clown*\"]\nregexes = ['\\bfoo\\d+bar\\b']\n")
    policy = PromptPolicy.from_settings(make_settings(blocklist_file=path, max_prompt_chars=50))
    assert policy.max_chars == 50
    assert policy.violation("scary clowns") == "blocked"
    assert policy.violation("a foo42bar sign") == "blocked"
    assert policy.violation("nude") == "explicit"  # defaults still apply (extend)
    assert policy.violation("a circus tent") is None


def test_operator_file_can_replace_defaults(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.toml"
    path.write_text('replace_defaults = true\nwords = ["pineapple"]\n')
    policy = PromptPolicy.load(path)
    assert policy.violation("nude") is None
    assert policy.violation("pineapple pizza") == "blocked"


def test_operator_file_adds_terms_rules_and_disables_rules(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.toml"
    path.write_text(
        'disable_rules = ["explicit"]\n'
        '[terms.violence]\nwords = ["gore", "blood*"]\n'
        '[[rules]]\nname = "violent-minor"\nwhen = [["violence"], ["minor"]]\n'
    )
    policy = PromptPolicy.load(path)
    assert policy.violation("nude figure study") is None  # explicit rule disabled
    assert policy.violation("sexy teen") == "sexualised-minor"  # others still on
    assert policy.violation("bloody toddler") == "violent-minor"
    assert policy.violation("bloody knight") is None


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("words = [", "invalid TOML"),
        ("wordz = []", "wordz"),
        ("regexes = ['(unclosed']", "regexes: invalid regex"),
        ("[terms.minor]\nregexes = ['[a-']", "terms.minor.regexes: invalid regex"),
        ('[[rules]]\nname = "x"\nwhen = [["nosuch"]]', "nosuch"),
    ],
)
def test_bad_operator_file_is_a_config_error_naming_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        PromptPolicy.load(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_missing_operator_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        PromptPolicy.load(tmp_path / "missing.toml")


def test_community_words_are_stricter_without_false_positives(policy: PromptPolicy) -> None:
    words = ["clown", "Spider s"]
    with pytest.raises(PromptRefused) as info:
        policy.check("evil CLOWNS at night", extra_words=words)
    assert info.value.rule == "community"
    assert "clown" not in info.value.user_message.lower()
    assert policy.violation("c l o w n", extra_words=words) == "community"
    assert policy.violation("clownfish aquarium", extra_words=words) is None
    assert policy.violation("evil clowns at night") is None  # other communities unaffected


def test_bot_side_modules_stay_free_of_ml_imports() -> None:
    code = (
        "import sys, likeness.bot._policy, likeness.bot._safety\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'likeness.generation') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1], timeout=60)


def test_built_in_preset_prompts_pass_the_policy(policy: PromptPolicy) -> None:
    import tomllib

    files = sorted((Path(__file__).parents[1] / "likeness" / "presets" / "data").glob("*.toml"))
    assert files
    for path in files:
        preset = tomllib.loads(path.read_text(encoding="utf-8"))
        for key in ("title", "description", "prompt"):
            text = str(preset.get(key, "")).replace("{subject}", "a person").replace("{prompt}", "")
            assert policy.violation(text) is None, f"{path.name}: {key}"


@settings(max_examples=150, deadline=1000)
@given(st.text(max_size=400))
def test_any_text_gets_a_verdict_quickly(text: str) -> None:
    policy = _shared_policy()
    verdict = policy.violation(text)
    assert verdict is None or verdict in policy.rule_names


@settings(max_examples=60, deadline=1000)
@given(st.sampled_from(["nude", "naked", "porn", "undress"]), st.text(alphabet=" .-_*", min_size=1, max_size=2))
def test_spacing_out_a_blocked_word_does_not_evade(word: str, separator: str) -> None:
    assert _shared_policy().violation(separator.join(word)) is not None


@lru_cache(maxsize=1)
def _shared_policy() -> PromptPolicy:
    return PromptPolicy.load()
