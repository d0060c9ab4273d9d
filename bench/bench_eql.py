"""EQL on the simulator's 10M-event ledger, against the reference matcher and hand-written SQL.

Figures (median of several warm runs each):
- a 3-step ``sequence by session_id with maxspan`` query: every match found, the first 10 (the
  Elasticsearch default size) returned with whole events (target <= 2 s); also with every match's
  events read back;
- the same query over the 1M-event ledger against the pure-Python reference matcher of the tests
  (records already in memory; target >= 100x faster);
- a 2-step sequence with a missing step, and a ``runs=5`` sequence;
- a filtered event query against the equivalent hand-written DuckDB SQL on the same connection
  (DuckDB reading the segment files itself; target within 1.2x);
- peak memory of the engine runs (before the reference's records are loaded). Prints one JSON
  line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import OUT, build_ledger, emit, median_seconds, peak_rss_mb

from query import Ledger
from query.catalog import catalog
from query.eql import run_eql
from query.eql.engine import NATIVE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "query" / "eql"))
import reference

THREE_STEPS = """sequence by session_id with maxspan=1h
  [secret where action == "secret.read" and outcome == "success"]
  [config where action : "config.*"]
  [job where action == "job.trigger"]"""
MISSING_STEP = """sequence by session_id with maxspan=30m
  [data where sensitivity in ("confidential", "restricted") and outcome == "success"]
 ![approval where true]
  [network where external == true and outcome == "success"]"""
RUNS = """sequence by agent_id, resource with maxspan=10m
  [any where outcome in ("failure", "error")] with runs=5"""
EVENTS = 'network where external == true and bytes > 1000000 and outcome == "success"'
EVENTS_SQL = (
    "SELECT * FROM events WHERE category = 'network' AND external AND bytes > 1000000 "
    "AND outcome = 'success' ORDER BY time, writer_id, seq LIMIT 10"
)


def reference_spec() -> reference.Sequence:
    """THREE_STEPS as the reference matcher's plain-Python query."""
    return reference.Sequence(
        steps=(
            reference.Step(
                "secret", lambda r: r["action"] == "secret.read" and r["outcome"] == "success"
            ),
            reference.Step("config", lambda r: str(r["action"]).lower().startswith("config.")),
            reference.Step("job", lambda r: r["action"] == "job.trigger"),
        ),
        by=("session_id",),
        maxspan_ms=3_600_000,
    )


def reference_ratio(path: Path) -> dict[str, Any]:
    ledger = Ledger.open(path)
    records = ledger.sql(
        "SELECT event_id, time, category, action, outcome, session_id, writer_id, seq "
        "FROM events ORDER BY writer_id, seq",
        max_rows=10**8,
    ).to_pylist()
    engine = median_seconds(lambda: run_eql(ledger, THREE_STEPS, size=10), 3)
    # The reference returns ids only: the engine's matching alone, no event read back.
    matching = median_seconds(lambda: run_eql(ledger, THREE_STEPS, size=0), 3)
    started = time.perf_counter()
    expected = reference.match_sequences(reference_spec(), records)
    slow = time.perf_counter() - started
    found = run_eql(ledger, THREE_STEPS, size=10**6)
    return {
        "ref_events": len(records),
        "ref_matches": len(expected),
        "ref_engine_matches": found.total,
        "ref_engine_s": round(engine, 3),
        "ref_reference_s": round(slow, 2),
        "ref_engine_matching_s": round(matching, 3),
        "ref_ratio": round(slow / engine, 1),
        "ref_ratio_matching": round(slow / matching, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--reference-events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    path = OUT / f"ledger-{args.events}"
    build_ledger(path, args.events)
    ledger = Ledger.open(path)
    figures: dict[str, Any] = {"bench": "eql", "events": args.events}

    first = run_eql(ledger, THREE_STEPS, size=10)
    figures["seq3_matches"] = first.total
    figures["seq3_top10_s"] = round(
        median_seconds(lambda: run_eql(ledger, THREE_STEPS, 10), args.runs), 3
    )
    figures["seq3_all_events_s"] = round(
        median_seconds(lambda: run_eql(ledger, THREE_STEPS, size=first.total), 1), 3
    )
    for name, query in (("missing", MISSING_STEP), ("runs5", RUNS)):
        figures[f"{name}_matches"] = run_eql(ledger, query, size=10).total
        figures[f"{name}_top10_s"] = round(
            median_seconds(lambda q=query: run_eql(ledger, q, size=10), args.runs), 3
        )

    def hand_written() -> object:
        with catalog(ledger, NATIVE) as connection:
            return connection.sql(EVENTS_SQL).to_arrow_table()

    eql_events = median_seconds(lambda: run_eql(ledger, EVENTS + " | head 10", size=10), args.runs)
    sql_events = median_seconds(hand_written, args.runs)
    figures["events_eql_s"] = round(eql_events, 3)
    figures["events_sql_s"] = round(sql_events, 3)
    figures["events_ratio_to_sql"] = round(eql_events / sql_events, 2)

    # Before the reference matcher holds a million records in Python.
    figures["engine_peak_rss_mb"] = round(peak_rss_mb(), 1)
    reference_path = OUT / f"ledger-{args.reference_events}"
    build_ledger(reference_path, args.reference_events)
    figures.update(reference_ratio(reference_path))
    emit(figures)


if __name__ == "__main__":
    main()
