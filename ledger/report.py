"""What verification reports: problems (located failures), writer summaries, the whole report."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IntegrityProblem", "VerifyReport", "WriterSummary"]


@dataclass(frozen=True)
class IntegrityProblem:
    """One integrity failure, located: writer log, seq (when known), file, and what is wrong."""

    writer_id: str
    code: str
    message: str
    file: str = ""
    seq: int | None = None

    def __str__(self) -> str:
        where = [f"writer {self.writer_id}"]
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.file:
            where.append(self.file)
        return f"{', '.join(where)}: {self.message} [{self.code}]"


@dataclass(frozen=True)
class WriterSummary:
    """What verification saw of one writer log."""

    writer_id: str
    events: int
    segments: int
    wal_events: int
    last_seq: int | None
    last_hash: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying a ledger."""

    problems: tuple[IntegrityProblem, ...]
    writers: tuple[WriterSummary, ...]
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def events(self) -> int:
        """How many events were verified."""
        return sum(w.events for w in self.writers)
