"""The ledger as responders use it: storage plus SQL."""

from __future__ import annotations

import pyarrow as pa

from ledger import Ledger as StoredLedger

from .sql import DEFAULT_MAX_ROWS, run_sql

__all__ = ["Ledger"]


class Ledger(StoredLedger):
    """A ledger that also answers read-only SQL over its views."""

    def sql(
        self,
        query: str,
        dialect: str = "duckdb",
        max_rows: int = DEFAULT_MAX_ROWS,
        as_of: int | None = None,
    ) -> pa.Table:
        """Answer a read-only query as an Arrow table; ``as_of`` pins it to a signed checkpoint."""
        return run_sql(self, query, dialect, max_rows, as_of=as_of).table
