"""Shared pieces of the benchmarks: timing statistics, targets, a plain-text table, JSON with machine info."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from likeness.config import Settings

from tests.helpers.stack import Borrowed

__all__ = [
    "BenchContext",
    "BenchResult",
    "Target",
    "format_table",
    "machine_info",
    "percentile",
    "quiet_libraries",
    "summary_ms",
    "tiny_settings",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0–100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, median (= p50), p95, min, max of durations given in seconds, reported in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }


@dataclass
class Target:
    """A goal from the issue: `value <op> limit`, e.g. overhead ratio ≤ 1.05."""

    name: str
    value: float
    limit: float
    op: str = "<="  # "<=" or ">="
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def describe(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name}: {self.value:.3f}{self.unit} (target {self.op} {self.limit:g}{self.unit})"


@dataclass
class BenchResult:
    """What one benchmark reports: table rows (flat dicts), targets, and free-form details for the JSON."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [{**asdict(t), "passed": t.passed} for t in self.targets]
        return data


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of flat dicts as an aligned plain-text table (columns in first-seen order)."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, Python/torch/diffusers versions and the accelerator, for the JSON."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        # Other processes share this box: a high load average means noisier timings.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = "cpu"
    except ImportError:
        info["device"] = "cpu (torch not installed)"
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: Path, results: list[BenchResult], *, argv: list[str]) -> None:
    payload = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv),
        "machine": machine_info(),
        "results": {r.name: r.to_json() for r in results},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def quiet_libraries() -> None:
    """diffusers/transformers progress bars and chatter would bury the table."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("diffusers", "transformers", "peft", "arq", "httpx", "telegram", "likeness", "aiohttp"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def tiny_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for the built-in tiny model on the CPU (what the tests use), with overrides."""
    from likeness.config import Settings

    values: dict[str, Any] = {"model": "tiny", "device": "cpu", "dtype": "float32", "data_dir": data_dir}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class BenchContext:
    """Options and shared, lazily built resources of one `python -m benchmarks` run."""

    quick: bool
    data_dir: Path
    budget_s: float | None = None  # long benchmarks skip what would run past it
    keep_work_dir: bool = False  # set when something failed: logs stay for a look
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="likeness-bench-")))
    _engine: Any = None
    _redis: Any = None

    def engine(self) -> Any:
        """The tiny engine, loaded once per run (the first load also builds the tiny weights: ~10–40 s)."""
        if self._engine is None:
            from likeness.generation import load_engine

            self._engine = load_engine(tiny_settings(self.data_dir))
        return self._engine

    def shared_engine(self) -> Any:
        return Borrowed(self.engine())

    def redis_url(self) -> str:
        """A private redis-server for the run, flushed on each call (never a user's Redis)."""
        import redis

        from likeness.redis_server import RedisServer

        if self._redis is None:
            self._redis = RedisServer(self.work_dir / "redis", appendonly=False).start()
        client = redis.Redis.from_url(self._redis.url)
        client.flushall()
        client.close()
        return str(self._redis.url)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self.keep_work_dir:
            print(f"kept {self.work_dir} (logs)")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed: ...; elapsed()` → seconds since the block started."""
    start = time.perf_counter()
    end: float | None = None

    def elapsed() -> float:
        return (end if end is not None else time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()
