"""SQL over the ledger: the views, the logical ``events`` view, the guard, and the limits.

``query.Ledger.sql`` answers read-only SQL as a pyarrow Table over the views ``events`` (one row per
event_id), ``events_raw`` (every stored copy) and ``writers``. These tests build small real ledgers
on disk through the public API and look at what a responder's query sees.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from ledger_helpers import tool_event

from query import (
    Ledger,
    QueryError,
    QueryRefusedError,
    QuerySyntaxError,
    QueryTimeoutError,
    connect,
    run_sql,
)

# DESIGN.md §2: client fields, then the fields the ledger assigns.
CLIENT_COLUMNS = [
    "event_id",
    "time",
    "agent_id",
    "category",
    "action",
    "session_id",
    "task_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "caused_by",
    "principal",
    "on_behalf_of",
    "credential_id",
    "credential_scopes",
    "credential_expires_at",
    "scope_used",
    "intent",
    "intent_scopes",
    "tool",
    "resource",
    "destination",
    "external",
    "sensitivity",
    "bytes",
    "privileged",
    "input_trust",
    "target_agent",
    "approval_for",
    "approver",
    "outcome",
    "error",
    "authz_decision",
    "policy_id",
    "attrs",
]
ASSIGNED_COLUMNS = ["writer_id", "seq", "observed_time", "prev_hash", "hash"]
WRITERS_COLUMNS = [
    "writer_id",
    "events",
    "first_seq",
    "last_seq",
    "last_hash",
    "last_observed_time",
]

# Runs for several seconds if it is not interrupted (so a lost interrupt fails, not hangs).
HEAVY = "SELECT count(*) FROM range(30000) a, range(30000) b WHERE a.range + b.range = 7"


def event(i: int, **fields: Any) -> dict[str, Any]:
    return tool_event(i, **{"attrs": {"model": f"model-{i % 2}", "tokens": i}, **fields})


@pytest.fixture
def flushed(tmp_path: Path) -> Ledger:
    """A ledger with six events in Parquet segments (the writer was closed)."""
    Ledger.init(tmp_path / "ledger")
    with Ledger.open(tmp_path / "ledger") as store:
        store.append([event(i) for i in range(6)])
    return Ledger.open(tmp_path / "ledger")


def test_sql_returns_an_arrow_table(flushed: Ledger) -> None:
    table = flushed.sql("SELECT event_id, agent_id FROM events ORDER BY event_id")
    assert isinstance(table, pa.Table)
    assert table.column_names == ["event_id", "agent_id"]
    assert table.column("event_id").to_pylist() == [f"evt-{i:04d}" for i in range(6)]
    assert table.column("agent_id").to_pylist() == [f"agent-{i % 3}" for i in range(6)]


@pytest.mark.parametrize("view", ["events", "events_raw"])
def test_event_views_have_the_documented_columns(flushed: Ledger, view: str) -> None:
    table = flushed.sql(f"SELECT * FROM {view} LIMIT 0")
    missing = set(CLIENT_COLUMNS + ASSIGNED_COLUMNS) - set(table.column_names)
    assert not missing
    assert table.column_names[: len(CLIENT_COLUMNS)] == CLIENT_COLUMNS
    schema = table.schema
    assert pa.types.is_timestamp(schema.field("time").type)
    assert schema.field("time").type.unit == "us"
    assert schema.field("time").type.tz in ("UTC", "Etc/UTC")
    assert pa.types.is_boolean(schema.field("external").type)
    assert pa.types.is_int64(schema.field("bytes").type)
    assert pa.types.is_int64(schema.field("seq").type)
    assert pa.types.is_list(schema.field("credential_scopes").type)
    assert pa.types.is_binary(schema.field("hash").type) or pa.types.is_fixed_size_binary(
        schema.field("hash").type
    )


def test_events_and_events_raw_have_the_same_columns(flushed: Ledger) -> None:
    events = flushed.sql("SELECT * FROM events LIMIT 0")
    raw = flushed.sql("SELECT * FROM events_raw LIMIT 0")
    assert events.schema == raw.schema


def test_writers_view_columns(flushed: Ledger) -> None:
    table = flushed.sql("SELECT * FROM writers")
    assert table.column_names == WRITERS_COLUMNS
    assert table.num_rows == 1


def test_stored_values_round_trip(flushed: Ledger) -> None:
    row = flushed.sql("SELECT * FROM events WHERE event_id = 'evt-0004'").to_pylist()[0]
    assert row["agent_id"] == "agent-1"
    assert row["time"].isoformat() == "2026-03-01T10:00:04+00:00"
    assert row["seq"] == 4
    assert len(row["hash"]) == 32
    assert len(row["prev_hash"]) == 32
    assert row["session_id"] is None


def test_attrs_is_json(flushed: Ledger) -> None:
    table = flushed.sql(
        "SELECT event_id, attrs->>'$.model' AS model, CAST(attrs->'$.tokens' AS INTEGER) AS tokens,"
        " json_extract_string(attrs, '$.model') AS model2, typeof(attrs) AS kind "
        "FROM events ORDER BY event_id"
    )
    rows = table.to_pylist()
    assert [r["model"] for r in rows] == [f"model-{i % 2}" for i in range(6)]
    assert [r["model2"] for r in rows] == [r["model"] for r in rows]
    assert [r["tokens"] for r in rows] == list(range(6))
    assert {r["kind"] for r in rows} == {"JSON"}
    count = flushed.sql("SELECT count(*) AS n FROM events WHERE attrs->>'$.model' = 'model-1'")
    assert count.column("n").to_pylist() == [3]


def test_acknowledged_unflushed_events_are_visible(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    store = Ledger.open(path)
    try:
        receipts = store.append([event(i) for i in range(4)])
        assert receipts.appended == 4
        assert store.segment_files() == []  # still only in the write-ahead log
        table = store.sql("SELECT event_id, seq, hash FROM events ORDER BY seq")
        assert table.column("event_id").to_pylist() == [r.event_id for r in receipts]
        assert [h.hex() for h in table.column("hash").to_pylist()] == [r.hash for r in receipts]
        # Another reader of the same directory sees them too, without taking any lock.
        reader = Ledger.open(path)
        raw = reader.sql("SELECT count(*) AS n FROM events_raw")
        assert raw.column("n").to_pylist() == [4]
        # A second batch is visible to the very next query.
        store.append([event(10)])
        after = reader.sql("SELECT count(*) AS n, max(seq) AS last FROM events")
        assert after.to_pylist() == [{"n": 5, "last": 4}]
    finally:
        store.close()
    assert store.segment_files() != []
    closed = Ledger.open(path).sql("SELECT count(*) AS n FROM events")
    assert closed.column("n").to_pylist() == [5]


def test_flushed_and_unflushed_events_together(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    with Ledger.open(path) as first:
        first.append([event(i) for i in range(3)])
    store = Ledger.open(path)
    try:
        store.append([event(i) for i in range(3, 5)])
        table = store.sql("SELECT event_id, writer_id, seq FROM events ORDER BY seq")
        assert table.column("seq").to_pylist() == [0, 1, 2, 3, 4]
        assert len(set(table.column("writer_id").to_pylist())) == 1  # the idle log was reused
    finally:
        store.close()


def test_same_event_through_two_writer_logs(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    first = Ledger.open(path)
    second = Ledger.open(path)
    try:
        shared = event(1, attrs={"retry": True})
        one = first.append([event(0), shared])
        two = second.append([shared, event(2)])
        assert one.writer_id != two.writer_id  # the first log is locked: a second log is made
        assert two.duplicates == 0  # each writer log only dedupes its own events

        raw = first.sql(
            "SELECT writer_id, seq, observed_time FROM events_raw WHERE event_id = 'evt-0001' "
            "ORDER BY observed_time"
        ).to_pylist()
        assert [r["writer_id"] for r in raw] == [one.writer_id, two.writer_id]
        assert raw[0]["observed_time"] <= raw[1]["observed_time"]

        expected = {"writer_id": one.writer_id, "seq": one[1].seq, "hash": one[1].hash}
        query = "SELECT writer_id, seq, hash FROM events WHERE event_id = 'evt-0001'"
        for _ in range(3):
            rows = first.sql(query).to_pylist()
            assert [{**r, "hash": r["hash"].hex()} for r in rows] == [expected]
        counts = first.sql(
            "SELECT (SELECT count(*) FROM events) AS logical, "
            "(SELECT count(*) FROM events_raw) AS physical, "
            "(SELECT count(DISTINCT event_id) FROM events) AS ids"
        ).to_pylist()
        assert counts == [{"logical": 3, "physical": 4, "ids": 3}]
    finally:
        first.close()
        second.close()
    # After both logs are flushed to Parquet the choice is the same.
    rows = Ledger.open(path).sql(query).to_pylist()
    assert [{**r, "hash": r["hash"].hex()} for r in rows] == [expected]


def test_writers_view_counts(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    first = Ledger.open(path)
    second = Ledger.open(path)
    try:
        a = first.append([event(i) for i in range(3)])
        b = second.append([event(i) for i in range(10, 12)])
        first.flush()
        a2 = first.append([event(20)])  # one flushed batch plus one in the WAL
    finally:
        first.close()
        second.close()
    rows = {r["writer_id"]: r for r in Ledger.open(path).sql("SELECT * FROM writers").to_pylist()}
    assert set(rows) == {a.writer_id, b.writer_id}
    assert rows[a.writer_id]["events"] == 4
    assert rows[a.writer_id]["first_seq"] == 0
    assert rows[a.writer_id]["last_seq"] == 3
    assert rows[a.writer_id]["last_hash"].hex() == a2[0].hash
    assert rows[b.writer_id]["events"] == 2
    assert rows[b.writer_id]["last_seq"] == 1
    assert rows[b.writer_id]["last_hash"].hex() == b[1].hash


def test_empty_ledger_views(tmp_path: Path) -> None:
    store = Ledger.init(tmp_path / "ledger")
    for view in ("events", "events_raw", "writers"):
        table = store.sql(f"SELECT * FROM {view}")
        assert table.num_rows == 0
    assert store.sql("SELECT count(*) AS n FROM events").column("n").to_pylist() == [0]


# -- the guard and the locked-down connection -----------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT read_text('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM 'file.csv'",
        'SELECT * FROM "/etc/passwd"',
        "SELECT * FROM events WHERE agent_id IN (SELECT * FROM read_csv_auto('/etc/passwd'))",
        "WITH x AS (SELECT * FROM read_json('/etc/x.json')) SELECT * FROM x",
        "COPY (SELECT * FROM events) TO '/tmp/out.csv'",
        "COPY events TO '/tmp/out.parquet'",
        "ATTACH '/tmp/other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA version",
        "DROP VIEW events",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO events_raw SELECT * FROM events_raw",
        "SELECT getenv('HOME')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT 1; SELECT 2",
    ],
)
def test_guard_refuses(flushed: Ledger, statement: str) -> None:
    with pytest.raises(QueryRefusedError):
        flushed.sql(statement)
    with pytest.raises(QueryRefusedError):
        run_sql(flushed, statement)


def test_refused_error_says_why(flushed: Ledger) -> None:
    with pytest.raises(QueryRefusedError, match=r"read_text\(\) is not allowed"):
        flushed.sql("SELECT read_text('/etc/passwd')")
    with pytest.raises(QueryRefusedError, match="exactly one statement"):
        flushed.sql("SELECT 1; SELECT 2")
    with pytest.raises(QueryRefusedError, match="COPY"):
        flushed.sql("COPY (SELECT 1) TO '/tmp/x.csv'")
    assert QueryRefusedError.status == 403


def test_allowed_table_functions(flushed: Ledger) -> None:
    table = flushed.sql("SELECT count(*) AS n FROM range(10)")
    assert table.column("n").to_pylist() == [10]
    tags = flushed.sql("SELECT unnest(['a', 'b']) AS tag")
    assert tags.column("tag").to_pylist() == ["a", "b"]


def test_connection_itself_cannot_touch_files(flushed: Ledger, tmp_path: Path) -> None:
    """Even a statement that got past the guard cannot read or write files."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n", encoding="utf-8")
    target = tmp_path / "out.csv"
    connection = connect(flushed)
    try:
        for statement in (
            f"SELECT * FROM read_text('{secret}')",
            f"SELECT * FROM read_csv('{secret}')",
            f"SELECT * FROM '{secret}'",
            f"COPY (SELECT 1) TO '{target}'",
            "SET enable_external_access = true",
            f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        ):
            with pytest.raises(duckdb.Error):
                connection.execute(statement)
        assert not target.exists()
        assert not (tmp_path / "other.duckdb").exists()
        count = connection.execute("SELECT count(*) FROM events").fetchall()
        assert count == [(6,)]
    finally:
        connection.close()


