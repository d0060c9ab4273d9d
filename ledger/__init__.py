"""Storage and integrity: events, canonical bytes, hash chains, WAL and Parquet segments."""

from .canonical import canonical_event_bytes, canonical_json, reference_event_bytes
from .errors import (
    CorruptLedgerError,
    InputFormatError,
    LedgerError,
    LedgerExistsError,
    LedgerNotFoundError,
    NoteError,
    Problem,
    ProofError,
    ValidationError,
    WriterBusyError,
)
from .events import validate_batch, validate_event
from .ledger import Ledger, LedgerInfo, default_ledger_path
from .receipts import Receipt, Receipts
from .report import IntegrityProblem
from .verify import VerifyReport, WriterSummary

__all__ = [
    "CorruptLedgerError",
    "InputFormatError",
    "IntegrityProblem",
    "Ledger",
    "LedgerError",
    "LedgerExistsError",
    "LedgerInfo",
    "LedgerNotFoundError",
    "NoteError",
    "Problem",
    "ProofError",
    "Receipt",
    "Receipts",
    "ValidationError",
    "VerifyReport",
    "WriterBusyError",
    "WriterSummary",
    "canonical_event_bytes",
    "canonical_json",
    "default_ledger_path",
    "reference_event_bytes",
    "validate_batch",
    "validate_event",
]
