"""Running a responder's SQL: guard, transpile, execute with a deadline and a row limit."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ledger import Ledger

from .catalog import CatalogLimits, connect
from .errors import QueryError, QueryTimeoutError
from .guard import check_read_only

__all__ = ["SqlResult", "run_sql"]

DEFAULT_MAX_ROWS = 100_000
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class SqlResult:
    """A query's rows, whether the row limit cut them, and how long it took."""

    table: pa.Table
    truncated: bool
    seconds: float
    sql: str


class _Deadline:
    """Interrupts a connection at its deadline, and keeps interrupting until the query ends.

    One interrupt sent before DuckDB starts executing is lost, so the watchdog repeats it.
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._connection = connection
        self._seconds = seconds
        self._done = threading.Event()
        self.passed = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if self._done.wait(self._seconds):
            return
        self.passed = True
        while not self._done.wait(0.005):
            self._connection.interrupt()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_sql(
    ledger: Ledger,
    query: str,
    dialect: str = "duckdb",
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
    limits: CatalogLimits | None = None,
    as_of: int | None = None,
) -> SqlResult:
    """Answer a read-only query over the ledger (as of a checkpoint); refuse anything else."""
    statement = check_read_only(query, dialect)
    duck_sql = statement.sql("duckdb")
    started = time.perf_counter()
    connection = connect(ledger, limits, as_of)
    deadline = _Deadline(connection, timeout)
    try:
        table, truncated = _fetch(connection, duck_sql, max_rows)
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s")
    except (duckdb.Error, OSError, pa.ArrowException) as err:
        # Errors met while batches stream back arrive as OSError or Arrow errors, not duckdb's.
        if deadline.passed:
            raise QueryTimeoutError(f"query interrupted after {timeout:g} s") from None
        raise QueryError(str(err).strip()) from None
    finally:
        deadline.stop()
        connection.close()
    return SqlResult(table, truncated, time.perf_counter() - started, duck_sql)


def _fetch(
    connection: duckdb.DuckDBPyConnection, duck_sql: str, max_rows: int
) -> tuple[pa.Table, bool]:
    """The query's rows up to ``max_rows``, and whether more were cut off."""
    relation = connection.sql(duck_sql)
    if relation is None:  # pragma: no cover - the guard admits only queries
        raise QueryError("the statement returned no rows")
    reader = relation.to_arrow_reader(batch_size=min(max_rows + 1, 65536))
    batches: list[pa.RecordBatch] = []
    kept = 0
    for batch in reader:
        if kept + batch.num_rows > max_rows:
            batches.append(batch.slice(0, max_rows - kept))
            return pa.Table.from_batches(batches, schema=reader.schema), True
        batches.append(batch)
        kept += batch.num_rows
    return pa.Table.from_batches(batches, schema=reader.schema), False