def test_syntax_error_has_line_column_and_caret(flushed: Ledger) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        flushed.sql("SELECT event_id\nFROM events\nWHERE agent_id = = 'x'")
    error = caught.value
    assert error.line == 3
    assert error.column > 0
    assert "^" in error.highlight
    assert "line 3" in str(error)
    assert "WHERE agent_id = = 'x'" in str(error)


def test_dialect_is_transpiled(flushed: Ledger) -> None:
    result = run_sql(
        flushed,
        "SELECT event_id::text AS e FROM events WHERE agent_id ILIKE 'AGENT-0' ORDER BY 1",
        dialect="postgres",
    )
    assert result.table.column("e").to_pylist() == ["evt-0000", "evt-0003"]
    spark = run_sql(flushed, "SELECT `event_id` FROM events ORDER BY 1 LIMIT 1", dialect="spark")
    assert spark.table.column("event_id").to_pylist() == ["evt-0000"]


def test_runtime_error_is_a_query_error(flushed: Ledger) -> None:
    with pytest.raises(QueryError, match="Conversion"):
        flushed.sql("SELECT CAST(event_id AS INTEGER) FROM events")
    with pytest.raises(QueryError):
        flushed.sql("SELECT no_such_column FROM events")


# -- limits ---------------------------------------------------------------------------------------


