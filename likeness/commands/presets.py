"""`likeness presets`: a readable table of the presets this installation knows."""

from __future__ import annotations

import argparse

from likeness.config import Settings
from likeness.presets import FORMATS, PresetCatalog

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")


def run(args: argparse.Namespace) -> int:
    catalog = PresetCatalog.load(Settings().presets_dir)
    if args.names:
        print("\n".join(catalog.names()))
        return 0
    width = max(len(name) for name in catalog.names())
    print(f"{'':2} {'name':<{width}}  {'category':<13} description")
    for preset in catalog:
        print(f"{preset.emoji:<2} {preset.name:<{width}}  {preset.category:<13} {preset.description}")
    print("\nFuse presets with `+` and optional weights: ghibli+headshot, ghibli:0.7+headshot:0.3")
    print("Formats: " + ", ".join(f"{f.name} ({f.description})" for f in FORMATS.values()))
    return 0
