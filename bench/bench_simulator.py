"""Benchmark of the agent-activity simulator: prints one JSON line of figures.

    python bench/bench_simulator.py [--events N] [--seed S]

Generates N events (default 1,000,000) to a temporary JSONL file and reports the generation
rate, the peak resident memory of the process, and the average bytes per event.
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
    args = parser.parse_args(argv)
    config = SimulationConfig(events=args.events, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        events_path = Path(scratch) / "events.jsonl"
        labels_path = Path(scratch) / "labels.jsonl"
        started = time.perf_counter()
        cpu_started = time.process_time()
        stats = write_sample(config, events_path, labels_path)
        elapsed = time.perf_counter() - started
        # CPU time too: on a shared machine wall time says more about the neighbours.
        cpu = time.process_time() - cpu_started
        size = events_path.stat().st_size
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
    figures = {
        "bench": "simulator",
        "events": stats.events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(stats.events / elapsed),
        "cpu_seconds": round(cpu, 3),
        "events_per_cpu_s": round(stats.events / cpu),
        "peak_rss_mib": round(peak_mib, 1),
        "bytes_per_event": round(size / max(1, stats.events), 1),
        "labels": stats.labels,
        "agents": stats.agents,
        "late": stats.late,
        "duplicates": stats.duplicates,
    }
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