def test_row_limit_truncates_and_says_so(flushed: Ledger) -> None:
    result = run_sql(flushed, "SELECT range AS n FROM range(100)", max_rows=5)
    assert result.truncated
    assert result.table.column("n").to_pylist() == [0, 1, 2, 3, 4]
    exact = run_sql(flushed, "SELECT range AS n FROM range(5)", max_rows=5)
    assert not exact.truncated
    assert exact.table.num_rows == 5
    under = run_sql(flushed, "SELECT * FROM events", max_rows=100)
    assert not under.truncated
    assert under.table.num_rows == 6
    assert flushed.sql("SELECT * FROM events", max_rows=2).num_rows == 2


def test_row_limit_across_many_batches(flushed: Ledger) -> None:
    result = run_sql(flushed, "SELECT range AS n FROM range(300000) ORDER BY 1", max_rows=150_001)
    assert result.truncated
    assert result.table.num_rows == 150_001
    assert result.table.column("n")[-1].as_py() == 150_000
    whole = run_sql(flushed, "SELECT range AS n FROM range(150001)", max_rows=150_001)
    assert not whole.truncated
    assert whole.table.num_rows == 150_001


def test_result_records_transpiled_sql_and_time(flushed: Ledger) -> None:
    result = run_sql(flushed, "SELECT 1 AS one")
    assert result.table.to_pylist() == [{"one": 1}]
    assert result.seconds >= 0
    assert "SELECT" in result.sql.upper()


