"""Run a compiled EQL plan on a DuckDB connection and shape its rows into results."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot.expressions as exp

from ledger import Ledger

from ..catalog import catalog
from ..errors import QueryError, QueryTimeoutError
from ..sql import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT, _Deadline
from .ast import Query
from .inputs import ledger_source, load_file, load_records
from .parser import parse
from .plan import Plan, compile_query
from .sequence import PATH, SequenceColumns
from .source import EventSource

__all__ = ["EqlResult", "SequenceMatch", "explain", "run_eql", "run_eql_file", "run_eql_records"]


@dataclass(frozen=True)
class SequenceMatch:
    """One sequence (or sample): its join keys, and per step the event or a missing placeholder."""

    join_keys: tuple[Any, ...]
    row_ids: tuple[Any, ...]
    events: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        """The Elasticsearch-shaped object: ``join_keys`` and ordered ``events``."""
        return {"join_keys": list(self.join_keys), "events": list(self.events)}


@dataclass(frozen=True)
class EqlResult:
    """What a query returned: events, sequences/samples, or counts; and whether rows were cut."""

    kind: str
    events: tuple[dict[str, Any], ...] = ()
    row_ids: tuple[Any, ...] = ()
    sequences: tuple[SequenceMatch, ...] = ()
    counts: tuple[dict[str, Any], ...] = ()
    truncated: bool = False
    seconds: float = 0.0
    sql: str = ""
    table: pa.Table | None = field(default=None, compare=False)

    def to_json(self) -> list[dict[str, Any]]:
        """The results as JSON-ready objects."""
        if self.kind in ("sequences", "samples"):
            return [s.to_json() for s in self.sequences]
        if self.kind == "counts":
            return list(self.counts)
        return list(self.events)


def _parse(query: str | Query) -> Query:
    return parse(query) if isinstance(query, str) else query


def explain(query: str | Query, source: EventSource, dialect: str = "duckdb") -> str:
    """The SQL a query compiles to, with its values inlined, in ``dialect``."""
    return compile_query(_parse(query), source).sql(dialect, inline=True, pretty=True)


def run_eql(
    ledger: Ledger,
    query: str | Query,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
    as_of: int | None = None,
) -> EqlResult:
    """Answer an EQL query over the ledger's ``events`` view (as of a checkpoint)."""
    parsed = _parse(query)
    with catalog(ledger, as_of=as_of) as connection:
        source = ledger_source(connection)
        return execute(connection, source, parsed, max_rows, timeout)


def run_eql_records(
    query: str | Query,
    records: Iterable[Mapping[str, Any]],
    *,
    category_field: str | None = "category",
    time_field: str = "time",
    tiebreaker: str | None = None,
    max_samples_per_key: int = 1,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> EqlResult:
    """Answer an EQL query over in-memory records; row ids are their positions in ``records``."""
    parsed = _parse(query)
    connection, source = load_records(records, category_field, time_field, tiebreaker)
    with connection:
        return execute(connection, source, parsed, max_rows, DEFAULT_TIMEOUT, max_samples_per_key)


def run_eql_file(
    query: str | Query,
    path: str | os.PathLike[str],
    *,
    category_field: str | None = "category",
    time_field: str = "time",
    tiebreaker: str | None = None,
    max_samples_per_key: int = 1,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
) -> EqlResult:
    """Answer an EQL query over a JSONL, JSON, Parquet or CSV file; row ids are row numbers."""
    parsed = _parse(query)
    connection, source = load_file(path, category_field, time_field, tiebreaker)
    with connection:
        return execute(connection, source, parsed, max_rows, timeout, max_samples_per_key)


def execute(
    connection: duckdb.DuckDBPyConnection,
    source: EventSource,
    query: Query,
    max_rows: int,
    timeout: float,
    max_samples_per_key: int = 1,
) -> EqlResult:
    """Compile ``query`` for ``source`` and run it on ``connection``."""
    started = time.perf_counter()
    plan = compile_query(query, source, max_samples_per_key)
    table = _fetch(connection, plan.sql("duckdb"), list(plan.parameters), timeout)
    truncated = table.num_rows > max_rows
    table = table.slice(0, max_rows)
    shaped = _shape(connection, source, plan, table, timeout)
    return EqlResult(
        kind=plan.kind,
        truncated=truncated,
        seconds=time.perf_counter() - started,
        sql=plan.sql("duckdb", inline=True, pretty=True),
        table=table,
        **shaped,
    )


def _fetch(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: list[object], timeout: float
) -> pa.Table:
    deadline = _Deadline(connection, timeout)
    try:
        return connection.sql(sql, params=parameters).to_arrow_table()
    except (duckdb.Error, pa.ArrowException) as err:
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s") from None
        raise QueryError(str(err).strip()) from None
    finally:
        deadline.stop()


def _visible(source: EventSource, row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in source.hidden and not k.startswith("__")}


def _shape(
    connection: duckdb.DuckDBPyConnection,
    source: EventSource,
    plan: Plan,
    table: pa.Table,
    timeout: float,
) -> dict[str, Any]:
    if plan.kind == "counts":
        return {"counts": tuple(table.to_pylist())}
    if plan.kind == "events":
        rows = table.to_pylist()
        return {
            "events": tuple(_visible(source, r) for r in rows),
            "row_ids": tuple(r[source.id_column] for r in rows),
        }
    assert plan.sequence is not None
    return {"sequences": _matches(connection, source, plan.sequence, table, timeout)}


def _matches(
    connection: duckdb.DuckDBPyConnection,
    source: EventSource,
    columns: SequenceColumns,
    table: pa.Table,
    timeout: float,
) -> tuple[SequenceMatch, ...]:
    paths = table.column(PATH).to_pylist()
    keys = [table.column(i).to_pylist() for i in range(columns.key_count)]
    wanted = sorted({i for path in paths for i in path}, key=str)
    events = _events_by_id(connection, source, wanted, timeout)
    matches = []
    for row, path in enumerate(paths):
        found = iter(path)
        ids = tuple(None if missing else next(found) for missing in columns.missing)
        shown = tuple({"missing": True} if i is None else events[i] for i in ids)
        matches.append(SequenceMatch(tuple(k[row] for k in keys), ids, shown))
    return tuple(matches)


def _events_by_id(
    connection: duckdb.DuckDBPyConnection, source: EventSource, ids: list[Any], timeout: float
) -> dict[Any, dict[str, Any]]:
    if not ids:
        return {}
    id_column = source.column(source.id_column)
    wanted = exp.Unnest(expressions=[exp.Parameter(this=exp.Literal.number(1))])
    select = (
        exp.select(exp.Star())
        .from_(exp.to_table(source.table))
        .where(exp.In(this=id_column, query=exp.select(wanted).subquery()))
    )
    table = _fetch(connection, select.sql("duckdb"), [ids], timeout)
    return {r[source.id_column]: _visible(source, r) for r in table.to_pylist()}
