"""A writer log's files, its appender lock, and reading its WAL without the lock."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from .hashing import ZERO_HASH, chain_hash, leaf_hash
from .segments import SegmentFile, hash_at, list_segments, rows_to_table
from .wal import WalFrame, WalScan, scan_wal

__all__ = [
    "WriterLayout",
    "attrs_text",
    "hash_before",
    "new_writer_id",
    "read_head",
    "segments_in_force",
    "table_from_lines",
    "try_lock",
    "unflushed_frames",
    "wal_tail",
]

_WAL_NAME = re.compile(r"(\d{20})\.log\Z")


@dataclass(frozen=True)
class WriterLayout:
    """Where a writer log's files live."""

    directory: Path

    @property
    def writer_id(self) -> str:
        """The writer log's id (its directory name)."""
        return self.directory.name

    @property
    def meta(self) -> Path:
        """writer.json: the writer id and the ledger it was created in."""
        return self.directory / "writer.json"

    @property
    def lock(self) -> Path:
        """The file whose flock marks the live appender."""
        return self.directory / "LOCK"

    @property
    def wal_dir(self) -> Path:
        """The write-ahead log files, one per flush interval, named by their first seq."""
        return self.directory / "wal"

    @property
    def head(self) -> Path:
        """head.json: the last flushed seq and hash, so a dropped tail segment is noticed."""
        return self.directory / "head.json"

    @property
    def segments(self) -> Path:
        """The directory of Parquet segments."""
        return self.directory / "segments"

    @property
    def compaction_journal(self) -> Path:
        """Present only while a compaction replaces segments."""
        return self.directory / "compaction.json"

    def wal_file(self, first_seq: int) -> Path:
        """The WAL file whose first event is ``first_seq``."""
        return self.wal_dir / f"{first_seq:020d}.log"

    def wal_files(self) -> list[Path]:
        """The WAL files, oldest first."""
        try:
            names = os.listdir(self.wal_dir)
        except FileNotFoundError:
            return []
        return [self.wal_dir / n for n in sorted(names) if _WAL_NAME.match(n)]

    def home_ledger(self) -> str | None:
        """The id of the ledger that created this writer log."""
        try:
            value = orjson.loads(self.meta.read_bytes()).get("ledger_id")
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return str(value) if value is not None else None


def segments_in_force(layout: WriterLayout) -> tuple[list[SegmentFile], str]:
    """A writer log's segments, less the sources of an interrupted compaction; and a note.

    Between a compaction's rename of the merged segment and the removal of its sources both
    exist; the journal says which files the merged one replaces.
    """
    segments = list_segments(layout.segments)
    try:
        plan = orjson.loads(layout.compaction_journal.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return segments, ""
    if not (layout.segments / plan["merged"]).exists():
        return segments, ""
    replaced = set(plan["sources"])
    note = (
        f"writer {layout.writer_id}: an interrupted compaction into {plan['merged']} "
        "will be completed when the writer log is next opened"
    )
    return [s for s in segments if s.path.name not in replaced], note


def try_lock(path: Path) -> int | None:
    """Take the appender lock of a writer log, or None if another live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_head(layout: WriterLayout) -> tuple[int, bytes] | None:
    """The (seq, hash) recorded at the last flush, if any."""
    try:
        head = orjson.loads(layout.head.read_bytes())
    except FileNotFoundError:
        return None
    return int(head["seq"]), bytes.fromhex(head["hash"])


def new_writer_id() -> str:
    """A globally unique writer id that still says which host made it."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:24] or "host"
    return f"{host}-{secrets.token_hex(6)}"


def scan_wal_files(layout: WriterLayout) -> list[tuple[Path, WalScan]]:
    """Every WAL file of a writer log with what it holds, oldest first."""
    return [(path, scan_wal(path)) for path in layout.wal_files()]


def unflushed_frames(layout: WriterLayout, segments: Sequence[SegmentFile]) -> list[WalFrame]:
    """The intact WAL frames holding events past the last segment."""
    flushed = segments[-1].last_seq + 1 if segments else 0
    return [
        frame
        for _, scan in scan_wal_files(layout)
        for frame in scan.frames
        if frame.last_seq >= flushed
    ]


def wal_tail(layout: WriterLayout) -> pa.Table | None:
    """The events of a writer's WAL that are not yet in its segments (read-only, lock-free)."""
    segments, _ = segments_in_force(layout)
    frames = unflushed_frames(layout, segments)
    if not frames:
        return None
    lines = [line for frame in frames for line in frame.lines]
    return table_from_lines(lines, hash_before(segments, frames[0].first_seq))


def hash_before(segments: Sequence[SegmentFile], seq: int) -> bytes:
    """The chained hash of the event just before ``seq`` (zero hash at the start)."""
    return (hash_at(segments, seq - 1) if seq else None) or ZERO_HASH


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_ATTRS_MEMBER = b',"attrs":'


def attrs_text(line: bytes) -> str:
    """The ``attrs`` member of a canonical event, exactly as it was hashed.

    Re-serialising the parsed value is not the same: RFC 8785 writes the float 1e17 as
    100000000000000000, which parses back as an integer outside the JSON safe range.
    """
    # Inside a JSON string every quote is escaped, so ',"attrs":' can only be the member itself.
    start = line.index(_ATTRS_MEMBER) + len(_ATTRS_MEMBER)
    depth = 0
    for token in _JSON_TOKEN.finditer(line, start):
        mark = token.group()
        if mark in (b"{", b"["):
            depth += 1
        elif mark in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return line[start : token.end()].decode("utf-8")
    raise ValueError("canonical event has an unterminated attrs member")


def table_from_lines(lines: Sequence[bytes], prev_hash: bytes) -> pa.Table:
    """Rebuild segment rows from canonical event bytes, recomputing the hash chain."""
    rows: list[dict[str, Any]] = []
    prevs: list[bytes] = []
    leaves: list[bytes] = []
    hashes: list[bytes] = []
    prev = prev_hash
    for line in lines:
        row = orjson.loads(line)
        if "attrs" in row:
            row["attrs"] = attrs_text(line)
        leaf = leaf_hash(line)
        digest = chain_hash(prev, leaf)
        rows.append(row)
        prevs.append(prev)
        leaves.append(leaf)
        hashes.append(digest)
        prev = digest
    return rows_to_table(rows, (prevs, leaves, hashes))
