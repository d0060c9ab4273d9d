"""Running a responder's SQL: guard, transpile, execute with a deadline and a row limit."""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa
import sqlglot.expressions as exp
from sqlglot.errors import ErrorLevel, UnsupportedError
from sqlglot.optimizer.annotate_types import annotate_types

from ledger import Ledger

from .catalog import VIEW_NAMES, VIEW_TYPES, CatalogLimits, CatalogSession, catalog_session
from .errors import QueryError, QueryTimeoutError
from .guard import check_read_only

__all__ = ["SqlResult", "run_sql", "transpile"]

DEFAULT_MAX_ROWS = 100_000
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class SqlResult:
    """A query's rows (empty when they were streamed), whether the limit cut them, and timing."""

    table: pa.Table
    truncated: bool
    seconds: float
    sql: str
    rows: int = 0


class _Watchdog:
    """One thread keeping every query's deadline, rather than a thread started per query.

    Once a deadline passes it interrupts the connection, and again every few milliseconds until
    the query ends: one interrupt sent before DuckDB starts executing is lost.
    """

    _REPEAT = 0.005
    _changed: threading.Condition
    _due: dict[_Deadline, float]
    _thread: threading.Thread | None
    _wakes_at: float

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start over with no deadlines: a forked child has no thread, perhaps a held lock."""
        self._changed = threading.Condition()
        self._due = {}
        self._thread = None
        self._wakes_at = math.inf

    def watch(self, deadline: _Deadline, due: float) -> None:
        """Start watching ``deadline``, due at ``due`` on the monotonic clock."""
        with self._changed:
            self._due[deadline] = due
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._keep, name="query-deadlines")
                self._thread.daemon = True
                self._thread.start()
            # Waking the thread costs a context switch; a later deadline can wait its turn.
            if due < self._wakes_at:
                self._changed.notify()

    def forget(self, deadline: _Deadline) -> None:
        """Stop watching ``deadline``; no interrupt for it is sent once this returns."""
        with self._changed:
            self._due.pop(deadline, None)

    def _keep(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                waits = []
                for deadline, due in self._due.items():
                    if due > now:
                        waits.append(due - now)
                        continue
                    deadline.passed = True
                    waits.append(self._REPEAT)
                    try:
                        deadline.connection.interrupt()
                    except Exception:  # one connection's failure must not end every other watch
                        continue
                wait = min(waits, default=None)
                self._wakes_at = math.inf if wait is None else now + wait
                self._changed.wait(wait)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset)


class _Deadline:
    """Interrupts a connection at its deadline, and keeps interrupting until the query ends."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.connection = connection
        self.passed = False
        _WATCHDOG.watch(self, time.monotonic() + seconds)

    def stop(self) -> None:
        """The query ended: no interrupt reaches the connection after this returns."""
        _WATCHDOG.forget(self)


Consumer = Callable[[pa.Schema, Iterator[pa.RecordBatch]], None]


def _variant_text(node: exp.Expr) -> exp.Expr:
    """A JSON path cast to text means the value's text (Snowflake ``attrs:k::string``), not the
    JSON literal with its quotes: DuckDB's ``->>``."""
    if (
        isinstance(node, exp.Cast)
        and isinstance(node.this, exp.JSONExtract)
        and node.to.is_type(*exp.DataType.TEXT_TYPES)
    ):
        extract = node.this
        return exp.JSONExtractScalar(this=extract.this, expression=extract.expression)
    return node


# Guarding and transpiling a text is a pure function of the text and its dialect, and costs more
# than a small query; a process asking the same questions again pays it once. Refusals raise,
# so they are never cached: a refused text is judged afresh each time.
_TRANSPILED_SIZE = 1024
_CACHED_TEXT_LENGTH = 16_384  # longer texts are rarely asked twice; they would crowd the cache


def transpile(query: str, dialect: str = "duckdb") -> str:
    """The DuckDB text of one guarded read-only query written in ``dialect``."""
    if len(query) > _CACHED_TEXT_LENGTH:
        return _guard_and_transpile(query, dialect)
    return _cached_transpile(query, dialect)


def _guard_and_transpile(query: str, dialect: str) -> str:
    statement = check_read_only(query, dialect, tables=VIEW_NAMES)
    if dialect != "duckdb":
        # Typed, so e.g. postgres integer division stays integer division in DuckDB.
        statement = annotate_types(statement, schema=dict(VIEW_TYPES), dialect=dialect)
        statement = statement.transform(_variant_text)
    try:
        return statement.sql("duckdb", unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as err:
        raise QueryError(f"cannot translate from {dialect}: {err}") from None


_cached_transpile = functools.lru_cache(maxsize=_TRANSPILED_SIZE)(_guard_and_transpile)


def run_sql(
    ledger: Ledger,
    query: str,
    dialect: str = "duckdb",
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
    limits: CatalogLimits | None = None,
    as_of: int | None = None,
    consume: Consumer | None = None,
) -> SqlResult:
    """Answer a read-only query over the ledger (as of a checkpoint); refuse anything else.

    With ``consume``, the rows stream to it batch by batch instead of being collected.
    """
    duck_sql = transpile(query, dialect)
    # A responder's text never runs where a path is allowed: an allowed path could be written.
    limits = replace(limits or CatalogLimits(), native_reader=False)
    started = time.perf_counter()
    with catalog_session(ledger, limits, as_of) as session:
        return _run(session, duck_sql, max_rows, timeout, consume, started)


def _run(
    session: CatalogSession,
    duck_sql: str,
    max_rows: int,
    timeout: float,
    consume: Consumer | None,
    started: float,
) -> SqlResult:
    deadline = _Deadline(session.connection, timeout)
    limit = _Limit(max_rows)
    try:
        relation = session.relation(duck_sql)
        if relation is None:  # pragma: no cover - the guard admits only queries
            raise QueryError("the statement returned no rows")
        reader = relation.to_arrow_reader(batch_size=min(max_rows + 1, 65536))
        if consume is None:
            table = pa.Table.from_batches(list(limit.apply(reader)), schema=reader.schema)
        else:
            consume(reader.schema, limit.apply(reader))
            table = reader.schema.empty_table()
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s")
    except (duckdb.Error, OSError, pa.ArrowException) as err:
        # Errors met while batches stream back arrive as OSError or Arrow errors, not duckdb's.
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s") from None
        raise QueryError(str(err).strip()) from None
    finally:
        deadline.stop()
    elapsed = time.perf_counter() - started
    return SqlResult(table, limit.truncated, elapsed, duck_sql, limit.rows)


class _Limit:
    """Passes batches through until ``max_rows`` rows, noting whether more were cut off."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self.truncated = False

    def apply(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if self.rows + batch.num_rows > self.max_rows:
                kept = batch.slice(0, self.max_rows - self.rows)
                self.rows += kept.num_rows
                self.truncated = True
                yield kept
                return
            self.rows += batch.num_rows
            yield batch
