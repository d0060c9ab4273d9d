"""Signed checkpoints: per writer log a C2SP tlog-checkpoint, per ledger a numbered, chained set.

A ledger checkpoint is a signed note whose text is::

    chainsight/<ledger_id>
    <number>
    <base64 SHA-256 of the previous ledger checkpoint note, or of nothing for number 1>
    <time, RFC 3339>
    <writer_id> <tree size> <base64 root>        (one line per writer log, sorted)

and each writer log's state at that moment is also published as a standard tlog checkpoint with
origin ``chainsight/<ledger_id>/<writer_id>``, so standard signed-note tooling can verify it.
Files: ``checkpoints/<number, 12 digits>/ledger.note`` and ``.../<writer_id>.note``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .durable import fsync_dir, fsync_file
from .errors import LedgerError, NoteError
from .note import Checkpoint, Signer, Verifier, open_checkpoint, open_note, sign_note

__all__ = [
    "CheckpointStore",
    "LedgerCheckpoint",
    "WriterState",
    "ledger_origin",
    "parse_ledger_text",
    "writer_origin",
]

_NUMBER_DIR = re.compile(r"\d{12}\Z")
_GENESIS = hashlib.sha256(b"").digest()


def ledger_origin(ledger_id: str) -> str:
    """The origin line of a ledger's checkpoints."""
    return f"chainsight/{ledger_id}"


def writer_origin(ledger_id: str, writer_id: str) -> str:
    """The tlog-checkpoint origin of a writer log (DESIGN.md §3)."""
    return f"chainsight/{ledger_id}/{writer_id}"


@dataclass(frozen=True)
class WriterState:
    """One writer log's tree size and root at a checkpoint."""

    writer_id: str
    tree_size: int
    root: bytes


@dataclass(frozen=True)
class LedgerCheckpoint:
    """A parsed, signature-checked ledger checkpoint."""

    ledger_id: str
    number: int
    previous: bytes
    time: str
    writers: tuple[WriterState, ...]
    note: str

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed note: what the next checkpoint links to."""
        return hashlib.sha256(self.note.encode("utf-8")).digest()

    def writer(self, writer_id: str) -> WriterState | None:
        """This checkpoint's state of a writer log, if it covered it."""
        return next((w for w in self.writers if w.writer_id == writer_id), None)

    def to_text(self) -> str:
        """The note text (unsigned)."""
        return _ledger_text(self.ledger_id, self.number, self.previous, self.time, self.writers)


def _ledger_text(
    ledger_id: str, number: int, previous: bytes, time: str, writers: Iterable[WriterState]
) -> str:
    lines = [ledger_origin(ledger_id), str(number), _b64(previous), time]
    lines += [f"{w.writer_id} {w.tree_size} {_b64(w.root)}" for w in writers]
    return "".join(line + "\n" for line in lines)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_ledger_text(text: str, note: str) -> LedgerCheckpoint:
    """Parse a ledger checkpoint's note text (the signature is checked by the caller)."""
    lines = text[:-1].split("\n") if text.endswith("\n") else []
    if len(lines) < 4 or not lines[0].startswith("chainsight/") or not lines[1].isdigit():
        raise NoteError("malformed ledger checkpoint")
    writers = []
    for line in lines[4:]:
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            raise NoteError(f"malformed ledger checkpoint line {line!r}")
        writers.append(WriterState(parts[0], int(parts[1]), base64.b64decode(parts[2])))
    ledger_id = lines[0].removeprefix("chainsight/")
    previous = base64.b64decode(lines[2])
    return LedgerCheckpoint(ledger_id, int(lines[1]), previous, lines[3], tuple(writers), note)


class CheckpointStore:
    """A ledger's ``checkpoints/`` directory."""

    def __init__(self, root: Path, ledger_id: str) -> None:
        self.directory = root / "checkpoints"
        self.ledger_id = ledger_id

    def numbers(self) -> list[int]:
        """The numbers of the stored ledger checkpoints, ascending."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if _NUMBER_DIR.match(p.name))

    def path(self, number: int) -> Path:
        """The directory of a ledger checkpoint."""
        return self.directory / f"{number:012d}"

    def note_text(self, number: int, writer_id: str | None = None) -> str:
        """The signed note of a ledger checkpoint, or of one of its writer checkpoints."""
        name = f"{writer_id}.note" if writer_id else "ledger.note"
        try:
            return (self.path(number) / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            what = f"writer {writer_id} in checkpoint {number}" if writer_id else "checkpoint"
            raise LedgerError(f"no {what} {'' if writer_id else number}".strip()) from None

    def load(self, number: int, verifiers: Iterable[Verifier]) -> LedgerCheckpoint:
        """Open a ledger checkpoint, checking its signature."""
        note = self.note_text(number)
        return parse_ledger_text(open_note(note, verifiers).text, note)

    def latest(self, verifiers: Iterable[Verifier]) -> LedgerCheckpoint | None:
        """The newest ledger checkpoint, if any."""
        numbers = self.numbers()
        return self.load(numbers[-1], verifiers) if numbers else None

    def writer_checkpoint(
        self, number: int, writer_id: str, verifiers: Iterable[Verifier]
    ) -> Checkpoint:
        """Open one writer log's tlog checkpoint at a ledger checkpoint."""
        return open_checkpoint(
            self.note_text(number, writer_id),
            verifiers,
            origin=writer_origin(self.ledger_id, writer_id),
        )

    def write(
        self,
        signer: Signer,
        states: Iterable[WriterState],
        time: str,
        previous: LedgerCheckpoint | None,
    ) -> LedgerCheckpoint:
        """Sign and store the next ledger checkpoint (and its writer checkpoints) atomically."""
        number = previous.number + 1 if previous else 1
        link = previous.digest if previous else _GENESIS
        writers = tuple(sorted(states, key=lambda w: w.writer_id))
        note = sign_note(_ledger_text(self.ledger_id, number, link, time, writers), signer)
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".new-{number:012d}-{os.getpid()}"
        staging.mkdir()
        for state in writers:
            origin = writer_origin(self.ledger_id, state.writer_id)
            tlog = Checkpoint(origin, state.tree_size, state.root).sign(signer)
            (staging / f"{state.writer_id}.note").write_text(tlog, encoding="utf-8")
        (staging / "ledger.note").write_text(note, encoding="utf-8")
        for path in staging.iterdir():
            fsync_file(path)
        fsync_dir(staging)
        final = self.path(number)
        try:
            os.rename(staging, final)  # fails if another process took this number first
        except OSError:
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
            raise LedgerError(
                f"checkpoint {number} was written by another process; retry"
            ) from None
        fsync_dir(self.directory)
        return LedgerCheckpoint(self.ledger_id, number, link, time, writers, note)


GENESIS_LINK = _GENESIS
