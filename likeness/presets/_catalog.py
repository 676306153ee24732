"""Loading presets from TOML files (built-ins plus an operator folder) and resolving preset specs."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from likeness.errors import ConfigError, InvalidPresetSpec, UnknownPreset, echo
from likeness.presets._schema import EffectivePreset, GenerationDefaults, LoraRef, Preset, PromptPart

__all__ = ["MAX_FUSION_PARTS", "PresetCatalog", "load_preset_file"]

MAX_FUSION_PARTS = 4
MIN_FUSION_SHARE = 0.01
_PART_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9-]*)\s*(?::\s*([^\s+]+))?\s*$")


def load_preset_file(path: Path) -> Preset:
    """Parse and validate one preset file; `ConfigError` names the file, the field and the problem.

    A relative `style_image` path is taken relative to the preset file and must exist.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(message=f"{path}: cannot read preset file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(message=f"{path}: not valid TOML: {exc}") from exc
    raw.setdefault("name", path.stem)
    if raw["name"] != path.stem:
        raise ConfigError(message=f"{path}: field 'name': is {raw['name']!r} but the file is named {path.stem!r}")
    try:
        preset = Preset.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(file)'}': {_ERROR_TEXT.get(err['type'], err['msg'])}"
            for err in exc.errors()
        )
        raise ConfigError(message=f"{path}: {problems}") from exc
    image = preset.style_image
    if image and "://" not in image:
        local = (path.parent / image).resolve()
        if not local.is_file():
            raise ConfigError(message=f"{path}: field 'style_image': no file at {local}")
        preset = preset.model_copy(update={"style_image": str(local)})
    return preset


# Pydantic's texts for the commonest mistakes, reworded for someone editing a TOML file.
_ERROR_TEXT = {
    "missing": "is required but missing",
    "extra_forbidden": "unknown key (check the spelling; see docs/presets.md)",
}


