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


def events(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Realistic agent events from the simulator (arrival order, with late ones and retries)."""
    return iter_events(SimulationConfig(events=count, seed=seed, duplicate_fraction=0.0))


def batches(count: int, size: int, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """The simulator's events in lists of ``size``."""
    batch: list[dict[str, Any]] = []
    for event in events(count, seed):
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_ledger(path: Path, count: int, seed: int = 7) -> float:
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
    for batch in batches(count, 10_000, seed):
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


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line."""
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    sys.stdout.flush()
