"""Queries over the ledger: the DuckDB catalog, the read-only SQL guard, and SQL execution."""

from .catalog import CatalogLimits, connect
from .errors import QueryError, QueryRefusedError, QuerySyntaxError, QueryTimeoutError
from .guard import check_read_only
from .ledger import Ledger
from .sql import SqlResult, run_sql

__all__ = [
    "CatalogLimits",
    "Ledger",
    "QueryError",
    "QueryRefusedError",
    "QuerySyntaxError",
    "QueryTimeoutError",
    "SqlResult",
    "check_read_only",
    "connect",
    "run_sql",
]
