"""Shared helpers for the benchmarks: realistic events, peak memory, one JSON line out."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from sample_data import SimulationConfig, iter_events

OUT = Path(__file__).resolve().parent / "out"


# The append and verify targets are for events "of realistic size (~400 B canonical)".
# The simulator's events also carry OpenTelemetry trace context, credential details and delegation
# (~760 B canonical); without those fields they are ~400 B. Benchmarks report both sizes.
COMPACT_DROPPED = frozenset(
    {
        "trace_id",
        "span_id",
        "parent_span_id",
        "caused_by",
        "principal",
        "credential_id",
        "credential_scopes",
        "credential_expires_at",
        "scope_used",
        "on_behalf_of",
        "task_id",
    }
)
SIZES = ("compact", "full")


def events(count: int, seed: int = 7, size: str = "full") -> Iterator[dict[str, Any]]:
    """Realistic agent events from the simulator (arrival order, with late ones and retries).

    ``size="compact"``: without the fields in COMPACT_DROPPED (~400 B canonical, not ~760 B).
    """
    simulated = iter_events(SimulationConfig(events=count, seed=seed, duplicate_fraction=0.0))
    if size == "full":
        return simulated
    return ({k: v for k, v in e.items() if k not in COMPACT_DROPPED} for e in simulated)


def ledger_path(count: int, size: str) -> Path:
    """Where the benchmark ledger of ``count`` events of ``size`` is kept."""
    return OUT / (f"ledger-{count}" if size == "full" else f"ledger-{count}-{size}")


def batches(
    count: int, size: int, seed: int = 7, event_size: str = "full"
) -> Iterator[list[dict[str, Any]]]:
    """The simulator's events in lists of ``size``."""
    batch: list[dict[str, Any]] = []
    for event in events(count, seed, event_size):
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_ledger(path: Path, count: int, seed: int = 7, size: str = "full") -> float:
    """Build a benchmark ledger of ``count`` simulated events unless a complete one is there.

    Returns the build's events/s (0 when reused). Kept under bench/out/ between runs.
    """
    from ledger import Ledger

    marker = path / "complete"
    if marker.exists():
        _index_segments(path)  # ledgers built before segments carried their event_id index
        return 0.0
    shutil.rmtree(path, ignore_errors=True)
    ledger = Ledger.init(path)
    started = time.perf_counter()
    for batch in batches(count, 10_000, seed, size):
        ledger.append(batch)
    ledger.close()
    rate = count / (time.perf_counter() - started)
    marker.write_text(str(count))
    return rate


def _index_segments(path: Path) -> None:
    import pyarrow.parquet as pq

    from ledger.idlookup import index_path, write_id_index

    for segment in path.glob("writers/*/segments/*.parquet"):
        if not index_path(segment).exists():
            write_id_index(segment, pq.read_table(segment, columns=["event_id"])["event_id"])


def linked_copy(source: Path, target: Path) -> None:
    """Copy a ledger cheaply: segments are immutable, so they are hard-linked."""
    shutil.rmtree(target, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith(".parquet"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def median_seconds(action: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``action``, after one warm-up call."""
    action()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_size(script: str, sizes: list[str]) -> dict[str, Any]:
    """Run ``script`` with this process's options once per event size, each in a fresh process
    (a size measured after another in the same process inherits its heap and page cache), and
    collect their figures. The last ``--sizes`` given wins, so the child's overrides ours."""
    import subprocess

    figures: dict[str, Any] = {}
    for size in sizes:
        command = [sys.executable, script, *sys.argv[1:], "--sizes", size]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        figures.update(orjson.loads(done.stdout.strip().splitlines()[-1]))
    return figures


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line."""
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    sys.stdout.flush()
