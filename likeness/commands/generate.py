"""`likeness generate SELFIE --preset ghibli -o out/`: portraits on this machine, no Redis, no bots.

With `LIKENESS_MODEL=tiny` it runs offline on a CPU in seconds (noise-like pictures, for trying the
plumbing); real models need their weights (`likeness models pull`) and preferably a GPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from likeness.config import Settings
from likeness.errors import LikenessError, UserError

__all__ = ["add_arguments", "run"]

MAX_IMAGES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `likeness generate`."""
    parser.add_argument("selfie", type=Path, help="photo of one person (JPEG, PNG or WebP)")
    parser.add_argument("--preset", default="ghibli", help="preset or fusion, e.g. ghibli or ghibli:0.7+headshot:0.3")
    parser.add_argument("--prompt", default="", help="extra words for the picture, e.g. 'on a mountain at dusk'")
    parser.add_argument("--format", default=None, help="square, linkedin, instagram, story, youtube or banner")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first image (default: random)")
    parser.add_argument("-n", "--count", type=int, default=1, help=f"number of images (1-{MAX_IMAGES})")
    parser.add_argument("--identity", type=float, default=None, help="identity strength 0-1.5 (default: preset's)")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder (created if missing)")


def run(args: argparse.Namespace) -> int:
    """Validate everything cheap first, then load the model, generate, write PNGs and print their paths."""
    settings = Settings()  # invalid values: answered by `likeness.cli`
    try:
        return _generate(args, settings)
    except LikenessError as exc:
        # Operators run this command: service and config errors show their real reason.
        return _fail(exc.user_message if isinstance(exc, UserError) else str(exc))


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from likeness.images import load_image
    from likeness.presets import PresetCatalog
    from likeness.provenance import encode_with_provenance
    from likeness.requests import SEED_LIMIT, PortraitArgs, check_portrait_args, portrait_spec, request_seeds

    if not 1 <= args.count <= MAX_IMAGES:
        return _fail(f"--count must be between 1 and {MAX_IMAGES}")
    if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        return _fail(f"--seed must be between 0 and {SEED_LIMIT - 1}")
    if args.identity is not None and not 0.0 <= args.identity <= 1.5:
        return _fail("--identity must be between 0 and 1.5")
    # The same checks as a chat request (the count aside: up to MAX_IMAGES here), before the slow model load.
    catalog = PresetCatalog.load(settings.presets_dir)
    asked = PortraitArgs(preset=args.preset, prompt=args.prompt, format=args.format, seed=args.seed)
    spec = portrait_spec(check_portrait_args(asked, max_prompt_chars=settings.max_prompt_chars), catalog)
    preset = catalog.resolve(spec.preset)
    try:
        data = args.selfie.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.selfie}: {exc.strerror or exc}")
    selfie = load_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create {args.output}: {exc.strerror or exc}")

    _quiet_libraries()
    from likeness.generation import PortraitRequest, get_model_spec, load_engine

    if get_model_spec(settings.model, settings.models_file).tiny:
        import torch

        # Tiny tensors gain nothing from threads, and on a busy machine threads thrash (10× slower).
        torch.set_num_threads(1)

    engine = load_engine(settings)
    try:
        request = PortraitRequest(
            selfie=selfie,
            preset=preset,
            prompt=spec.prompt,
            format=spec.format,
            seeds=request_seeds(args.count, spec.seed),
            identity_scale=args.identity,
        )
        (result,) = engine.portrait_batch([request], [_progress if sys.stderr.isatty() else None])
    finally:
        engine.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    label = re.sub(r"[^A-Za-z0-9-]+", "_", preset.spec).strip("_")
    for seed, image in zip(result.seeds, result.images, strict=True):
        path = args.output / f"{args.selfie.stem}-{label}-{seed}.png"
        marker = {"model": engine.model_key, "preset": preset.spec}
        path.write_bytes(encode_with_provenance(image, "png", extra=marker, watermark=settings.watermark))
        print(path)
    return 0


def _progress(step: int, total: int) -> None:
    print(f"\rstep {step}/{total}", end="", file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    """Library progress bars and advice would bury the output paths; errors still show."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _fail(message: str) -> int:
    print(f"likeness generate: error: {message}", file=sys.stderr)
    return 1