class PresetCatalog:
    """All presets by name: the built-ins, overridden or extended by files in an operator folder."""

    def __init__(self, presets: dict[str, Preset]) -> None:
        if not presets:
            raise ConfigError(message="no presets are defined")
        self._presets = dict(sorted(presets.items()))

    @classmethod
    def load(cls, presets_dir: Path | None = None) -> PresetCatalog:
        """Built-in presets, then `presets_dir/*.toml` (same name overrides). Invalid files raise."""
        presets: dict[str, Preset] = {}
        builtin = resources.files("likeness.presets") / "data"
        for entry in sorted(builtin.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                with resources.as_file(entry) as path:
                    preset = load_preset_file(path)
                presets[preset.name] = preset
        if presets_dir is not None:
            if not presets_dir.is_dir():
                raise ConfigError(message=f"{presets_dir}: LIKENESS_PRESETS_DIR is not a folder")
            for path in sorted(presets_dir.glob("*.toml")):
                if path.name.startswith("."):  # editor lock and swap files, e.g. `.#ghibli.toml`
                    continue
                preset = load_preset_file(path)
                presets[preset.name] = preset
        return cls(presets)

    def __iter__(self) -> Iterator[Preset]:
        return iter(self._presets.values())

    def __len__(self) -> int:
        return len(self._presets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._presets

    def names(self) -> list[str]:
        return list(self._presets)

    def get(self, name: str) -> Preset:
        """One preset by name (case-insensitive); `UnknownPreset` lists the valid names."""
        try:
            return self._presets[name.strip().lower()]
        except KeyError:
            raise UnknownPreset(name=echo(name.strip()), valid=", ".join(self._presets)) from None

    def resolve(self, spec: str) -> EffectivePreset:
        """Resolve `name`, `a+b` or `a:0.7+b:0.3` to one effective preset.

        Names are case-insensitive. Weights default to 1 and are normalised to whole percentages that
        sum to 100 (largest remainder, earlier parts first on ties), so the canonical `spec` resolves to
        exactly the same preset; a part under 1% is refused. Numeric defaults are blended by weight
        (steps rounded to the nearest integer, guidance and strengths to 4 decimals; identity layers per
        block, a part without them counting its `identity_strength`), format and scheduler come from the
        heaviest part (first on ties), prompts stay separate weighted parts (the engine blends their
        embeddings), LoRAs are combined with their weight times the part's weight (the same LoRA in two
        parts adds up), the style image is the heaviest part's that has one, and `best_of` is the largest
        any part sets.
        """
        parts = self._parse(spec)
        presets = [(self.get(name), weight) for name, weight in parts]
        main = max(presets, key=lambda pw: pw[1])[0]
        loras: dict[str, LoraRef] = {}
        for preset, weight in presets:
            for lora in preset.loras:
                scaled = lora.weight * weight
                if lora.key in loras:
                    scaled += loras[lora.key].weight
                loras[lora.key] = lora.model_copy(update={"weight": round(scaled, 6)})
        canonical = presets[0][0].name if len(presets) == 1 else "+".join(f"{p.name}:{w:g}" for p, w in presets)
        return EffectivePreset(
            spec=canonical,
            parts=tuple((p.name, w) for p, w in presets),
            title=(
                f"{main.emoji} {main.title}"
                if len(presets) == 1
                else " + ".join(f"{p.emoji} {p.title} {round(w * 100)}%" for p, w in presets)
            ),
            emoji=main.emoji,
            prompts=tuple(PromptPart(weight=w, template=p.prompt, negative=p.negative_prompt) for p, w in presets),
            defaults=_blend([(p.defaults, w) for p, w in presets], main.defaults),
            loras=tuple(loras.values()),
            style_image=next((p.style_image for p, _ in sorted(presets, key=lambda pw: -pw[1]) if p.style_image), None),
        )

    def _parse(self, spec: str) -> list[tuple[str, float]]:
        if not spec or not spec.strip():
            raise InvalidPresetSpec(message=f"Please name a preset, e.g. `ghibli`. Valid: {', '.join(self._presets)}.")
        pieces = spec.split("+")
        if len(pieces) > MAX_FUSION_PARTS:
            raise InvalidPresetSpec(message=f"Fuse at most {MAX_FUSION_PARTS} presets at once.")
        parsed: list[tuple[str, float]] = []
        for piece in pieces:
            if not piece.strip():
                raise InvalidPresetSpec(message="A `+` needs a preset on both sides, like `ghibli+headshot`.")
            match = _PART_RE.match(piece)
            if not match:
                raise InvalidPresetSpec(
                    message=f"I can't read “{echo(piece.strip())}”. "
                    "Write presets like `ghibli` or `ghibli:0.7+headshot:0.3`."
                )
            name, raw_weight = echo(match.group(1).lower()), match.group(2)
            self.get(name)
            try:
                weight = 1.0 if raw_weight is None else float(raw_weight)
            except ValueError:
                raise InvalidPresetSpec(message=f"The weight of {name} must be a number, like `{name}:0.5`.") from None
            if not 0 < weight < math.inf:  # also false for nan
                raise InvalidPresetSpec(message=f"The weight of {name} must be a number greater than 0.")
            if any(name == seen for seen, _ in parsed):
                raise InvalidPresetSpec(message=f"{name} appears twice in that fusion.")
            parsed.append((name, weight))
        total = sum(w for _, w in parsed)
        shares = [weight / total for _, weight in parsed]
        for (name, _), share in zip(parsed, shares, strict=True):
            # Below 1% a part changes nothing visible (and would round to 0%).
            if share < MIN_FUSION_SHARE:
                raise InvalidPresetSpec(message=f"{name} gets under 1% of that fusion; give it more weight or drop it.")
        percents = _whole_percents(shares)
        return [(name, pct / 100) for (name, _), pct in zip(parsed, percents, strict=True)]


def _whole_percents(shares: list[float]) -> list[int]:
    """Shares (summing to 1) as whole percentages summing to exactly 100, by largest remainder."""
    exact = [share * 100 for share in shares]
    percents = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: -(exact[i] - percents[i]))
    for i in by_remainder[: 100 - sum(percents)]:
        percents[i] += 1
    return percents


def _blend(weighted: list[tuple[GenerationDefaults, float]], main: GenerationDefaults) -> GenerationDefaults:
    def mix(field: str) -> float:
        return float(sum(getattr(d, field) * w for d, w in weighted))

    layers: dict[str, float] | None = None
    if any(d.identity_layers for d, _ in weighted):
        keys = sorted({k for d, _ in weighted for k in (d.identity_layers or {})})
        layers = {
            k: round(sum((d.identity_layers or {}).get(k, d.identity_strength) * w for d, w in weighted), 6)
            for k in keys
        }
    return GenerationDefaults(
        steps=max(1, round(mix("steps"))),
        guidance=round(mix("guidance"), 4),
        identity_strength=round(mix("identity_strength"), 4),
        style_strength=round(mix("style_strength"), 4),
        format=main.format,
        scheduler=main.scheduler,
        identity_layers=layers,
        # The most demanding part wins: fusing in a style that needs best-of-N still needs it.
        best_of=max((d.best_of for d, _ in weighted if d.best_of is not None), default=None),
    )
