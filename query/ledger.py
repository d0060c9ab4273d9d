"""The ledger as responders use it: storage plus SQL."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from ledger import Ledger as StoredLedger

from .eql import EqlResult, run_eql
from .errors import QueryError
from .sql import DEFAULT_MAX_ROWS, run_sql

__all__ = ["Ledger"]


class Ledger(StoredLedger):
    """A ledger that also answers read-only SQL and EQL over its views."""

    def sql(
        self,
        query: str,
        dialect: str = "duckdb",
        max_rows: int = DEFAULT_MAX_ROWS,
        as_of: int | None = None,
    ) -> pa.Table:
        """Answer a read-only query as an Arrow table; ``as_of`` pins it to a signed checkpoint."""
        return run_sql(self, query, dialect, max_rows, as_of=as_of).table

    def eql(self, query: str, size: int = 1000, as_of: int | None = None) -> EqlResult:
        """Answer an EQL query (event, sequence, sample or join) over the ``events`` view.

        Every match is found; the first ``size`` come back with their whole events.
        """
        return run_eql(self, query, size, as_of=as_of)

    def pl(self, query: str, **options: Any) -> pl.DataFrame:
        """Answer a read-only query as a polars DataFrame (same options as ``sql``)."""
        frame = pl.from_arrow(self.sql(query, **options))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def df(self, query: str, **options: Any) -> Any:
        """Answer a read-only query as a pandas DataFrame (needs pandas installed)."""
        table = self.sql(query, **options)
        try:
            return table.to_pandas()
        except ImportError:
            raise QueryError(
                "pandas is not installed: use .sql() or .pl(), or install pandas"
            ) from None