@pytest.mark.timeout(60)
def test_timeout_interrupts_a_heavy_query(flushed: Ledger) -> None:
    with pytest.raises(QueryTimeoutError, match="interrupted"):
        run_sql(flushed, HEAVY, timeout=0.01)
    assert QueryTimeoutError.status == 408
    # The ledger answers normally afterwards.
    assert flushed.sql("SELECT count(*) AS n FROM events").column("n").to_pylist() == [6]


@pytest.mark.timeout(60)
def test_timeout_while_streaming_rows_is_a_timeout_error(flushed: Ledger) -> None:
    streaming = (
        "SELECT a.range FROM range(100000) a, range(100000) b WHERE (a.range + b.range) % 1000 = 0"
    )
    with pytest.raises(QueryTimeoutError):
        run_sql(flushed, streaming, timeout=0.3, max_rows=10**9)


def test_error_in_a_later_batch_is_a_query_error(flushed: Ledger) -> None:
    failing = (
        "SELECT CAST(CASE WHEN range = 200000 THEN 'x' ELSE '1' END AS INTEGER) AS v "
        "FROM range(300000)"
    )
    with pytest.raises(QueryError, match="Conversion"):
        run_sql(flushed, failing)


class _ExpiredTimer:
    """A threading.Timer whose deadline has already passed when it is started (a loaded host)."""

    def __init__(self, interval: float, function: Any) -> None:
        self._function = function

    def start(self) -> None:
        self._function()

    def cancel(self) -> None:
        pass


@pytest.mark.timeout(60)
def test_deadline_that_passes_before_execution_still_stops_the_query(
    flushed: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "Timer", _ExpiredTimer)
    moderate = "SELECT count(*) FROM range(8000) a, range(8000) b WHERE a.range + b.range = 7"
    with pytest.raises(QueryTimeoutError):
        run_sql(flushed, moderate, timeout=0.0)


def test_queries_from_threads_do_not_share_state(flushed: Ledger) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            table = flushed.sql("SELECT count(*) AS n FROM events")
            results.append(table.column("n")[0].as_py())
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [6, 6, 6, 6]
