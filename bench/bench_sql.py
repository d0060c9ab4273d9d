"""SQL through the guard and catalog vs raw DuckDB over the same Parquet files, and pruning.

On the 10M-event benchmark ledger: a group-by over a one-hour window through ``run_sql`` (warm
catalog) against the same query on a raw DuckDB connection reading the segment files (target:
at most 5 ms more), and how much of the ledger the hour window reads compared with a full scan
(segments and row groups the statistics let the catalog's scan skip). Prints one JSON line.

Raw and guarded runs alternate, both with the catalog's thread count and both returning Arrow,
so load from other processes on the host falls on both alike; the overhead is the median of
the paired differences.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from _common import OUT, build_ledger, emit, median_seconds

from query import CatalogLimits, Ledger, run_sql
from query.catalog import _segments_dataset

START, END = "2026-11-03 10:00:00+00", "2026-11-03 11:00:00+00"
WINDOW = f"time >= TIMESTAMPTZ '{START}' AND time < TIMESTAMPTZ '{END}'"


def paired_ms(
    raw: Callable[[], object], guarded: Callable[[], object], rounds: int = 21
) -> tuple[list[float], list[float]]:
    """Timings of ``raw`` and ``guarded`` run alternately, after one warm-up run of each."""
    raw()
    guarded()
    raw_ms, guarded_ms = [], []
    for _ in range(rounds):
        for action, timings in ((raw, raw_ms), (guarded, guarded_ms)):
            started = time.perf_counter()
            action()
            timings.append((time.perf_counter() - started) * 1000)
    return raw_ms, guarded_ms


def pruned_share(ledger: Ledger) -> dict[str, int]:
    """Segments and row groups the catalog's scan reads for the hour window, and the totals.

    The catalog's own dataset decides which segments are opened at all (each one's footer
    ranges); the row-group statistics then decide which row groups of those are read.
    """
    utc = pa.timestamp("us", tz="UTC")
    start = ds.field("time") >= pa.scalar(datetime.fromisoformat(START), utc)
    end = ds.field("time") < pa.scalar(datetime.fromisoformat(END), utc)
    dataset = _segments_dataset(ledger.segment_files())
    opened = kept_groups = kept_bytes = total_groups = total_bytes = 0
    sizes_by_path = {}
    for fragment in dataset.get_fragments():
        metadata = pq.ParquetFile(fragment.path).metadata
        sizes = [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]
        sizes_by_path[fragment.path] = sizes
        total_groups += len(sizes)
        total_bytes += sum(sizes)
    for fragment in dataset.get_fragments(filter=start & end):
        opened += 1
        for piece in fragment.split_by_row_group(start & end):
            for group in piece.row_groups:
                kept_groups += 1
                kept_bytes += sizes_by_path[fragment.path][group.id]
    return {
        "hour_segments_opened": opened,
        "segments_total": len(sizes_by_path),
        "hour_row_groups_read": kept_groups,
        "row_groups_total": total_groups,
        "hour_uncompressed_bytes_read": kept_bytes,
        "full_scan_uncompressed_bytes": total_bytes,
    }


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
    connection = duckdb.connect(config={"threads": CatalogLimits().threads})
    raw_ms, guarded_ms = paired_ms(
        lambda: connection.sql(raw, params={"files": files}).to_arrow_table(),
        lambda: run_sql(ledger, query),
    )
    overheads = [g - r for r, g in zip(raw_ms, guarded_ms, strict=True)]
    full_ms = 1000 * median_seconds(
        lambda: run_sql(ledger, "SELECT agent_id, count(*) FROM events_raw GROUP BY 1"), runs=3
    )
    emit(
        {
            "bench": "sql",
            "events": args.events,
            "raw_duckdb_hour_ms": round(statistics.median(raw_ms), 1),
            "guarded_hour_ms": round(statistics.median(guarded_ms), 1),
            "guard_overhead_ms": round(statistics.median(overheads), 1),
            "raw_duckdb_hour_best_ms": round(min(raw_ms), 1),
            "guarded_hour_best_ms": round(min(guarded_ms), 1),
            "guarded_full_scan_ms": round(full_ms, 1),
            **pruned_share(ledger),
            "target_overhead_ms": 5,
        }
    )


if __name__ == "__main__":
    main()
