"""`likeness --help` stays fast: the CLI loads a command's modules only when it runs (the static import rules
are contracts in pyproject.toml, checked by tests/test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_help_is_fast_and_light() -> None:
    code = (
        "import sys\nfrom likeness.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "generate" in out.stdout
    assert out.stdout.splitlines()[-1] == "", "likeness --help imported torch or diffusers"
