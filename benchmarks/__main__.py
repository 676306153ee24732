"""`python -m benchmarks [--quick] [--only NAME[,NAME]] [--out FILE] [--strict]`: run, print tables, write JSON.

Exit status: 0 when every selected benchmark ran (targets are informative), 1 with `--strict` when a target
failed, 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks._common import ROOT, BenchContext, BenchResult, format_table, machine_info, quiet_libraries, write_json

# Run in this order by default; `chaos` (minutes) only when named with --only.
BENCHMARKS = ["overhead", "batching", "presets", "bot", "memory", "unet", "policy"]
ON_DEMAND = ["chaos"]
MODULES = {"chaos": "benchmarks.drills"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and smaller sizes (for CI)")
    parser.add_argument("--only", help=f"comma-separated names from {', '.join(BENCHMARKS + ON_DEMAND)}")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/latest[-quick].json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "likeness-bench-data",
        help="where the tiny model is built once and reused",
    )
    parser.add_argument("--budget-s", type=float, help="time budget: long benchmarks skip the rest past it")
    args = parser.parse_args(argv)
    names = BENCHMARKS if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS + ON_DEMAND]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS + ON_DEMAND)}")
    out = args.out or ROOT / "benchmarks" / "results" / ("latest-quick.json" if args.quick else "latest.json")

    quiet_libraries()
    _pin_threads()
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['cpu_cores']} cores, torch {machine.get('torch')}, "
          f"device {machine.get('device')}", flush=True)  # fmt: skip
    ctx = BenchContext(quick=args.quick, data_dir=args.data_dir, budget_s=args.budget_s)
    results: list[BenchResult] = []
    crashed = False
    try:
        for name in names:
            module = importlib.import_module(MODULES.get(name, f"benchmarks.{name}"))
            print(f"\n== {name}: {module.TITLE}", flush=True)
            started = time.perf_counter()
            try:
                result: BenchResult = module.run(ctx)
            except Exception:
                crashed = True
                traceback.print_exc()
                result = BenchResult(name, module.TITLE, notes=["crashed: " + traceback.format_exc(limit=3)])
            result.seconds = round(time.perf_counter() - started, 1)
            results.append(result)
            _print(result)
            write_json(out, results, argv=argv)  # after each one: a later crash keeps what was measured
    finally:
        ctx.close()
    failed = [t for r in results for t in r.targets if not t.passed]
    print(f"\nwrote {out}")
    print(f"targets: {sum(t.passed for r in results for t in r.targets)} passed, {len(failed)} failed")
    if crashed:
        return 2
    return 1 if args.strict and failed else 0


def _print(result: BenchResult) -> None:
    print(format_table(result.rows))
    for target in result.targets:
        print(target.describe())
    for note in result.notes:
        print(f"note: {note}")
    print(f"({result.seconds:.1f} s)", flush=True)


def _pin_threads() -> None:
    """One torch thread, as in the tests: the rest of the 2-core box runs Redis, the worker loop, the bot."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        torch.set_num_threads(1)


if __name__ == "__main__":
    sys.exit(main())
