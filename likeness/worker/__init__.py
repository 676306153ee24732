"""The worker side: arq workers that run jobs from the queue through an engine (`likeness.generation`).

    likeness worker                                  # the command: run_worker(Settings())
    async with worker_in_loop(settings):             # embedded (likeness up, tests, benchmarks)
        ...

Modules follow a job: `_arq` (arq's Worker, woken by new jobs) → `_runner` (one try: outcomes, retries,
accounting) → `_inputs` (payload → engine request; `_batcher` groups compatible portraits) → `_results`
(guard, marker, typed record, store) → delivery; `_publisher` writes progress; `_launch` builds it all.
"""

from likeness.worker._arq import LikenessWorker
from likeness.worker._launch import EngineFactory, GuardFactory, run_worker, worker_in_loop, worker_settings
from likeness.worker._runner import DEFAULT_MAX_TRIES, JobRunner

__all__ = [
    "DEFAULT_MAX_TRIES",
    "EngineFactory",
    "GuardFactory",
    "JobRunner",
    "LikenessWorker",
    "run_worker",
    "worker_in_loop",
    "worker_settings",
]
