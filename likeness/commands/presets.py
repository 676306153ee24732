"""`likeness presets`: a readable table of the presets this installation knows."""

from __future__ import annotations

import argparse
import sys

from likeness.config import Settings
from likeness.errors import ConfigError
from likeness.presets import PresetCatalog
from likeness.requests import FORMATS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")


def run(args: argparse.Namespace) -> int:
    try:
        catalog = PresetCatalog.load(Settings().presets_dir)
    except ConfigError as exc:
        print(f"likeness presets: {exc}", file=sys.stderr)
        return 1
    if args.names:
        print("\n".join(catalog.names()))
        return 0
    rows = [
        (p.name, p.category, p.defaults.format, "yes" if p.loras else "", f"{p.emoji} {p.description}") for p in catalog
    ]
    header = ("name", "category", "format", "LoRA", "description")
    # Emoji widths vary between terminals, so they sit in the last column where they can't break alignment.
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    print(f"\n{len(catalog)} presets. Fuse them with `+` and weights: ghibli+headshot, ghibli:0.7+headshot:0.3")
    print("Formats: " + ", ".join(f"{f.name} ({f.description})" for f in FORMATS.values()))
    return 0
