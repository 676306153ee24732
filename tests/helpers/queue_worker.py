"""Test-only worker process: `python -m tests.helpers.queue_worker` serves the queue with the fake engine.

Settings come from LIKENESS_* variables like `likeness worker`; used where real signals matter.
"""

from __future__ import annotations

import logging

from likeness.config import Settings
from likeness.generation._nsfw import OffGuard
from likeness.worker import run_worker
from tests.helpers.queue import FakeEngine

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    run_worker(settings, engine_factory=FakeEngine, guard_factory=lambda _s: OffGuard())
