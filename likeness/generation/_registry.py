"""Model registry: which checkpoint, identity adapter and image encoder each model key stands for.

Built-in specs cover the supported checkpoints; an operator TOML file (`LIKENESS_MODELS_FILE`) adds
specs or overrides fields of built-in ones:

    [models.my-realvis]          # a new key: every required field
    family = "sdxl"
    checkpoint = "/srv/models/RealVisXL_V5.0"

    [models.sdxl-realvis]        # a built-in key: only the fields that change
    vae = "madebyollin/sdxl-vae-fp16-fix"

`required_weights` lists what a spec needs on disk (for `likeness models pull`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from likeness.errors import ConfigError
from likeness.presets import Preset, PresetCatalog

__all__ = [
    "BUILTIN_MODELS",
    "FACEID_BACKENDS",
    "IdentityAdapter",
    "ImageEncoder",
    "ModelSpec",
    "WeightRef",
    "get_model_spec",
    "load_model_specs",
    "required_weights",
]

H94 = "h94/IP-Adapter"
H94_FACEID = "h94/IP-Adapter-FaceID"

FACEID_BACKENDS = ("insightface",)
"""Face backends whose embeddings FaceID adapters were trained on (512-d ArcFace, insightface buffalo_l)."""
_ENCODER_FILES = ("config.json", "model.safetensors")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentityAdapter(_Strict):
    """IP-Adapter weights that carry the selfie's identity into generation.

    `plus-face`: CLIP features of the face crop. `faceid-plus-v2`: ArcFace embedding plus CLIP features of
    the crop (needs `face_backend = "insightface"`); its checkpoint brings a LoRA, loaded as `faceid_0`.
    """

    repo: str = Field(min_length=1, description="Hub repo id or local folder")
    subfolder: str = ""
    weight_name: str = Field(min_length=1)
    kind: Literal["plus-face", "faceid-plus-v2"] = "plus-face"


class ImageEncoder(_Strict):
    """CLIP vision encoder the identity adapter was trained with."""

    repo: str = Field(min_length=1, description="Hub repo id or local folder")
    subfolder: str = ""


class ModelSpec(_Strict):
    """Everything needed to load one model and size its outputs."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,47}$")
    family: Literal["sd15", "sdxl"]
    checkpoint: str = Field(min_length=1, description="diffusers-format hub repo id or local folder")
    variant: str | None = Field(default=None, description="Weight variant to load, e.g. `fp16`")
    vae: str | None = Field(default=None, description="Optional replacement VAE (hub repo id or local folder)")
    identity_adapter: IdentityAdapter
    image_encoder: ImageEncoder
    scheduler: str = Field(default="default", description="Used when a preset says `default`")
    max_steps: int | None = Field(default=None, ge=1, le=150, description="Caps preset steps (fast checkpoints, tiny)")
    base: int = Field(ge=64, le=2048, description="Native side length; formats keep about base² pixels")
    multiple: int = Field(default=64, ge=8, le=128, description="Width and height are multiples of this")
    lora_rank: int = Field(default=128, ge=1, le=1024, description="Highest style LoRA rank (hot-swap buffers)")
    tiny: bool = Field(default=False, description="Built offline from random weights (tests, demos)")
    license: str = ""


def _h94(family: str) -> tuple[IdentityAdapter, ImageEncoder]:
    # Both plus-face adapters use the ViT-H encoder in `models/image_encoder`, also the SDXL one.
    if family == "sdxl":
        adapter = IdentityAdapter(
            repo=H94, subfolder="sdxl_models", weight_name="ip-adapter-plus-face_sdxl_vit-h.safetensors"
        )
    else:
        adapter = IdentityAdapter(repo=H94, subfolder="models", weight_name="ip-adapter-plus-face_sd15.safetensors")
    return adapter, ImageEncoder(repo=H94, subfolder="models/image_encoder")


def _faceid(family: str) -> tuple[IdentityAdapter, ImageEncoder]:
    # FaceID-Plus-v2 reads the crop with OpenCLIP ViT-H-14 (SD1.5 and SDXL alike): the very encoder h94 ships
    # in `models/image_encoder`, so plus-face and FaceID models share one download.
    adapter = IdentityAdapter(
        repo=H94_FACEID, weight_name=f"ip-adapter-faceid-plusv2_{family}.bin", kind="faceid-plus-v2"
    )
    return adapter, ImageEncoder(repo=H94, subfolder="models/image_encoder")


