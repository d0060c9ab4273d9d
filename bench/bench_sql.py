"""SQL through the guard and catalog vs raw DuckDB over the same Parquet files, and pruning.

On the 10M-event benchmark ledger: a group-by over a one-hour window through ``run_sql`` (warm
catalog) against the same query on a raw DuckDB connection reading the segment files (target:
at most 5 ms more), and how much of the ledger the hour window reads compared with a full scan
(row groups and compressed bytes the time statistics let the scan skip). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from _common import OUT, build_ledger, emit

from ledger.schema import SEGMENT_SCHEMA
from query import Ledger, run_sql

START, END = "2026-11-03 10:00:00+00", "2026-11-03 11:00:00+00"
WINDOW = f"time >= TIMESTAMPTZ '{START}' AND time < TIMESTAMPTZ '{END}'"


def median_ms(action: Callable[[], object], runs: int = 9) -> float:
    action()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def pruned_share(files: list[str]) -> tuple[int, int, int, int]:
    """Row groups and compressed bytes the hour filter keeps, and the totals."""
    dataset = ds.dataset(files, format="parquet", schema=SEGMENT_SCHEMA)
    start = ds.field("time") >= datetime.fromisoformat(START)
    end = ds.field("time") < datetime.fromisoformat(END)
    kept_groups = kept_bytes = total_groups = total_bytes = 0
    for fragment in dataset.get_fragments():
        metadata = pq.ParquetFile(fragment.path).metadata
        sizes = [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]
        total_groups += len(sizes)
        total_bytes += sum(sizes)
        for piece in fragment.split_by_row_group(start & end):
            for group in piece.row_groups:
                kept_groups += 1
                kept_bytes += sizes[group.id]
    return kept_groups, total_groups, kept_bytes, total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    args = parser.parse_args()
    path = OUT / f"ledger-{args.events}"
    build_ledger(path, args.events)
    ledger = Ledger.open(path)
    files = [str(s.path) for s in ledger.segment_files()]
    query = f"SELECT agent_id, count(*) AS n FROM events_raw WHERE {WINDOW} GROUP BY 1"
    raw = f"SELECT agent_id, count(*) AS n FROM read_parquet($files) WHERE {WINDOW} GROUP BY 1"
    connection = duckdb.connect()
    raw_ms = median_ms(lambda: connection.execute(raw, {"files": files}).fetchall())
    guarded_ms = median_ms(lambda: run_sql(ledger, query))
    full_ms = median_ms(
        lambda: run_sql(ledger, "SELECT agent_id, count(*) FROM events_raw GROUP BY 1"), 3
    )
    kept_groups, total_groups, kept_bytes, total_bytes = pruned_share(files)
    emit(
        {
            "bench": "sql",
            "events": args.events,
            "raw_duckdb_hour_ms": round(raw_ms, 1),
            "guarded_hour_ms": round(guarded_ms, 1),
            "guard_overhead_ms": round(guarded_ms - raw_ms, 1),
            "guarded_full_scan_ms": round(full_ms, 1),
            "hour_row_groups_read": kept_groups,
            "row_groups_total": total_groups,
            "hour_uncompressed_bytes_read": kept_bytes,
            "full_scan_uncompressed_bytes": total_bytes,
            "target_overhead_ms": 5,
        }
    )


if __name__ == "__main__":
    main()
