"""`likeness models`: list the known models; `pull` every weight one model and the presets need.

`likeness models pull [MODEL]` fills the Hugging Face cache (HF_HOME) with the checkpoint, its VAE, the
identity adapter and image encoder, every preset LoRA, the CLIPSeg model used for region edits and the
NSFW classifier (`LIKENESS_NSFW_MODEL`). Afterwards workers can run with `HF_HUB_OFFLINE=1`, and the
cache folder can be copied to air-gapped hosts. Local paths in a model spec are checked, not copied.
Tiny models are built on this machine (no download at all).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from likeness.config import Settings

if TYPE_CHECKING:
    from likeness.generation import ModelSpec, WeightRef
    from likeness.presets import PresetCatalog

__all__ = ["CLIPSEG_REPO", "Weight", "add_arguments", "missing_weights", "offline", "planned_weights", "run"]

CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"
# transformers models: configs and tokenizer files, then the weights (safetensors; `.bin` only as fallback).
_EXTRA_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Weight:
    """One thing to fetch, with a human label: what it is for."""

    label: str
    ref: WeightRef

    @property
    def patterns(self) -> list[str] | None:
        """`allow_patterns` for the Hub (paths inside the repo); None means the whole repo."""
        sub = (self.ref.subfolder or "").strip("/")
        names = list(self.ref.filenames) or (["*"] if sub else [])
        if not names:
            return None
        return [f"{sub}/{name}" if sub else name for name in names]

    @property
    def name(self) -> str:
        sub = f" ({self.ref.subfolder})" if self.ref.subfolder else ""
        return f"{self.ref.repo_or_path}{sub}"


def offline() -> bool:
    """True when HF_HUB_OFFLINE forbids Hub access (read by huggingface_hub itself)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def planned_weights(
    settings: Settings, spec: ModelSpec, catalog: PresetCatalog | None = None, *, extras: bool = True
) -> list[Weight]:
    """Everything `spec` needs to serve every preset, labelled; plus CLIPSeg and the NSFW model (`extras`)."""
    from likeness.generation import WeightRef, required_weights
    from likeness.presets import PresetCatalog

    catalog = catalog if catalog is not None else PresetCatalog.load(settings.presets_dir)
    lora_users: dict[str, list[str]] = {}
    for preset in catalog:
        for lora in preset.loras:
            lora_users.setdefault(lora.source, []).append(preset.name)
    known = {
        (spec.checkpoint, None): "checkpoint",
        (spec.vae or "", None): "VAE",
        (spec.identity_adapter.repo, spec.identity_adapter.subfolder or None): "identity adapter",
        (spec.image_encoder.repo, spec.image_encoder.subfolder or None): "image encoder",
    }
    weights = []
    for ref in required_weights(spec, catalog):
        if ref.repo_or_path in lora_users:
            label = f"LoRA ({', '.join(lora_users[ref.repo_or_path])})"
        else:
            label = known.get((ref.repo_or_path, ref.subfolder), "weights")
        weights.append(Weight(label, ref))
    if extras:
        weights.append(Weight("region masks (CLIPSeg)", WeightRef(repo_or_path=CLIPSEG_REPO, filenames=_EXTRA_FILES)))
        if settings.nsfw_backend == "transformers":
            weights.append(
                Weight("NSFW classifier", WeightRef(repo_or_path=settings.nsfw_model, filenames=_EXTRA_FILES))
            )
    return weights


def _matches(files: list[str], weight: Weight) -> bool:
    """`files` (paths relative to the repo root) hold what `weight` asks for, weights included."""
    patterns = weight.patterns or ["*"]
    globbed = [p for p in patterns if any(c in p for c in "*?[")]
    for pattern in patterns:
        if pattern not in globbed and pattern not in files:
            return False
    selected = [f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]
    if globbed and not selected:
        return False
    return any(f.endswith(_WEIGHT_SUFFIXES) for f in selected)


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def find_weight(weight: Weight) -> Path | None:
    """Where `weight` already is on this machine (local path or HF cache snapshot); None if missing.

    Never touches the network.
    """
    if weight.ref.is_local:
        path = Path(weight.ref.repo_or_path).expanduser()
        if path.is_file():  # a single-file LoRA
            return path
        return path if path.is_dir() and _matches(_files_under(path), weight) else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(weight.ref.repo_or_path, allow_patterns=weight.patterns, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if _matches(_files_under(folder), weight) else None


def missing_weights(settings: Settings, spec: ModelSpec) -> tuple[list[str], int]:
    """Names of the weights of `spec` (and extras) not on this machine, and how many there are in all."""
    weights = planned_weights(settings, spec)
    return [w.name for w in weights if find_weight(w) is None], len(weights)


def _fetch(weight: Weight) -> Path:
    """Download `weight` into the HF cache (resuming, skipping what is there) and return its snapshot."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(weight.ref.repo_or_path, allow_patterns=weight.patterns))
    if not _matches(_files_under(folder), weight) and weight.ref.filenames == _EXTRA_FILES:
        # Older transformers repos only carry `pytorch_model.bin`.
        folder = Path(snapshot_download(weight.ref.repo_or_path, allow_patterns=["*.bin", *_EXTRA_FILES]))
    if not _matches(_files_under(folder), weight):
        raise FileNotFoundError(f"the repo has no files matching {weight.patterns or ['*']}")
    return folder


def _explain(exc: BaseException) -> str:
    """One line an operator can act on, for the usual Hub failures."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return "gated repo: accept its license on the Hub, then set HF_TOKEN"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "not found on the Hub (a typo, or a private repo: set HF_TOKEN)"
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return "not in the cache and the Hub is unreachable (HF_HUB_OFFLINE=1 or no network)"
    return f"{type(exc).__name__}: {exc}"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


# --- command ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pull = actions.add_parser(
        "pull",
        help="download every weight a model and the presets need into the HF cache",
        description="Download the checkpoint, VAE, identity adapter, image encoder, preset LoRAs, CLIPSeg and "
        "the NSFW classifier into the Hugging Face cache, so workers can run with HF_HUB_OFFLINE=1.",
    )
    pull.add_argument("model", nargs="?", help="model key (default: LIKENESS_MODEL)")
    pull.add_argument("--dry-run", action="store_true", help="only list what is needed and what is already here")
    pull.add_argument("--no-extras", action="store_true", help="skip CLIPSeg and the NSFW classifier")
    actions.add_parser("list", help="list the known models and whether their weights are here")


