"""Loading presets from TOML files (built-ins plus an operator folder) and resolving preset specs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from likeness.errors import ConfigError, InvalidPresetSpec, UnknownPreset
from likeness.presets._schema import EffectivePreset, GenerationDefaults, LoraRef, Preset, PromptPart

__all__ = ["MAX_FUSION_PARTS", "PresetCatalog", "load_preset_file"]

MAX_FUSION_PARTS = 4
_PART_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9-]*)\s*(?::\s*([^\s+]+))?\s*$")


def load_preset_file(path: Path) -> Preset:
    """Parse and validate one preset file; `ConfigError` names the file, the field and the problem."""
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
        return Preset.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(file)'}': {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(message=f"{path}: {problems}") from exc


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
                preset = load_preset_file(path)
                presets[preset.name] = preset
        return cls(presets)

    def __iter__(self) -> Iterator[Preset]:
        return iter(self._presets.values())

    def __len__(self) -> int:
        return len(self._presets)

    def __contains__(self, name: object) -> bool:
        return name in self._presets

    def names(self) -> list[str]:
        return list(self._presets)

    def get(self, name: str) -> Preset:
        """One preset by name (case-insensitive); `UnknownPreset` lists the valid names."""
        try:
            return self._presets[name.strip().lower()]
        except KeyError:
            raise UnknownPreset(name=name, valid=", ".join(self._presets)) from None

    def resolve(self, spec: str) -> EffectivePreset:
        """Resolve `name`, `a+b` or `a:0.7+b:0.3` to one effective preset.

        Weights default to 1 and are normalised to sum to 1. Numeric defaults are blended by weight
        (steps rounded), format and scheduler come from the heaviest part (first on ties), prompts stay
        separate weighted parts (the engine blends their embeddings), LoRAs are combined with their
        weight times the part's weight (the same LoRA in two parts adds up).
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
        canonical = (
            presets[0][0].name
            if len(presets) == 1
            else "+".join(f"{p.name}:{w:.2f}".rstrip("0").rstrip(".") for p, w in presets)
        )
        return EffectivePreset(
            spec=canonical,
            parts=tuple((p.name, w) for p, w in presets),
            title=" + ".join(f"{p.emoji} {p.title}" for p, _ in presets),
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
            match = _PART_RE.match(piece)
            if not match:
                raise InvalidPresetSpec(
                    message=f"I can't read “{piece.strip()}”. Write presets like `ghibli` or `ghibli:0.7+headshot:0.3`."
                )
            name, raw_weight = match.group(1).lower(), match.group(2)
            self.get(name)
            try:
                weight = 1.0 if raw_weight is None else float(raw_weight)
            except ValueError:
                raise InvalidPresetSpec(message=f"The weight of {name} must be a number, like `{name}:0.5`.") from None
            if not weight > 0 or weight != weight or weight == float("inf"):
                raise InvalidPresetSpec(message=f"The weight of {name} must be greater than 0.")
            if any(name == seen for seen, _ in parsed):
                raise InvalidPresetSpec(message=f"{name} appears twice in that fusion.")
            parsed.append((name, weight))
        total = sum(w for _, w in parsed)
        return [(name, weight / total) for name, weight in parsed]


def _blend(weighted: list[tuple[GenerationDefaults, float]], main: GenerationDefaults) -> GenerationDefaults:
    def mix(field: str) -> float:
        return sum(getattr(d, field) * w for d, w in weighted)

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
    )
