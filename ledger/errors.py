"""The ledger's exceptions.

Exception tree (every class carries an HTTP-style ``status``)::

    LedgerError                  500  root of everything the ledger raises
    ├── ValidationError          400  a batch was rejected; ``problems`` names record and field
    ├── BatchTooLargeError       413  one append's batch is over the size a batch may hold
    ├── InputFormatError         400  an input file could not be read as events
    ├── LedgerNotFoundError      404  no ledger at the path
    ├── LedgerExistsError        409  ``init`` over an existing ledger
    ├── WriterBusyError          409  a writer log is held by another live appender
    ├── CorruptLedgerError       500  stored data is unreadable in a way that blocks appending
    ├── ProofError               400  a Merkle proof does not verify
    └── NoteError                400  a signed note or checkpoint is malformed or unsigned
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BatchTooLargeError",
    "CorruptLedgerError",
    "InputFormatError",
    "LedgerError",
    "LedgerExistsError",
    "LedgerNotFoundError",
    "NoteError",
    "Problem",
    "ProofError",
    "ValidationError",
    "WriterBusyError",
]


class LedgerError(Exception):
    """Root of every exception the ledger raises."""

    status = 500


@dataclass(frozen=True)
class Problem:
    """One reason a record was rejected: which record, which field, and why."""

    index: int
    field: str
    reason: str
    location: str = ""

    def __str__(self) -> str:
        where = self.location or f"record {self.index}"
        target = f"field '{self.field}'" if self.field else "record"
        text = f"{where}: {target}: {self.reason}"
        # Names and values quoted from bad input may hold lone surrogates: keep output encodable.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ValidationError(LedgerError):
    """A batch was rejected whole; nothing of it was stored."""

    status = 400
    max_listed = 20

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: p.index))
        shown = "; ".join(str(p) for p in self.problems[: self.max_listed])
        more = len(self.problems) - self.max_listed
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(f"batch rejected, nothing stored: {shown}{suffix}")


class BatchTooLargeError(LedgerError):
    """One append's batch is larger than a batch may be; nothing of it was stored."""

    status = 413


class InputFormatError(LedgerError):
    """An input file could not be read as events."""

    status = 400


class LedgerNotFoundError(LedgerError):
    """No ledger exists at the given path."""

    status = 404


class LedgerExistsError(LedgerError):
    """A ledger already exists where one was to be created."""

    status = 409


class WriterBusyError(LedgerError):
    """A writer log is held by another live appender."""

    status = 409


class CorruptLedgerError(LedgerError):
    """Stored data is damaged in a way that blocks appending."""


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof does not verify."""

    status = 400


class NoteError(LedgerError):
    """A signed note or checkpoint is malformed, unsigned, or signed by an unknown key."""

    status = 400
