"""Preset fusion (`ghibli:0.7+headshot:0.3`): parsing, blending and errors, as `PresetCatalog.resolve` documents."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from likeness.errors import InvalidPresetSpec, UnknownPreset
from likeness.presets import MAX_FUSION_PARTS, EffectivePreset, Preset, PresetCatalog

CATALOG = PresetCatalog.load()


def expected_blend(parts: list[tuple[Preset, float]], field: str) -> float:
    return sum(getattr(p.defaults, field) * w for p, w in parts)


def check_blend(effective: EffectivePreset, parts: list[tuple[Preset, float]]) -> None:
    """The documented rules, computed from the parts' own fields."""
    d = effective.defaults
    assert d.steps == round(expected_blend(parts, "steps"))
    for field in ("guidance", "identity_strength", "style_strength"):
        assert getattr(d, field) == pytest.approx(expected_blend(parts, field), abs=1e-4), field
    heaviest = max(parts, key=lambda pw: pw[1])[0]  # max() keeps the first on ties
    assert d.format == heaviest.defaults.format
    assert d.scheduler == heaviest.defaults.scheduler
    assert effective.emoji == heaviest.emoji
    assert [(pp.weight, pp.template, pp.negative) for pp in effective.prompts] == [
        (w, p.prompt, p.negative_prompt) for p, w in parts
    ]


def test_equal_fusion() -> None:
    ghibli, headshot = CATALOG.get("ghibli"), CATALOG.get("headshot")
    effective = CATALOG.resolve("ghibli+headshot")
    assert effective.parts == (("ghibli", 0.5), ("headshot", 0.5))
    assert effective.spec == "ghibli:0.5+headshot:0.5"
    check_blend(effective, [(ghibli, 0.5), (headshot, 0.5)])
    assert effective.defaults.format == ghibli.defaults.format  # a tie goes to the first part
    assert ghibli.defaults.format != headshot.defaults.format  # (so the line above means something)


def test_weighted_fusion_blends_as_documented() -> None:
    ghibli, headshot = CATALOG.get("ghibli"), CATALOG.get("headshot")
    effective = CATALOG.resolve("ghibli:0.7+headshot:0.3")
    assert effective.spec == "ghibli:0.7+headshot:0.3"
    assert effective.parts == (("ghibli", 0.7), ("headshot", 0.3))
    check_blend(effective, [(ghibli, 0.7), (headshot, 0.3)])
    assert effective.title == f"{ghibli.emoji} {ghibli.title} 70% + {headshot.emoji} {headshot.title} 30%"
    assert effective.describe() == effective.title


def test_weights_are_relative_and_order_is_kept() -> None:
    ghibli, headshot = CATALOG.get("ghibli"), CATALOG.get("headshot")
    effective = CATALOG.resolve("headshot:3+ghibli:7")
    assert effective.spec == "headshot:0.3+ghibli:0.7"
    check_blend(effective, [(headshot, 0.3), (ghibli, 0.7)])
    assert effective.defaults.format == ghibli.defaults.format  # heaviest wins, wherever it stands


def test_identity_layers_blend_per_block() -> None:
    ghibli, headshot = CATALOG.get("ghibli"), CATALOG.get("headshot")
    assert ghibli.defaults.identity_layers and headshot.defaults.identity_layers is None
    layers = CATALOG.resolve("ghibli:0.7+headshot:0.3").defaults.identity_layers
    assert layers is not None
    assert layers.keys() == ghibli.defaults.identity_layers.keys()
    for block, scale in ghibli.defaults.identity_layers.items():
        # A part without per-block scales counts its overall identity strength.
        assert layers[block] == pytest.approx(0.7 * scale + 0.3 * headshot.defaults.identity_strength)


def test_single_preset_resolves_to_itself() -> None:
    ghibli = CATALOG.get("ghibli")
    effective = CATALOG.resolve("ghibli")
    assert effective.spec == "ghibli"
    assert effective.title == f"{ghibli.emoji} {ghibli.title}"
    assert effective.defaults == ghibli.defaults
    assert effective.loras == ghibli.loras


def test_case_and_spaces_do_not_matter() -> None:
    assert " Ghibli" in CATALOG and CATALOG.get("GHIBLI").name == "ghibli"
    assert CATALOG.resolve("  GHIBLI : 0.7 + HeadShot:0.3 ") == CATALOG.resolve("ghibli:0.7+headshot:0.3")


