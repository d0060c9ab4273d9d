"""Run a compiled EQL plan on a DuckDB connection and shape its rows into results."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from ledger import Ledger

from ..catalog import VIEW_NAMES, CatalogLimits, catalog
from ..errors import QueryError, QueryTimeoutError
from ..guard import check_read_only
from ..sql import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT, _Deadline
from .ast import Query
from .fetch import Fetcher, ledger_fetcher, table_fetcher
from .inputs import ledger_source, load_file, load_records
from .parser import parse
from .plan import COUNT_KEY, LOCATOR, Plan, compile_query
from .sequence import PATH, SequenceColumns
from .source import EventSource

__all__ = [
    "DEFAULT_SIZE",
    "NATIVE",
    "EqlResult",
    "SequenceMatch",
    "Target",
    "execute",
    "explain",
    "over_file",
    "over_ledger",
    "run_eql",
    "run_eql_file",
    "run_eql_records",
]


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
    """What a query returned: events, sequences/samples, or counts.

    ``total`` is how many results the query has; the first ``size`` are returned with their whole
    events, and ``truncated`` says whether some were left out.
    """

    kind: str
    events: tuple[dict[str, Any], ...] = ()
    row_ids: tuple[Any, ...] = ()
    sequences: tuple[SequenceMatch, ...] = ()
    counts: tuple[dict[str, Any], ...] = ()
    total: int = 0
    truncated: bool = False
    seconds: float = 0.0
    plan: Plan | None = field(default=None, compare=False, repr=False)

    @property
    def sql(self) -> str:
        """The DuckDB SQL the query ran, with its values inlined, for display."""
        return "" if self.plan is None else self.plan.sql("duckdb", inline=True, pretty=True)

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


DEFAULT_SIZE = 10
# EQL runs only SQL it generated, so it may read the segments with DuckDB's own reader.
NATIVE = CatalogLimits(native_reader=True)


def run_eql(
    ledger: Ledger,
    query: str | Query,
    size: int = 1000,
    timeout: float = DEFAULT_TIMEOUT,
    as_of: int | None = None,
) -> EqlResult:
    """Answer an EQL query over the ledger's ``events`` view (as of a checkpoint)."""
    parsed = _parse(query)
    with over_ledger(ledger, as_of) as target:
        return execute(target, parsed, size, timeout)


def run_eql_records(
    query: str | Query,
    records: Iterable[Mapping[str, Any]],
    *,
    category_field: str | None = "category",
    time_field: str = "time",
    tiebreaker: str | None = None,
    max_samples_per_key: int = 1,
    size: int = DEFAULT_MAX_ROWS,
) -> EqlResult:
    """Answer an EQL query over in-memory records; row ids are their positions in ``records``."""
    parsed = _parse(query)  # a query that does not parse loads nothing
    loaded = load_records(records, category_field, time_field, tiebreaker)
    with _over_loaded(loaded) as target:
        return execute(target, parsed, size, DEFAULT_TIMEOUT, max_samples_per_key)


def run_eql_file(
    query: str | Query,
    path: str | os.PathLike[str],
    *,
    category_field: str | None = "category",
    time_field: str = "time",
    tiebreaker: str | None = None,
    max_samples_per_key: int = 1,
    size: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
) -> EqlResult:
    """Answer an EQL query over a JSONL, JSON, Parquet or CSV file; row ids are row numbers."""
    parsed = _parse(query)
    with over_file(path, category_field, time_field, tiebreaker) as target:
        return execute(target, parsed, size, timeout, max_samples_per_key)


@dataclass(frozen=True)
class Target:
    """What a query runs over: a connection, the source on it, and how whole events come back."""

    connection: duckdb.DuckDBPyConnection
    source: EventSource
    fetch: Fetcher


@contextmanager
def over_ledger(ledger: Ledger, as_of: int | None = None) -> Iterator[Target]:
    """The ledger's ``events`` view (as of a checkpoint), read by DuckDB's own reader."""
    with catalog(ledger, NATIVE, as_of) as connection:
        yield Target(connection, ledger_source(connection), ledger_fetcher(ledger))


@contextmanager
def over_file(
    path: str | os.PathLike[str],
    category_field: str | None,
    time_field: str,
    tiebreaker: str | None,
) -> Iterator[Target]:
    """A JSONL, JSON, Parquet or CSV file, loaded into a connection of its own."""
    with _over_loaded(load_file(path, category_field, time_field, tiebreaker)) as target:
        yield target


@contextmanager
def _over_loaded(loaded: tuple[duckdb.DuckDBPyConnection, EventSource]) -> Iterator[Target]:
    connection, source = loaded
    with connection:
        yield Target(connection, source, table_fetcher(connection, source))


