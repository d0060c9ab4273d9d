"""Benchmark of the agent-activity simulator: prints one JSON line of figures.

    python bench/bench_simulator.py [--events N] [--seed S] [--serial]

Generates N events (default 1,000,000) to a temporary JSONL file and reports the generation
rate, the peak resident memory of the process and of its worker processes, and the average
bytes per event. --serial keeps the run in one process (write_sample's parallel=False).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

from sample_data import SimulationConfig, write_sample


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serial", action="store_true", help="no worker processes")
    args = parser.parse_args(argv)
    config = SimulationConfig(events=args.events, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        events_path = Path(scratch) / "events.jsonl"
        labels_path = Path(scratch) / "labels.jsonl"
        started = time.perf_counter()
        cpu_started = time.process_time() + _children_cpu()
        stats = write_sample(
            config, events_path, labels_path, parallel=False if args.serial else None
        )
        elapsed = time.perf_counter() - started
        # CPU time too, workers' included: on a shared machine wall time says more about the
        # neighbours.
        cpu = time.process_time() + _children_cpu() - cpu_started
        size = events_path.stat().st_size
    # ru_maxrss is in KiB on Linux (bytes on macOS); for children, the largest of them.
    unit = (1 << 20) if sys.platform == "darwin" else 1024
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit
    worker_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / unit
    figures = {
        "bench": "simulator",
        "events": stats.events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(stats.events / elapsed),
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_s": round(stats.events / cpu),
        "peak_rss_mib": round(peak_mib, 1),
        "peak_worker_rss_mib": round(worker_peak_mib, 1),
        "bytes_per_event": round(size / max(1, stats.events), 1),
        "labels": stats.labels,
        "agents": stats.agents,
        "late": stats.late,
        "duplicates": stats.duplicates,
    }
    print(orjson.dumps(figures).decode())
    return 0


def _children_cpu() -> float:
    """CPU seconds of the worker processes that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
