"""In-process durable append, batches of 10k realistic events, against auditchain's append_many.

Two event sizes: "compact" (~400 B canonical, the size the issue's target names) and "full" (the
simulator's events, ~760 B). Prints one JSON line: for each size, events/s for chainsight and for
the peer on the same events, their ratio, mean event size and bytes on disk per million events;
then peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _common import SIZES, batches, emit, peak_rss_mb, per_size

from ledger import Ledger


def chainsight_rate(root: Path, all_batches: list[list[dict[str, Any]]]) -> tuple[float, int]:
    ledger = Ledger.init(root / "ledger")
    count = 0
    started = time.perf_counter()
    for batch in all_batches:
        count += ledger.append(batch).appended
    ledger.close()  # the last flush to Parquet counts too
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (root / "ledger").rglob("*") if p.is_file())
    return count / elapsed, size


def auditchain_rate(root: Path, all_batches: list[list[dict[str, Any]]]) -> float:
    from auditchain import AuditLog, JsonlBackend

    entries = [
        [(e["agent_id"], e["action"], e.get("resource") or e["event_id"], e) for e in batch]
        for batch in all_batches
    ]

    async def run() -> float:
        log = AuditLog(JsonlBackend(root / "auditchain" / "log.jsonl"))
        await log.init()
        started = time.perf_counter()
        for batch in entries:
            await log.append_many(batch)
        return sum(map(len, entries)) / (time.perf_counter() - started)

    return asyncio.run(run())


def measure(size: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both rates for one event size, with that size's figures."""
    all_batches = list(batches(args.events, args.batch, event_size=size))
    sample = [e for batch in all_batches[:2] for e in batch]
    mean_size = statistics.mean(len(orjson.dumps(e, option=orjson.OPT_SORT_KEYS)) for e in sample)
    gc.collect()
    gc.freeze()  # the input events are the caller's long-lived data, not the ledger's garbage
    root = Path(tempfile.mkdtemp(prefix="bench-append-"))
    try:
        # One batch of other events first, on each side, in throwaway logs: the measured runs
        # are then throughput, without one-time costs such as imports and loading numba's code.
        warm_up = list(batches(args.batch, args.batch, seed=99, event_size=size))
        chainsight_rate(root / "warm-up", warm_up)
        auditchain_rate(root / "warm-up", warm_up)
        rate, disk = chainsight_rate(root, all_batches)
        peer_batches = all_batches[: max(1, args.peer_events // args.batch)]
        peer = auditchain_rate(root, peer_batches)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "mean_client_event_bytes": round(mean_size),
        "mean_canonical_event_bytes": round(mean_size + _ASSIGNED_BYTES),
        "chainsight_events_per_s": round(rate),
        "auditchain_events_per_s": round(peer),
        "ratio_vs_auditchain": round(rate / peer, 2),
        "bytes_on_disk_per_million_events": round(disk / args.events * 1_000_000),
    }


# What the ledger adds to a client event's JSON in its canonical bytes: writer_id, seq and
# observed_time (measured on the simulator's events: 756 B canonical for 664 B of client JSON).
_ASSIGNED_BYTES = 92


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    args = parser.parse_args()
    if len(args.sizes) > 1:
        emit(per_size(__file__, args.sizes))
        return
    (size,) = args.sizes
    figures: dict[str, Any] = {"bench": "append", "events": args.events, "batch": args.batch}
    figures[size] = measure(size, args)
    figures[size]["peak_rss_mb"] = round(peak_rss_mb())
    figures["target_events_per_s"] = 200_000
    figures["target_ratio"] = 10
    emit(figures)


if __name__ == "__main__":
    main()
