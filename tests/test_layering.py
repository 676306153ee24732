"""House rules that keep the bot process light: the bot side never imports torch or the GPU code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIGHT_MODULES = ["likeness.bot", "likeness.queue", "likeness.presets", "likeness.config", "likeness.images"]
HEAVY = ("torch", "diffusers", "transformers", "likeness.generation")


def test_bot_side_imports_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in LIGHT_MODULES)
        + f"bad = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith('likeness.generation')]\n"
        + "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"bot side imported heavy modules: {out.stdout}"


def test_cli_help_is_fast_and_light() -> None:
    code = (
        "import sys\nfrom likeness.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "generate" in out.stdout
    assert out.stdout.splitlines()[-1] == "", "likeness --help imported torch or diffusers"