def _tiny(
    key: str, family: Literal["sd15", "sdxl"], kind: Literal["plus-face", "faceid-plus-v2"] = "plus-face"
) -> ModelSpec:
    # Repo names are placeholders: tiny weights are built locally and the loader swaps in their folder.
    weight_name = "ip-adapter-faceid-plusv2_tiny.safetensors" if kind == "faceid-plus-v2" else None
    return ModelSpec(
        key=key,
        family=family,
        checkpoint=f"likeness-tiny/{family}",
        identity_adapter=IdentityAdapter(
            repo=f"likeness-tiny/{family}-ip-adapter",
            subfolder="models",
            weight_name=weight_name or "ip-adapter-plus-face_tiny.safetensors",
            kind=kind,
        ),
        image_encoder=ImageEncoder(repo=f"likeness-tiny/{family}-ip-adapter", subfolder="models/image_encoder"),
        max_steps=4,
        base=64,
        multiple=16,
        lora_rank=4,
        tiny=True,
        license="Random weights generated by Likeness (Apache-2.0).",
    )


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="sdxl-realvis",
            family="sdxl",
            checkpoint="SG161222/RealVisXL_V4.0",
            identity_adapter=_h94("sdxl")[0],
            image_encoder=_h94("sdxl")[1],
            base=1024,
            license="RealVisXL: CreativeML Open RAIL++-M; IP-Adapter: Apache-2.0.",
        ),
        ModelSpec(
            key="sdxl-base",
            family="sdxl",
            checkpoint="stabilityai/stable-diffusion-xl-base-1.0",
            variant="fp16",
            identity_adapter=_h94("sdxl")[0],
            image_encoder=_h94("sdxl")[1],
            base=1024,
            license="SDXL 1.0: CreativeML Open RAIL++-M; IP-Adapter: Apache-2.0.",
        ),
        ModelSpec(
            key="sd15",
            family="sd15",
            checkpoint="stable-diffusion-v1-5/stable-diffusion-v1-5",
            identity_adapter=_h94("sd15")[0],
            image_encoder=_h94("sd15")[1],
            base=512,
            license="Stable Diffusion 1.5: CreativeML Open RAIL-M; IP-Adapter: Apache-2.0.",
        ),
        ModelSpec(
            key="sdxl-faceid",
            family="sdxl",
            checkpoint="SG161222/RealVisXL_V4.0",
            identity_adapter=_faceid("sdxl")[0],
            image_encoder=_faceid("sdxl")[1],
            base=1024,
            license="RealVisXL: CreativeML Open RAIL++-M; IP-Adapter-FaceID: non-commercial research only "
            "(trained on insightface embeddings); insightface buffalo_l: non-commercial.",
        ),
        ModelSpec(
            key="sd15-faceid",
            family="sd15",
            checkpoint="stable-diffusion-v1-5/stable-diffusion-v1-5",
            identity_adapter=_faceid("sd15")[0],
            image_encoder=_faceid("sd15")[1],
            base=512,
            license="Stable Diffusion 1.5: CreativeML Open RAIL-M; IP-Adapter-FaceID: non-commercial research "
            "only (trained on insightface embeddings); insightface buffalo_l: non-commercial.",
        ),
        _tiny("tiny", "sdxl"),
        _tiny("tiny-sd15", "sd15"),
        _tiny("tiny-faceid", "sdxl", "faceid-plus-v2"),
    )
}


def load_model_specs(models_file: Path | None = None) -> dict[str, ModelSpec]:
    """Built-in specs, extended or overridden by `models_file`. Invalid files raise `ConfigError`."""
    specs = dict(BUILTIN_MODELS)
    if models_file is None:
        return specs
    try:
        raw = tomllib.loads(models_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(message=f"{models_file}: cannot read models file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(message=f"{models_file}: not valid TOML: {exc}") from exc
    unknown = set(raw) - {"models"}
    if unknown or not isinstance(raw.get("models", {}), dict):
        raise ConfigError(message=f"{models_file}: expected only [models.<key>] tables, found {sorted(raw)}")
    for key, table in raw.get("models", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(message=f"{models_file}: models.{key}: expected a table")
        base = specs[key].model_dump() if key in specs else {}
        merged = _deep_merge(base, {**table, "key": key})
        try:
            specs[key] = ModelSpec.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"field 'models.{key}.{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(message=f"{models_file}: {problems}") from exc
    return specs


def get_model_spec(key: str, models_file: Path | None = None) -> ModelSpec:
    """The spec for `key` (LIKENESS_MODEL), or `ConfigError` naming the known keys."""
    specs = load_model_specs(models_file)
    try:
        return specs[key.strip()]
    except KeyError:
        raise ConfigError(message=f"LIKENESS_MODEL: unknown model {key!r}; known: {', '.join(specs)}") from None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class WeightRef(_Strict):
    """Weights to fetch: a hub repo (or local path), a subfolder, and file patterns (empty: everything)."""

    repo_or_path: str
    subfolder: str | None = None
    filenames: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return _is_local(self.repo_or_path)


def required_weights(spec: ModelSpec, presets: PresetCatalog | Iterable[Preset] = ()) -> list[WeightRef]:
    """Every weight `spec` needs to serve `presets` (for `likeness models pull`); tiny models need none.

    Checkpoint patterns take the diffusers component folders (not the single-file checkpoint that
    some repos also carry at the top level), in the spec's variant when it has one.
    """
    if spec.tiny:
        return []
    suffix = f"{spec.variant}.safetensors" if spec.variant else "safetensors"
    refs = [
        WeightRef(
            repo_or_path=spec.checkpoint,
            filenames=("model_index.json", "*/*.json", "*/*.txt", f"*/*.{suffix}"),
        )
    ]
    if spec.vae:
        refs.append(WeightRef(repo_or_path=spec.vae, filenames=("config.json", "*.safetensors")))
    adapter, encoder = spec.identity_adapter, spec.image_encoder
    refs += [
        WeightRef(repo_or_path=adapter.repo, subfolder=adapter.subfolder or None, filenames=(adapter.weight_name,)),
        WeightRef(repo_or_path=encoder.repo, subfolder=encoder.subfolder or None, filenames=_ENCODER_FILES),
    ]
    seen: set[str] = set()
    for preset in presets:
        for lora in preset.loras:
            if lora.key in seen:
                continue
            seen.add(lora.key)
            refs.append(WeightRef(repo_or_path=lora.source, filenames=(lora.weight_name,) if lora.weight_name else ()))
    return refs


def _is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
