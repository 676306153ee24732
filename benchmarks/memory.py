"""5. Memory: a worker-like process's RSS with the model loaded, and txt2img/img2img/inpaint sharing weights.

Runs `benchmarks._memory_probe` in a fresh process (a clean peak): load the engine as a worker does, run
each pipeline twice, derive two more pipelines with `from_pipe`. Sharing is checked exactly: every
parameter of the derived pipelines has the same storage pointer as txt2img's, and the modules are the same
objects. RSS growth after the first round shows leaks or copies (a few MiB of allocator noise is normal).
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks._common import ROOT, BenchContext, BenchResult, Target

NAME = "memory"
TITLE = "Memory: worker-like process RSS (tiny model); txt2img/img2img/inpaint share weights"
GROWTH_LIMIT_MIB = 16.0


def run(ctx: BenchContext) -> BenchResult:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._memory_probe", str(ctx.data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-3000:]}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    result = BenchResult(NAME, TITLE, details=probe)
    result.rows = [{"stage": stage, "rss_mib": rss} for stage, rss in probe["rss_mib"].items()]
    result.rows.append({"stage": "peak (VmHWM)", "rss_mib": probe["peak_rss_mib"]})
    result.rows.append({"stage": "model parameters", "rss_mib": probe["params_mib"]})
    result.targets += [
        Target(f"{name} shares txt2img's weight storage", float(ok), 1, ">=")
        for name, ok in probe["shares_weights"].items()
    ]
    result.targets += [
        Target("RSS growth, 2nd round of 3 pipelines", probe["growth_round2_mib"], GROWTH_LIMIT_MIB, "<=", " MiB"),
        Target("RSS growth, 2 more derived pipelines", probe["growth_derive_mib"], GROWTH_LIMIT_MIB, "<=", " MiB"),
    ]
    return result
