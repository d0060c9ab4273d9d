"""Segments skipped by their footer statistics: answers stay exact at every segment's edges.

The catalog tells pyarrow each segment's range of time, seq, observed_time and event_id, so a
filter skips a segment without opening it. These tests build a ledger of several segments with
overlapping time ranges (and a live writer's unflushed events, scanned with them) and check, for
predicates aimed at the edges of each segment, that the answer through ``Ledger.sql`` is the
answer of a plain DuckDB connection over the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from query import Ledger
from query.catalog import _segments_dataset

BATCHES = 4
PER_BATCH = 40
START = datetime.fromisoformat("2026-03-01T10:00:00+00:00")


def _event(batch: int, i: int) -> dict[str, Any]:
    # Each batch spans an hour starting half an hour after the previous one: segments overlap.
    moment = START + timedelta(minutes=30 * batch + 90 * i / PER_BATCH)
    if batch == BATCHES - 1 and i == 0:
        moment = START - timedelta(hours=1)  # a late event widens the last segment's range
    return {
        "event_id": f"evt-{batch}-{i:03d}",
        "time": moment.isoformat().replace("+00:00", "Z"),
        "agent_id": f"agent-{i % 3}",
        "category": "tool",
        "action": "tool.call",
    }


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    path = tmp_path_factory.mktemp("pruning") / "ledger"
    Ledger.init(path)
    for batch in range(BATCHES):
        with Ledger.open(path) as store:
            store.append([_event(batch, i) for i in range(PER_BATCH)])
    live = Ledger.open(path)
    live.append([_event(BATCHES, i) for i in range(PER_BATCH)])
    opened = Ledger.open(path)
    assert len(opened.segment_files()) == BATCHES
    assert opened.unflushed_table().num_rows == PER_BATCH
    yield opened
    live.close()


def _stored_rows(ledger: Ledger) -> pa.Table:
    segments = [pq.read_table(s.path) for s in ledger.segment_files()]
    return pa.concat_tables([*segments, ledger.unflushed_table()])


def _literal(value: object) -> str:
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def _edge_predicates(ledger: Ledger) -> list[str]:
    predicates = ["time IS NULL", "time IS NOT NULL"]
    parts = [pq.read_table(s.path) for s in ledger.segment_files()]
    for table in [*parts, ledger.unflushed_table()]:
        for column in ("time", "seq", "observed_time", "event_id"):
            low = _literal(pc.min(table[column]).as_py())
            high = _literal(pc.max(table[column]).as_py())
            predicates += [
                f"{column} = {low}",
                f"{column} = {high}",
                f"{column} < {low}",
                f"{column} <= {low}",
                f"{column} > {high}",
                f"{column} >= {high}",
                f"{column} BETWEEN {low} AND {high}",
                f"{column} IN ({low}, {high})",
                f"NOT ({column} > {high})",
                f"{column} > {high} OR agent_id = 'agent-1'",
            ]
    return predicates


def test_every_edge_predicate_matches_a_plain_scan(ledger: Ledger) -> None:
    plain = duckdb.connect()
    plain.register("stored", _stored_rows(ledger))
    for predicate in _edge_predicates(ledger):
        shape = "SELECT count(*) AS n, coalesce(sum(seq), -1) AS seqs FROM {} WHERE " + predicate
        expected = plain.execute(shape.format("stored")).fetchall()
        answer = ledger.sql(shape.format("events_raw"))
        assert [tuple(row.values()) for row in answer.to_pylist()] == expected, predicate


def test_a_time_window_opens_only_the_segments_it_overlaps(ledger: Ledger) -> None:
    utc = pa.timestamp("us", tz="UTC")
    window = ds.field("time") >= pa.scalar(START + timedelta(minutes=95), utc)
    window &= ds.field("time") < pa.scalar(START + timedelta(minutes=100), utc)
    dataset = _segments_dataset(ledger.segment_files())
    opened = [Path(f.path).name for f in dataset.get_fragments(filter=window)]
    overlapping = [
        s.path.name
        for s in ledger.segment_files()
        if pq.read_table(s.path).filter(window).num_rows > 0
    ]
    assert opened == overlapping
    assert 0 < len(opened) < BATCHES


def test_a_segment_replaced_in_place_is_read_with_its_new_ranges(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    with Ledger.open(path) as store:
        store.append([_event(0, i) for i in range(PER_BATCH)])
    ledger = Ledger.open(path)
    next_day = "time >= TIMESTAMPTZ '2026-03-02 00:00:00+00'"
    assert ledger.sql(f"SELECT count(*) AS n FROM events WHERE {next_day}").to_pylist() == [
        {"n": 0}
    ]
    segment = ledger.segment_files()[0].path
    table = pq.read_table(segment)
    later = pc.add(table["time"], pa.scalar(timedelta(days=1)))
    shifted = table.set_column(table.schema.get_field_index("time"), "time", later)
    replacement = segment.with_suffix(".tmp")
    pq.write_table(shifted, replacement)
    os.replace(replacement, segment)
    assert ledger.sql(f"SELECT count(*) AS n FROM events WHERE {next_day}").to_pylist() == [
        {"n": PER_BATCH}
    ]