def execute(
    target: Target, query: Query, size: int, timeout: float, max_samples_per_key: int = 1
) -> EqlResult:
    """Find every match of ``query``; read whole events for the first ``size``."""
    connection, source, fetch = target.connection, target.source, target.fetch
    started = time.perf_counter()
    plan, sql = _compiled(query, source, max_samples_per_key)
    table = _fetch(connection, sql, list(plan.parameters), timeout)
    total = table.num_rows
    shown = table.slice(0, size)
    if plan.kind == "counts":
        shaped: dict[str, Any] = {"counts": tuple(_counts(shown))}
    elif plan.kind == "events":
        shaped = _events(source, shown, fetch)
    else:
        assert plan.sequence is not None
        shaped = {"sequences": _matches(source, plan.sequence, shown, fetch)}
    return EqlResult(
        kind=plan.kind,
        total=total,
        truncated=total > size,
        seconds=time.perf_counter() - started,
        plan=plan,
        **shaped,
    )


_COMPILED: OrderedDict[Hashable, tuple[Plan, str]] = OrderedDict()
_COMPILED_SIZE = 256
_COMPILED_LOCK = threading.Lock()


def _compiled(query: Query, source: EventSource, max_samples_per_key: int) -> tuple[Plan, str]:
    """The plan of a query and its DuckDB text, checked by the read-only guard.

    Defence in depth: the compiled statement passes the responders' guard too, so not even a
    compiler bug could run anything but a query (the ledger connection may open its segment
    files). A query asked again over the same columns is compiled and judged once.
    """
    key = (
        query,
        source.table,
        tuple(source.columns.items()),
        source.category_field,
        source.time_column,
        source.tiebreaker,
        source.order_columns,
        max_samples_per_key,
    )
    with _COMPILED_LOCK:
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key]
    plan = compile_query(query, source, max_samples_per_key)
    sql = plan.sql("duckdb")
    check_read_only(sql, "duckdb", tables=(*VIEW_NAMES, source.table))
    with _COMPILED_LOCK:
        _COMPILED[key] = (plan, sql)
        if len(_COMPILED) > _COMPILED_SIZE:
            _COMPILED.popitem(last=False)
    return plan, sql


def _fetch(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: list[object], timeout: float
) -> pa.Table:
    deadline = _Deadline(connection, timeout)
    try:
        # execute() binds the statement once; sql() binds it to make a relation and again to
        # run it. The copy it warns about is of a small, narrow result.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return connection.execute(sql, parameters).to_arrow_table()
    except (duckdb.Error, pa.ArrowException) as err:
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s") from None
        raise QueryError(str(err).strip()) from None
    finally:
        deadline.stop()


def _counts(table: pa.Table) -> list[dict[str, Any]]:
    """Count rows; the values of a several-field key gathered into one ``key`` list."""
    rows: list[dict[str, Any]] = table.to_pylist()
    parts = [name for name in table.column_names if name.startswith(COUNT_KEY)]
    if not parts:
        return rows
    return [
        {"key": [row[p] for p in parts], "count": row["count"], "percent": row["percent"]}
        for row in rows
    ]


def _visible(source: EventSource, row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in source.hidden}


def _events(source: EventSource, table: pa.Table, fetch: Fetcher) -> dict[str, Any]:
    locators = table.column(LOCATOR).to_pylist()
    found = fetch(locators)
    rows = [found[source.locator_key(locator)] for locator in locators]
    events = [_visible(source, row) for row in rows]
    if "count" in table.column_names:
        for event, count in zip(events, table.column("count").to_pylist(), strict=True):
            event["count"] = count
    return {"events": tuple(events), "row_ids": tuple(r[source.id_column] for r in rows)}


def _matches(
    source: EventSource, columns: SequenceColumns, table: pa.Table, fetch: Fetcher
) -> tuple[SequenceMatch, ...]:
    paths = table.column(PATH).to_pylist()
    keys = [table.column(i).to_pylist() for i in range(columns.key_count)]
    found = fetch([locator for path in paths for locator in path])
    matches = []
    for row, path in enumerate(paths):
        located = iter(found[source.locator_key(locator)] for locator in path)
        rows = [None if missing else next(located) for missing in columns.missing]
        ids = tuple(None if r is None else r[source.id_column] for r in rows)
        shown = tuple({"missing": True} if r is None else _visible(source, r) for r in rows)
        matches.append(SequenceMatch(tuple(k[row] for k in keys), ids, shown))
    return tuple(matches)
