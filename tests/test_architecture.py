"""The shape of the code, checked statically: the import contracts in pyproject.toml (import-linter), no import
cycles, each package's front door (`__all__`) pinned, and mypy (with the pydantic plugin) clean on `likeness/`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]

FRONT_DOORS = {
    "likeness.requests": [
        "EXAMPLES", "FORMATS", "MAX_COUNT", "MAX_PROMPT_CHARS", "MAX_SPEC_CHARS", "REGIONS", "SEED_LIMIT",
        "EditInstruction", "EditSpec", "Format", "PortraitArgs", "PortraitSpec", "PresetResolver", "Region",
        "candidate_seeds", "check_instruction", "check_portrait_args", "edit_spec", "get_format",
        "parse_instruction", "parse_portrait_args", "parse_seed", "portrait_spec", "request_seeds", "size_for",
        "split_command",
    ],
    "likeness.queue": [
        "REDIS_DOWN", "AbuseLog", "Admission", "AuditEvent", "BanInfo", "BlobStore", "Delivery", "DeliveryConsumer",
        "JobKind", "JobPayload", "Origin", "Platform", "ProgressEvent", "QueueClient", "QueueStats", "ResultMeta",
        "ResultRecord", "Stage", "Ticket", "add_progress", "append_delivery", "keys", "outlasting_outage",
        "redis_errors", "worker_retry",
    ],
    "likeness.worker": [
        "DEFAULT_MAX_TRIES", "EngineFactory", "GuardFactory", "JobRunner", "LikenessWorker", "run_worker",
        "worker_in_loop", "worker_settings",
    ],
}  # fmt: skip


def test_import_contracts_hold() -> None:
    # In a process of its own: import-linter configures logging (disabling every logger that exists), which
    # would silence the loggers that later tests read.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_imports_itself_through_others() -> None:
    """No import cycles: every module can be understood (and moved) starting from its own imports."""
    graph = grimp.build_graph("likeness")
    cycles = [sorted(group) for group in _strongly_connected(graph) if len(group) > 1]
    assert cycles == []


def test_mypy_finds_no_type_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mypy import api

    monkeypatch.chdir(ROOT)  # its settings: pyproject.toml
    report, errors, status = api.run(["--cache-dir", str(tmp_path), "likeness"])
    assert status == 0, report + errors


@pytest.mark.parametrize("package", sorted(FRONT_DOORS))
def test_front_doors_are_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(FRONT_DOORS[package])
    assert all(getattr(module, name) is not None for name in module.__all__)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components of the module import graph (iterative: no recursion limit)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                target = edges[node][child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in edges[node]:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups
