"""Merging another ledger's writer logs into this one: a grow-only union, order-independent.

For each writer log of the source: a log this ledger lacks is copied whole; a log both hold is
compared at the last seq both hold (the chained hash there commits to everything before it) and
the source's missing tail is appended. Two different events at the same (writer, seq) are an
equivocation: that log is refused, and the evidence is recorded for ``verify`` to report.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from .durable import fsync_dir, fsync_file, write_atomically
from .errors import LedgerError
from .layout import WriterLayout, segments_in_force, try_lock, wal_tail
from .report import IntegrityProblem
from .segments import SegmentFile, hash_at, read_segment, write_segment
from .writer import WriterLog

__all__ = ["Equivocation", "SyncReport", "recorded_equivocations", "sync_writer_logs"]

EQUIVOCATIONS = "equivocations.jsonl"


@dataclass(frozen=True)
class Equivocation:
    """Two different events claimed for the same (writer, seq)."""

    writer_id: str
    seq: int
    ours: str
    theirs: str
    source: str


@dataclass(frozen=True)
class SyncReport:
    """What a sync changed, and what it refused."""

    writers_added: tuple[str, ...]
    writers_extended: tuple[str, ...]
    events_added: int
    equivocations: tuple[Equivocation, ...]
    skipped: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No equivocation was met and nothing was skipped."""
        return not self.equivocations and not self.skipped


@dataclass(frozen=True)
class _Log:
    """A writer log's durable events, as tables in seq order (segments, then the WAL tail)."""

    layout: WriterLayout
    segments: list[SegmentFile]
    tail: pa.Table | None

    @property
    def end(self) -> int:
        """One past the last seq held."""
        if self.tail is not None and self.tail.num_rows:
            return int(self.tail.column("seq")[-1].as_py()) + 1
        return self.segments[-1].last_seq + 1 if self.segments else 0

    def hash_at(self, seq: int) -> bytes:
        stored = hash_at(self.segments, seq)  # one row group, not the whole segment
        if stored is not None:
            return stored
        if self.tail is not None and self.tail.num_rows:
            first = int(self.tail.column("seq")[0].as_py())
            if 0 <= seq - first < self.tail.num_rows:
                return bytes(self.tail.column("hash")[seq - first].as_py())
        raise LedgerError(f"writer log {self.layout.writer_id} has no seq {seq}")

    def rows(self, start: int, stop: int) -> list[pa.Table]:
        return list(self._tables_covering(start, stop))

    def _tables_covering(self, start: int, stop: int) -> list[pa.Table]:
        found = []
        for segment in self.segments:
            if segment.last_seq >= start and segment.first_seq < stop:
                table = read_segment(segment)
                found.append(_slice(table, segment.first_seq, start, stop))
        if self.tail is not None and self.tail.num_rows:
            first = int(self.tail.column("seq")[0].as_py())
            found.append(_slice(self.tail, first, start, stop))
        return [t for t in found if t.num_rows]


def _slice(table: pa.Table, first_seq: int, start: int, stop: int) -> pa.Table:
    begin = max(0, start - first_seq)
    end = min(table.num_rows, stop - first_seq)
    return table.slice(begin, max(0, end - begin))


def _read_log(layout: WriterLayout) -> _Log:
    return _Log(layout, segments_in_force(layout)[0], wal_tail(layout))


def sync_writer_logs(
    source_layouts: Sequence[WriterLayout], writers_dir: Path, evidence_dir: Path, source: str
) -> SyncReport:
    """Merge the source's writer logs into ``writers_dir``; see the module docstring."""
    added: list[str] = []
    extended: list[str] = []
    events = 0
    equivocations: list[Equivocation] = []
    skipped: list[str] = []
    for source_layout in source_layouts:
        theirs = _read_log(source_layout)
        target = WriterLayout(writers_dir / source_layout.writer_id)
        if not target.directory.exists():
            events += _copy_log(theirs, writers_dir)
            added.append(source_layout.writer_id)
            continue
        fd = try_lock(target.lock)
        if fd is None:
            skipped.append(f"writer log {target.writer_id} has a live appender here; sync it later")
            continue
        try:
            if any(target.wal_files()):
                WriterLog(target, os.dup(fd)).close()  # settle its WAL into segments first
            outcome = _extend_log(_read_log(target), theirs, source)
        finally:
            os.close(fd)
        if isinstance(outcome, Equivocation):
            equivocations.append(outcome)
            _record(evidence_dir, outcome)
        elif outcome:
            events += outcome
            extended.append(target.writer_id)
    return SyncReport(tuple(added), tuple(extended), events, tuple(equivocations), tuple(skipped))


def _copy_log(theirs: _Log, writers_dir: Path) -> int:
    writer_id = theirs.layout.writer_id
    staging = writers_dir / f".sync-{writer_id}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "segments").mkdir(parents=True)
    (staging / "wal").mkdir()
    meta = theirs.layout.meta
    if meta.exists():
        shutil.copyfile(meta, staging / "writer.json")
    else:
        (staging / "writer.json").write_bytes(orjson.dumps({"writer_id": writer_id}))
    for segment in theirs.segments:
        copy = staging / "segments" / segment.path.name
        shutil.copyfile(segment.path, copy)
        fsync_file(copy)
    if theirs.tail is not None and theirs.tail.num_rows:
        write_segment(staging / "segments", theirs.tail, int(theirs.tail.column("seq")[0].as_py()))
    _write_head(staging, theirs)
    fsync_dir(staging / "segments")
    fsync_dir(staging)
    os.replace(staging, writers_dir / writer_id)
    fsync_dir(writers_dir)
    return theirs.end


def _extend_log(ours: _Log, theirs: _Log, source: str) -> Equivocation | int:
    common = min(ours.end, theirs.end)
    if common and ours.hash_at(common - 1) != theirs.hash_at(common - 1):
        seq = _first_difference(ours, theirs, common)
        return Equivocation(
            ours.layout.writer_id,
            seq,
            ours.hash_at(seq).hex(),
            theirs.hash_at(seq).hex(),
            source,
        )
    if theirs.end <= ours.end:
        return 0
    for table in theirs.rows(ours.end, theirs.end):
        write_segment(ours.layout.segments, table, int(table.column("seq")[0].as_py()))
    _write_head(ours.layout.directory, theirs)
    return theirs.end - ours.end


def _first_difference(ours: _Log, theirs: _Log, common: int) -> int:
    """The first seq below ``common`` where the two logs' chained hashes differ."""
    low, high = 0, common - 1  # the hashes differ at high; find the first such seq
    while low < high:
        middle = (low + high) // 2
        if ours.hash_at(middle) == theirs.hash_at(middle):
            low = middle + 1
        else:
            high = middle
    return low


def _write_head(directory: Path, log: _Log) -> None:
    if not log.end:
        return
    head = {"seq": log.end - 1, "hash": log.hash_at(log.end - 1).hex()}
    write_atomically(directory / "head.json", orjson.dumps(head))


def _record(evidence_dir: Path, equivocation: Equivocation) -> None:
    evidence_dir.mkdir(parents=True, exist_ok=True)
    if any(_same(equivocation, known) for known in _read_evidence(evidence_dir)):
        return  # met again on a later sync: the evidence is already kept
    entry = {**equivocation.__dict__, "recorded": time.time()}
    with open(evidence_dir / EQUIVOCATIONS, "ab") as out:
        out.write(orjson.dumps(entry) + b"\n")
        out.flush()
        os.fsync(out.fileno())


def _read_evidence(evidence_dir: Path) -> list[dict[str, Any]]:
    path = evidence_dir / EQUIVOCATIONS
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _same(equivocation: Equivocation, entry: dict[str, Any]) -> bool:
    fields = ("writer_id", "seq", "ours", "theirs")
    return all(getattr(equivocation, name) == entry.get(name) for name in fields)


def recorded_equivocations(evidence_dir: Path) -> list[IntegrityProblem]:
    """The equivocations sync has refused, as problems for ``verify`` to report."""
    problems = []
    for entry in _read_evidence(evidence_dir):
        problems.append(
            IntegrityProblem(
                entry["writer_id"],
                "equivocation",
                f"{entry['source']} holds a different event at this seq "
                f"(ours {entry['ours'][:16]}…, theirs {entry['theirs'][:16]}…); it was not merged",
                EQUIVOCATIONS,
                entry["seq"],
            )
        )
    return problems
