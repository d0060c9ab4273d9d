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
    timer = threading.Timer(timeout, connection.interrupt)
    timer.start()
    try:
        batch_size = min(max_rows + 1, 65536)
        reader = connection.sql(duck_sql).to_arrow_reader(batch_size=batch_size)
        batches: list[pa.RecordBatch] = []
        kept = 0
        truncated = False
        for batch in reader:
            if kept + batch.num_rows > max_rows:
                batches.append(batch.slice(0, max_rows - kept))
                truncated = True
                break
            batches.append(batch)
            kept += batch.num_rows
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise QueryTimeoutError(f"query interrupted after {timeout:g} s") from None
    except duckdb.Error as err:
        raise QueryError(str(err).strip()) from None
    finally:
        timer.cancel()
        connection.close()
    return SqlResult(table, truncated, time.perf_counter() - started, duck_sql)
