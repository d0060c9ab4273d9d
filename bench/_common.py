"""Shared helpers for the benchmarks: realistic events, peak memory, one JSON line out."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line."""
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    sys.stdout.flush()
