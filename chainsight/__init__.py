"""Chainsight: a tamper-evident, hash-chained audit ledger for autonomous AI agents.

The library's public face: ``from chainsight import Ledger``; ``Ledger.open(path).append(events)``
returns receipts and ``.sql(query)`` answers read-only SQL as an Arrow table.
"""

from ledger import (
    LedgerError,
    Receipt,
    Receipts,
    ValidationError,
    VerifyReport,
)
from query import Ledger, QueryError

__all__ = [
    "Ledger",
    "LedgerError",
    "QueryError",
    "Receipt",
    "Receipts",
    "ValidationError",
    "VerifyReport",
]