def run(args: argparse.Namespace) -> int:

    from likeness.errors import ConfigError

    settings = Settings()  # invalid values: answered by `likeness.cli`
    try:
        if args.action == "list":
            return _list(settings)
        return _pull(settings, args.model or settings.model, dry_run=args.dry_run, extras=not args.no_extras)
    except ConfigError as exc:
        print(f"likeness models: {exc}", file=sys.stderr)
        return 2


def _list(settings: Settings) -> int:
    from likeness.generation import load_model_specs

    specs = load_model_specs(settings.models_file)
    width = max(len(key) for key in specs)
    for key, spec in specs.items():
        mark = "*" if key == settings.model else " "
        if spec.tiny:
            state = "built locally"
        else:
            missing, total = missing_weights(settings, spec)
            state = "ready" if not missing else f"{len(missing)}/{total} weights missing"
        print(f"{mark} {key:<{width}}  {spec.family:<5} {state:<22} {spec.checkpoint}")
    print("\n* = LIKENESS_MODEL. Fetch weights with `likeness models pull MODEL`.")
    return 0


def _pull(settings: Settings, key: str, *, dry_run: bool, extras: bool) -> int:
    from huggingface_hub import constants

    from likeness.generation import get_model_spec
    from likeness.presets import PresetCatalog

    spec = get_model_spec(key, settings.models_file)
    catalog = PresetCatalog.load(settings.presets_dir)
    if spec.tiny:
        return _build_tiny(settings, spec, catalog, dry_run=dry_run)
    weights = planned_weights(settings, spec, catalog, extras=extras)
    width = max(len(w.label) for w in weights)
    print(f"{spec.key}: {len(weights)} weights ({spec.family}, {spec.license or 'see the model card'})")
    failures = 0
    for weight in weights:
        found = find_weight(weight)
        if weight.ref.is_local or dry_run or (found is not None and offline()):
            if found is None:
                failures += 1
                where = (
                    "missing: this local path does not exist or lacks the files"
                    if weight.ref.is_local
                    else "to download"
                )
                print(f"✗ {weight.label:<{width}}  {weight.name}  {where}")
            else:
                print(f"✓ {weight.label:<{width}}  {weight.name}  {'local' if weight.ref.is_local else 'in cache'}")
            continue
        try:
            folder = _fetch(weight)
        except Exception as exc:
            failures += 1
            print(f"✗ {weight.label:<{width}}  {weight.name}  {_explain(exc)}")
            continue
        print(f"✓ {weight.label:<{width}}  {weight.name}  {_human(_size(folder))}")
    print()
    if dry_run:
        print(f"Dry run: {failures} of {len(weights)} to fetch or fix. Cache: {constants.HF_HUB_CACHE}")
        return 0
    if failures:
        print(f"{failures} of {len(weights)} weights are missing; fix the lines marked ✗ and run this again.")
        return 1
    print(f"All weights are in {constants.HF_HUB_CACHE} (plus any local paths above).")
    print("Workers can now run with HF_HUB_OFFLINE=1; for an air-gapped host, copy that folder to its HF cache.")
    return 0


def _build_tiny(settings: Settings, spec: ModelSpec, catalog: PresetCatalog, *, dry_run: bool) -> int:
    sources = sorted({lora.source for preset in catalog for lora in preset.loras})
    if dry_run:
        print(f"{spec.key}: tiny random weights, built on this machine; no download needed.")
        return 0
    # The engine's own builder, so the folder is exactly the one workers load.
    from likeness.generation import ensure_tiny_model

    root = ensure_tiny_model(settings.data_dir, spec.family, sources)
    print(f"{spec.key}: tiny random weights built at {root} ({len(sources)} preset LoRAs); no download needed.")
    return 0
