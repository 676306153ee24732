"""`python -m benchmarks` runs and reports: a table on stdout, JSON with machine info (timings are not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks._common import BenchResult, Target, format_table, percentile, summary_ms

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, tmp_path: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(120)
def test_quick_run_prints_tables_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    done = _run("--quick", "--only", "bot,unet", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert "== bot:" in done.stdout and "== unet:" in done.stdout
    assert "update → result photo" in done.stdout and "ms_per_step" in done.stdout
    data = json.loads(out.read_text())
    machine = data["machine"]
    assert machine["cpu_cores"] >= 1 and machine["cpu_model"] and machine["torch"] and machine["device"]
    assert data["command"].startswith("python -m benchmarks")

    bot = data["results"]["bot"]
    assert bot["details"]["counts"]["lost"] == 0 and bot["details"]["counts"]["duplicated"] == 0
    assert bot["details"]["requests"] == 50 and bot["details"]["requests_per_s"] > 0
    latency = next(r for r in bot["rows"] if r["measure"] == "update → result photo")
    assert latency["n"] == 50 and 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"]

    unet = data["results"]["unet"]
    assert unet["details"]["config"] in ("reduced", "sdxl-base") and unet["details"]["parameters"] > 0
    for row in unet["rows"]:
        assert row["loop_s"] > 0 and row["ms_per_step"] == pytest.approx(row["loop_s"] / row["steps"] * 1000, rel=0.01)


def test_unknown_benchmark_is_refused_with_the_valid_names(tmp_path):
    done = _run("--only", "overhead,nope", tmp_path=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "unknown benchmark(s) nope" in done.stderr and "overhead" in done.stderr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50), st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_summary_and_targets():
    stats = summary_ms([0.010, 0.020, 0.030, 0.040, 1.0])
    assert stats["n"] == 5 and stats["p50_ms"] == 30.0 and stats["max_ms"] == 1000.0
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    assert Target("ratio", 1.04, 1.05).passed and not Target("ratio", 1.06, 1.05).passed
    assert Target("gain", 2.5, 2.0, ">=").passed and not Target("gain", 1.5, 2.0, ">=").passed
    assert Target("gain", 1.5, 2.0, ">=").describe().startswith("FAIL")
    data = BenchResult("x", "X", targets=[Target("t", 1, 2)]).to_json()
    assert data["targets"][0]["passed"] is True


def test_table_aligns_columns_in_first_seen_order():
    table = format_table([{"a": 1, "long_name": 2.5}, {"a": 123456, "b": None}]).splitlines()
    assert table[0].split() == ["a", "long_name", "b"]
    assert len({len(line) for line in table}) == 1, "every line has the same width"
    assert table[3].split() == ["123456", "-", "-"]
