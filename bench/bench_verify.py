"""verify over a large ledger (default 10M events), against auditchain's verify on the same events.

Two event sizes: "compact" (~400 B canonical, the size the issue's targets name) and "full" (the
simulator's events, ~760 B). Each ledger is built once from the simulator and kept under
bench/out/ (reused by later runs). Prints one JSON line: per size, events/s for both, their ratio,
size per million events, peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    OUT,
    SIZES,
    build_ledger,
    emit,
    events,
    ledger_path,
    peak_rss_mb,
    per_size,
)

from ledger import Ledger


def auditchain_verify_rate(count: int, size: str) -> float:
    from auditchain import AuditLog, JsonlBackend

    root = Path(tempfile.mkdtemp(prefix="bench-verify-peer-"))

    async def run() -> float:
        log = AuditLog(JsonlBackend(root / "log.jsonl"))
        await log.init()
        entries = [
            (e["agent_id"], e["action"], e.get("resource") or e["event_id"], e)
            for e in events(count, size=size)
        ]
        for start in range(0, len(entries), 10_000):
            await log.append_many(entries[start : start + 10_000])
        started = time.perf_counter()
        report = await log.verify()
        assert report.ok
        return count / (time.perf_counter() - started)

    try:
        return asyncio.run(run())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(size: str, args: argparse.Namespace) -> dict[str, Any]:
    """Verify the ledger of this event size, then the peer on the same events."""
    path = ledger_path(args.events, size)
    OUT.mkdir(exist_ok=True)
    build_rate = build_ledger(path, args.events, size=size)
    ledger = Ledger.open(path)
    started = time.perf_counter()
    report = ledger.verify()
    elapsed = time.perf_counter() - started
    assert report.ok, report.problems[:3]
    verify_rss = peak_rss_mb()  # before the peer, which holds its whole log in memory
    disk = sum(p.stat().st_size for p in path.rglob("*.parquet"))
    peer = auditchain_verify_rate(args.peer_events, size)
    rate = report.events / elapsed
    return {
        "events": report.events,
        "seconds": round(elapsed, 2),
        "chainsight_events_per_s": round(rate),
        "auditchain_events_per_s": round(peer),
        "ratio_vs_auditchain": round(rate / peer, 1),
        "parquet_bytes_per_million_events": round(disk / report.events * 1_000_000),
        "peak_rss_mb_verify_parent": round(verify_rss),
        "build_events_per_s": round(build_rate) if build_rate else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--peer-events", type=int, default=200_000)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    args = parser.parse_args()
    if len(args.sizes) > 1:
        emit(per_size(__file__, args.sizes))
        return
    (size,) = args.sizes
    figures: dict[str, Any] = {"bench": "verify", size: measure(size, args)}
    figures["target_events_per_s"] = 1_000_000
    figures["target_ratio"] = 25
    emit(figures)


if __name__ == "__main__":
    main()
