"""What is kept between queries: guarded texts, catalogs and their bound relations.

A process asking the same question again skips the guard's parse, the catalog build and the
statement's first bind. None of that may change an answer or let a refused statement through:
refusals are judged afresh every time, a dialect is part of what a text means, a repeated query
still sees events appended since it last ran, and a responder's text never shares the catalog
built for engine-generated SQL, where segment paths are allowed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import tool_event

import query.sql
from query import CatalogLimits, Ledger, QueryError, QueryRefusedError, QueryTimeoutError, run_sql
from query.sql import transpile


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    Ledger.init(tmp_path / "ledger")
    with Ledger.open(tmp_path / "ledger") as store:
        store.append([tool_event(i) for i in range(6)])
    return Ledger.open(tmp_path / "ledger")


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT 1; DROP VIEW events",
        "SELECT * FROM _rows",
    ],
)
def test_a_refused_statement_is_refused_every_time(ledger: Ledger, statement: str) -> None:
    for _ in range(3):
        with pytest.raises(QueryRefusedError):
            run_sql(ledger, statement)


def test_a_refused_statement_longer_than_the_cache_takes_is_still_refused(ledger: Ledger) -> None:
    padding = "/*" + "x" * 20_000 + "*/"
    for _ in range(2):
        with pytest.raises(QueryRefusedError):
            run_sql(ledger, f"SELECT 1 {padding}; DROP VIEW events")


def test_a_long_query_still_answers(ledger: Ledger) -> None:
    padding = "/*" + "x" * 20_000 + "*/"
    table = ledger.sql(f"SELECT count(*) AS n FROM events {padding}")
    assert table.to_pylist() == [{"n": 6}]


def test_the_same_text_in_two_dialects_keeps_each_meaning(ledger: Ledger) -> None:
    query = "SELECT 7 / 2 AS x"
    assert ledger.sql(query).to_pylist() == [{"x": 3.5}]
    assert ledger.sql(query, dialect="postgres").to_pylist() == [{"x": 3}]
    assert ledger.sql(query).to_pylist() == [{"x": 3.5}]
    assert transpile(query) != transpile(query, "postgres")


def test_a_repeated_query_sees_events_appended_since(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    store = Ledger.open(path)
    reader = Ledger.open(path)
    query = "SELECT count(*) AS n, max(seq) AS last FROM events"
    try:
        for appended in range(1, 4):
            store.append([tool_event(appended)])
            assert reader.sql(query).to_pylist() == [{"n": appended, "last": appended - 1}]
            assert reader.sql(query).to_pylist() == [{"n": appended, "last": appended - 1}]
    finally:
        store.close()
    assert reader.sql(query).to_pylist() == [{"n": 3, "last": 2}]


def test_a_query_that_fails_to_bind_fails_every_time(ledger: Ledger) -> None:
    for _ in range(2):
        with pytest.raises(QueryError, match="no_such_column"):
            ledger.sql("SELECT no_such_column FROM events")


def test_a_catalog_replaced_while_a_query_runs_on_it_is_closed_after(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    store = Ledger.open(path)
    reader = Ledger.open(path)
    heavy = "SELECT count(*) AS n FROM range(30000) a, range(30000) b WHERE a.range + b.range = 7"
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def long_query() -> None:
        started.set()
        try:
            run_sql(reader, heavy, timeout=1.5)
            outcome.append(None)
        except BaseException as err:  # reported to the main thread, which asserts on it
            outcome.append(err)

    try:
        store.append([tool_event(0)])
        reader.sql("SELECT 1 AS one FROM events")  # the catalog the long query will use
        worker = threading.Thread(target=long_query)
        worker.start()
        started.wait()
        time.sleep(0.3)
        store.append([tool_event(1)])  # the next query needs a new catalog
        assert reader.sql("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 2}]
        worker.join()
    finally:
        store.close()
    assert len(outcome) == 1
    assert outcome[0] is None or isinstance(outcome[0], QueryTimeoutError)


def test_responder_sql_never_runs_on_the_native_reader_catalog(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[CatalogLimits | None] = []
    real = query.sql.catalog_session

    def recording(
        ledger: Ledger, limits: CatalogLimits | None = None, as_of: int | None = None
    ) -> Any:
        asked.append(limits)
        return real(ledger, limits, as_of)

    monkeypatch.setattr(query.sql, "catalog_session", recording)
    table = run_sql(
        ledger, "SELECT count(*) AS n FROM events", limits=CatalogLimits(native_reader=True)
    )
    assert table.table.to_pylist() == [{"n": 6}]
    assert asked and all(limits is not None and not limits.native_reader for limits in asked)
