"""The native-reader catalog EQL runs on: the Arrow catalog's views, and no other file reachable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from ledger_helpers import tool_event

from query import CatalogLimits, Ledger, connect

NATIVE = CatalogLimits(native_reader=True)


def event(i: int) -> dict[str, Any]:
    return tool_event(i, attrs={"n": i})


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """Six events flushed to a segment, then two more acknowledged but only in the WAL."""
    Ledger.init(tmp_path / "ledger")
    with Ledger.open(tmp_path / "ledger") as store:
        store.append([event(i) for i in range(6)])
    opened = Ledger.open(tmp_path / "ledger")
    opened.append([event(i) for i in range(6, 8)])
    return opened


def rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return connection.sql(sql).fetchall()


def test_native_views_show_what_the_arrow_views_show(ledger: Ledger) -> None:
    query = "SELECT event_id, seq, attrs->>'n' FROM events ORDER BY seq"
    native, arrow = connect(ledger, NATIVE), connect(ledger)
    try:
        assert rows(native, query) == rows(arrow, query)
        assert len(rows(native, query)) == 8
    finally:
        native.close()
        arrow.close()
    ledger.close()


def test_native_catalog_opens_only_the_segment_files(ledger: Ledger, tmp_path: Path) -> None:
    secret = tmp_path / "other.csv"
    secret.write_text("a\n1\n", encoding="utf-8")
    native = connect(ledger, NATIVE)
    try:
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            native.sql(f"SELECT * FROM read_csv('{secret}')").fetchall()
        with pytest.raises(duckdb.Error):
            native.execute("SET enable_external_access = true")
    finally:
        native.close()
    ledger.close()
