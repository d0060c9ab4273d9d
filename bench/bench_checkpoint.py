"""checkpoint after 100k new events on a 1M- and a 10M-event ledger, and proof latency.

The cost of a checkpoint should follow the new events, not the ledger's size (target: the 10M
ledger's time at most 2x the 1M ledger's). A proof of a random event on the 10M ledger: target
50 ms or less. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from _common import OUT, batches, build_ledger, emit, linked_copy, peak_rss_mb

from ledger import Ledger


def checkpoint_after_growth(size: int, growth: int) -> tuple[float, float, Ledger]:
    """Seconds for the first checkpoint of a fresh copy, and for one after ``growth`` events."""
    base = OUT / f"ledger-{size}"
    build_ledger(base, size)
    work = OUT / f"checkpoint-{size}"
    linked_copy(base, work)
    ledger = Ledger.open(work)
    started = time.perf_counter()
    ledger.checkpoint()
    first = time.perf_counter() - started
    for batch in batches(growth, 10_000, seed=size % 1000 + 11):
        ledger.append(batch)
    ledger.close()
    started = time.perf_counter()
    ledger.checkpoint()
    return first, time.perf_counter() - started, ledger


def proof_latencies(ledger: Ledger, samples: int) -> list[float]:
    """Milliseconds per proof of random events."""
    table = ledger.unflushed_table()  # touch nothing heavy: pick ids from one segment per writer
    del table
    import pyarrow.parquet as pq

    ids: list[str] = []
    for segment in ledger.segment_files():
        ids += (
            pq.read_table(segment.path, columns=["event_id"]).column("event_id").to_pylist()[::997]
        )
    chosen = random.Random(5).sample(ids, min(samples, len(ids)))
    timings = []
    for event_id in chosen:
        started = time.perf_counter()
        ledger.proof(event_id)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=10_000_000)
    parser.add_argument("--growth", type=int, default=100_000)
    parser.add_argument("--proofs", type=int, default=100)
    args = parser.parse_args()
    small_first, small_after, _ = checkpoint_after_growth(args.small, args.growth)
    large_first, large_after, large = checkpoint_after_growth(args.large, args.growth)
    timings = proof_latencies(large, args.proofs)
    emit(
        {
            "bench": "checkpoint_and_proof",
            "growth_events": args.growth,
            "checkpoint_s_after_growth_small": round(small_after, 3),
            "checkpoint_s_after_growth_large": round(large_after, 3),
            "ratio_large_to_small": round(large_after / small_after, 2),
            "first_checkpoint_s_small": round(small_first, 2),
            "first_checkpoint_s_large": round(large_first, 2),
            "small_events": args.small,
            "large_events": args.large,
            "proof_ms_median": round(statistics.median(timings), 2),
            "proof_ms_p95": round(sorted(timings)[int(len(timings) * 0.95) - 1], 2),
            "peak_rss_mb": round(peak_rss_mb()),
            "target_ratio": 2.0,
            "target_proof_ms": 50,
        }
    )


if __name__ == "__main__":
    main()
