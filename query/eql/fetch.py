"""Read whole events back by locator, touching only the rows a result shows.

A plan finds matches from the few columns its conditions need; the full events are read only for
the results returned. For the ledger that means the row groups holding those rows, found from the
writer log's segment ranges; for other inputs, the rows of the in-memory table.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot.expressions as exp

from ledger import Ledger
from ledger.layout import segments_in_force
from ledger.segments import SegmentFile

from .source import EventSource

__all__ = ["Fetcher", "ledger_fetcher", "table_fetcher"]

Fetcher = Callable[[Sequence[object]], dict[Hashable, dict[str, Any]]]


def ledger_fetcher(ledger: Ledger) -> Fetcher:
    """Fetch ledger events by (writer_id, seq) from their segments or the unflushed WAL tail.

    DuckDB's own Parquet reader runs on a private connection: a seq filter skips the row groups
    (and pages) that hold none of the wanted rows, so a few events cost milliseconds, not the
    decoding of whole row groups. The statement is ours; no query text reaches it.
    """

    def fetch(locators: Sequence[object]) -> dict[Hashable, dict[str, Any]]:
        wanted: dict[str, set[int]] = defaultdict(set)
        for locator in locators:
            assert isinstance(locator, dict)
            wanted[locator["writer_id"]].add(locator["seq"])
        found: dict[Hashable, dict[str, Any]] = {}
        layouts = {layout.writer_id: layout for layout in ledger.writer_layouts()}
        with _reader().cursor() as connection:
            for writer_id, seqs in wanted.items():
                segments = segments_in_force(layouts[writer_id])[0] if writer_id in layouts else []
                files = _files_holding(segments, seqs)
                if files:
                    found.update(_read_stored(connection, files, writer_id, seqs))
        missing = {(w, s) for w, seqs in wanted.items() for s in seqs} - found.keys()
        if missing:
            found.update(_unflushed(ledger, missing))
        return found

    return fetch


_READER: list[duckdb.DuckDBPyConnection] = []
_READER_LOCK = threading.Lock()


def _reader() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for reading rows back; each fetch takes a cursor of it.

    Opening a database costs tens of milliseconds, more than reading a few rows.
    """
    with _READER_LOCK:
        if not _READER:
            _READER.append(duckdb.connect(config={"threads": 2}))
        return _READER[0]


def _files_holding(segments: list[SegmentFile], seqs: set[int]) -> list[str]:
    ordered = sorted(segments, key=lambda s: s.first_seq)
    firsts = [s.first_seq for s in ordered]
    files: set[str] = set()
    for seq in seqs:
        index = bisect.bisect_right(firsts, seq) - 1
        if index >= 0 and seq <= ordered[index].last_seq:
            files.add(str(ordered[index].path))
    return sorted(files)


def _read_stored(
    connection: duckdb.DuckDBPyConnection, files: list[str], writer_id: str, seqs: set[int]
) -> dict[Hashable, dict[str, Any]]:
    def parameter(number: int) -> exp.Expr:
        return exp.Parameter(this=exp.Literal.number(number))

    wanted = exp.In(
        this=exp.column("seq"),
        query=exp.select(exp.Unnest(expressions=[parameter(2)])).subquery(),
    )
    select = exp.select(exp.Star()).from_(exp.func("READ_PARQUET", parameter(1))).where(wanted)
    table = connection.sql(select.sql("duckdb"), params=[files, sorted(seqs)]).to_arrow_table()
    return {(writer_id, row["seq"]): row for row in table.to_pylist()}


def _unflushed(ledger: Ledger, missing: set[tuple[str, int]]) -> dict[Hashable, dict[str, Any]]:
    table = ledger.unflushed_table()
    if table.num_rows == 0:
        return {}
    seqs = pa.array(sorted({s for _, s in missing}), pa.int64())
    candidates = table.filter(pc.is_in(table.column("seq"), value_set=seqs))
    return {
        (row["writer_id"], row["seq"]): row
        for row in candidates.to_pylist()
        if (row["writer_id"], row["seq"]) in missing
    }


def table_fetcher(connection: duckdb.DuckDBPyConnection, source: EventSource) -> Fetcher:
    """Fetch rows of a DuckDB table by its single locator column."""
    (column,) = source.order_columns

    def fetch(locators: Sequence[object]) -> dict[Hashable, dict[str, Any]]:
        if not locators:
            return {}
        contains = exp.ArrayContains(
            this=exp.Parameter(this=exp.Literal.number(1)),
            expression=source.column(column),
        )
        select = exp.select(exp.Star()).from_(exp.to_table(source.table)).where(contains)
        rows = connection.sql(select.sql("duckdb"), params=[list(locators)]).to_arrow_table()
        return {row[column]: row for row in rows.to_pylist()}

    return fetch