def test_three_way_split_rounds_to_whole_percents_that_sum_to_100() -> None:
    effective = CATALOG.resolve("ghibli+anime+viking")
    assert [w for _, w in effective.parts] == [0.34, 0.33, 0.33]
    assert CATALOG.resolve(effective.spec) == effective


def test_lora_weights_are_scaled_and_combined(tmp_path: Path) -> None:
    ghibli = CATALOG.get("ghibli")
    [lora] = ghibli.loras
    # A second preset using the same LoRA plus one of its own.
    (tmp_path / "twin.toml").write_text(
        f"""\
title = "Twin"
emoji = "👯"
description = "Shares ghibli's LoRA."
category = "illustration"
prompt = "{{subject}}, twin style"

[[loras]]
source = "{lora.source}"
weight_name = "{lora.weight_name}"
weight = 0.5
trigger_words = ["{lora.trigger_words[0]}"]

[[loras]]
source = "org/other"
weight = 1.0
""",
        encoding="utf-8",
    )
    catalog = PresetCatalog.load(tmp_path)
    effective = catalog.resolve("ghibli:0.6+twin:0.4")
    by_key = {lo.key: lo.weight for lo in effective.loras}
    assert by_key == {lora.key: pytest.approx(lora.weight * 0.6 + 0.5 * 0.4), "org/other::": pytest.approx(0.4)}
    [(_, prompt, _), _] = effective.render("a man")
    assert prompt.count(lora.trigger_words[0]) == 1  # shared trigger said once
    assert effective.lora_set == tuple(sorted((k, round(w, 4)) for k, w in by_key.items()))


def test_fusing_presets_with_different_loras_keeps_both() -> None:
    effective = CATALOG.resolve("ghibli:0.5+anime:0.5")
    sources = {lo.source: lo.weight for lo in effective.loras}
    for name in ("ghibli", "anime"):
        [lora] = CATALOG.get(name).loras
        assert sources[lora.source] == pytest.approx(lora.weight * 0.5)


def test_unknown_part_lists_the_valid_presets() -> None:
    with pytest.raises(UnknownPreset) as info:
        CATALOG.resolve("ghibli+gibli")
    message = info.value.user_message
    assert "gibli" in message
    assert all(name in message for name in CATALOG.names())


def test_unknown_names_are_clipped_in_the_message() -> None:
    with pytest.raises(UnknownPreset) as info:
        CATALOG.resolve("x" * 5000)
    assert len(info.value.user_message) < 1000


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("ghibli:0+headshot", "greater than 0"),
        ("ghibli:-1+headshot", "greater than 0"),
        ("ghibli:nan+headshot", "greater than 0"),
        ("ghibli:inf+headshot", "greater than 0"),
        ("ghibli:1e400", "greater than 0"),
        ("ghibli:lots+headshot", "must be a number"),
        ("ghibli:0.001+headshot:1", "1%"),
        ("ghibli+headshot+ghibli", "twice"),
        ("ghibli+HEADSHOT+Ghibli", "twice"),
        ("", "name a preset"),
        ("   ", "name a preset"),
        ("ghibli+", "both sides"),
        ("+ghibli", "both sides"),
        ("ghibli++headshot", "both sides"),
        ("ghibli headshot", "can't read"),
        ("ghibli:0.5:0.5", "must be a number"),
        ("ghibli,headshot", "can't read"),
    ],
)
def test_invalid_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(InvalidPresetSpec) as info:
        CATALOG.resolve(spec)
    assert words in info.value.user_message


def test_too_many_parts() -> None:
    names = CATALOG.names()[: MAX_FUSION_PARTS + 1]
    assert CATALOG.resolve("+".join(names[:MAX_FUSION_PARTS])).parts  # the limit itself is fine
    with pytest.raises(InvalidPresetSpec, match=f"at most {MAX_FUSION_PARTS}"):
        CATALOG.resolve("+".join(names))


def test_spec_errors_pickle() -> None:
    for spec, cls in (("nope", UnknownPreset), ("ghibli:0", InvalidPresetSpec)):
        with pytest.raises(cls) as info:
            CATALOG.resolve(spec)
        again = pickle.loads(pickle.dumps(info.value))
        assert type(again) is cls and again.user_message == info.value.user_message
