"""The queue package's front door: pinned exports, and the bot side never pulls in torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import likeness.queue

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_pinned():
    assert sorted(likeness.queue.__all__) == sorted(
        [
            "FAIR_OFFSET_MS", "Delivery", "DeliveryConsumer", "EditParams", "JobKind", "JobPayload", "Origin",
            "Platform", "PortraitSpec", "ProgressEvent", "QueueClient", "QueueStats", "ResultRecord", "Stage",
            "Ticket", "append_delivery", "keys",
        ]
    )  # fmt: skip
    for name in likeness.queue.__all__:
        assert getattr(likeness.queue, name) is not None


def test_the_client_side_does_not_import_torch_or_the_engine():
    code = (
        "import sys, likeness.queue; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'likeness.generation') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
