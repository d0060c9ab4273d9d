"""Verification of a ledger: every stored column, every link, every segment, the WAL and head.

Each segment is checked by one DuckDB query that rebuilds every row's canonical bytes from its
typed columns (``canonical_sql``), recomputes the leaf and chained hashes, and compares them and
the seq and prev_hash links with what is stored; only failing rows come back to Python.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
import sqlglot.expressions as exp

from .canonical_sql import canonical_sql, leaf_hash_sql
from .hashing import ZERO_HASH, chain_hash, leaf_hash
from .layout import WriterLayout, read_head, scan_wal_files, try_lock
from .schema import SEGMENT_SCHEMA
from .segments import SegmentFile, list_segments

__all__ = ["Problem", "VerifyReport", "WriterSummary", "verify_ledger", "verify_writer"]


@dataclass(frozen=True)
class Problem:
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

    problems: tuple[Problem, ...]
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


@dataclass
class _Cursor:
    """Where a writer log's walk has reached: next expected seq and the hash before it."""

    next_seq: int = 0
    last_hash: bytes | None = ZERO_HASH  # None: unknown, after an unreadable segment
    events: int = 0
    segment_ends: dict[int, bytes] = field(default_factory=dict)


def verify_ledger(writer_layouts: list[WriterLayout], threads: int | None = None) -> VerifyReport:
    """Verify every writer log of a ledger."""
    started = time.perf_counter()
    problems: list[Problem] = []
    writers: list[WriterSummary] = []
    notes: list[str] = []
    connection = duckdb.connect(config={"threads": threads} if threads else {})
    try:
        for layout in writer_layouts:
            summary, found, said = verify_writer(layout, connection)
            writers.append(summary)
            problems.extend(found)
            notes.extend(said)
    finally:
        connection.close()
    return VerifyReport(
        tuple(problems), tuple(writers), tuple(notes), time.perf_counter() - started
    )


def verify_writer(
    layout: WriterLayout, connection: duckdb.DuckDBPyConnection
) -> tuple[WriterSummary, list[Problem], list[str]]:
    """Verify one writer log; return its summary, problems, and notes (benign findings)."""
    writer_id = layout.writer_id
    problems: list[Problem] = []
    notes: list[str] = []
    cursor = _Cursor()
    segments = _segments_in_force(layout, notes)
    for segment in segments:
        problems.extend(_check_segment(writer_id, segment, cursor, connection))
    wal_events = _check_wal(layout, cursor, problems, notes)
    problems.extend(_check_head(layout, cursor, segments, connection))
    summary = WriterSummary(
        writer_id,
        cursor.events,
        len(segments),
        wal_events,
        cursor.next_seq - 1 if cursor.next_seq else None,
        cursor.last_hash.hex() if cursor.last_hash else "",
    )
    return summary, problems, notes


def _segments_in_force(layout: WriterLayout, notes: list[str]) -> list[SegmentFile]:
    """The segments, less the sources of an interrupted compaction whose result is complete."""
    segments = list_segments(layout.segments)
    journal = layout.compaction_journal
    if journal.exists():
        plan = orjson.loads(journal.read_bytes())
        if (layout.segments / plan["merged"]).exists():
            replaced = set(plan["sources"])
            segments = [s for s in segments if s.path.name not in replaced]
            notes.append(
                f"writer {layout.writer_id}: an interrupted compaction into {plan['merged']} "
                "will be completed when the writer log is next opened"
            )
    return segments


def _check_segment(
    writer_id: str,
    segment: SegmentFile,
    cursor: _Cursor,
    connection: duckdb.DuckDBPyConnection,
) -> Iterator[Problem]:
    name = segment.path.name
    if segment.first_seq < cursor.next_seq:
        yield Problem(
            writer_id,
            "overlapping-segment",
            f"claims seqs {segment.first_seq}..{segment.last_seq}, but seqs up to "
            f"{cursor.next_seq - 1} are already held by another segment "
            "(a duplicated or forged file)",
            name,
        )
        return
    if segment.first_seq > cursor.next_seq:
        yield Problem(
            writer_id,
            "missing-events",
            f"no segment holds seqs {cursor.next_seq}..{segment.first_seq - 1} "
            "(a segment file was deleted)",
            name,
            cursor.next_seq,
        )
        cursor.last_hash = None
    try:
        schema = pq.read_schema(segment.path)
    except (OSError, pa.ArrowException) as err:
        yield Problem(writer_id, "unreadable-segment", f"cannot be read as Parquet: {err}", name)
        cursor.next_seq, cursor.last_hash = segment.last_seq + 1, None
        return
    if not schema.remove_metadata().equals(SEGMENT_SCHEMA):
        yield Problem(writer_id, "schema-changed", _schema_difference(schema), name)
        cursor.next_seq, cursor.last_hash = segment.last_seq + 1, None
        return
    try:
        rows, bad, last_hash = _run_checks(segment, writer_id, cursor.last_hash, connection)
    except duckdb.Error as err:
        yield Problem(writer_id, "unreadable-segment", f"cannot be read: {err}", name)
        cursor.next_seq, cursor.last_hash = segment.last_seq + 1, None
        return
    if rows != segment.rows:
        yield Problem(
            writer_id,
            "row-count",
            f"holds {rows} rows but its name claims seqs {segment.first_seq}..{segment.last_seq} "
            f"({segment.rows} rows): rows were deleted or inserted",
            name,
        )
    for failing in bad:
        yield from _row_problems(writer_id, segment, failing)
    cursor.events += rows
    cursor.next_seq = segment.last_seq + 1
    cursor.last_hash = last_hash if rows == segment.rows else None
    if last_hash is not None:
        cursor.segment_ends[segment.last_seq] = last_hash


def _schema_difference(schema: pa.Schema) -> str:
    expected = {f.name: f.type for f in SEGMENT_SCHEMA}
    found = {f.name: f.type for f in schema}
    extra = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    retyped = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
    parts = []
    if extra:
        parts.append(f"unexpected columns {extra} (not covered by the hash)")
    if missing:
        parts.append(f"missing columns {missing}")
    if retyped:
        parts.append(f"columns with changed types {retyped}")
    if not parts:
        parts.append("column order or nullability changed")
    return "segment schema differs from the ledger's: " + "; ".join(parts)


# Constant SQL, parsed once; LEAF_HASH is replaced by the canonical-bytes expression, and every
# value is a bound parameter.
_ROW_CHECKS = sqlglot.parse_one(
    """
    SELECT row, seq, seq_ok, writer_ok, hash_ok, link_ok FROM (
      SELECT
        file_row_number AS row,
        seq,
        coalesce(seq = $first_seq + file_row_number, false) AS seq_ok,
        coalesce(writer_id = $writer_id, false) AS writer_ok,
        coalesce(hash = unhex(sha256(prev_hash || LEAF_HASH)), false) AS hash_ok,
        coalesce(
          prev_hash = coalesce(lag(hash) OVER (ORDER BY file_row_number), $start_hash),
          file_row_number = 0 AND $start_hash IS NULL
        ) AS link_ok
      FROM read_parquet($path, file_row_number = true)
    ) AS checked
    WHERE NOT (seq_ok AND writer_ok AND hash_ok AND link_ok)
    ORDER BY row
    LIMIT $max_reported
    """,
    read="duckdb",
).transform(
    lambda node: (
        leaf_hash_sql(canonical_sql())
        if isinstance(node, exp.Column) and node.name == "LEAF_HASH"
        else node
    )
)
_SEGMENT_END = sqlglot.parse_one(
    "SELECT count(*), arg_max(hash, file_row_number) "
    "FROM read_parquet($path, file_row_number = true)",
    read="duckdb",
)
MAX_REPORTED_ROWS = 1000


def _run_checks(
    segment: SegmentFile,
    writer_id: str,
    start_hash: bytes | None,
    connection: duckdb.DuckDBPyConnection,
) -> tuple[int, list[tuple[int, int, bool, bool, bool, bool]], bytes | None]:
    """Run the per-row checks of one segment; return its row count, failing rows, last hash."""
    failing = connection.execute(
        _ROW_CHECKS.sql("duckdb"),
        {
            "path": str(segment.path),
            "first_seq": segment.first_seq,
            "writer_id": writer_id,
            "start_hash": start_hash,
            "max_reported": MAX_REPORTED_ROWS,
        },
    ).fetchall()
    end = connection.execute(_SEGMENT_END.sql("duckdb"), {"path": str(segment.path)}).fetchone()
    rows, last_hash = (int(end[0]), end[1]) if end else (0, None)
    return rows, failing, bytes(last_hash) if last_hash is not None else None


def _row_problems(
    writer_id: str, segment: SegmentFile, failing: tuple[int, int, bool, bool, bool, bool]
) -> Iterator[Problem]:
    row, seq, seq_ok, writer_ok, hash_ok, link_ok = failing
    name = segment.path.name
    at = f"row {row}"
    if not seq_ok:
        yield Problem(
            writer_id,
            "seq-out-of-place",
            f"{at} holds seq {seq}, expected {segment.first_seq + row} "
            "(rows deleted, inserted, reordered, or the seq column edited)",
            name,
            seq,
        )
    if not writer_ok:
        yield Problem(writer_id, "writer-changed", f"{at}: writer_id column edited", name, seq)
    if not hash_ok:
        yield Problem(
            writer_id,
            "content-changed",
            f"{at}: the stored columns no longer hash to the row's hash "
            "(a column of this row, or its hash, was changed)",
            name,
            seq,
        )
    if not link_ok:
        yield Problem(
            writer_id,
            "chain-broken",
            f"{at}: prev_hash does not equal the previous event's hash "
            "(an event before it was removed, inserted, reordered or rewritten)",
            name,
            seq,
        )


def _check_wal(
    layout: WriterLayout, cursor: _Cursor, problems: list[Problem], notes: list[str]
) -> int:
    """Check the WAL frames past the segments continue the chain; return their event count."""
    writer_id = layout.writer_id
    scans = scan_wal_files(layout)
    live = _has_live_appender(layout)
    events = 0
    for position, (path, scan) in enumerate(scans):
        if scan.torn:
            message = f"damaged tail ({scan.damage}): never acknowledged, dropped on next open"
            if position == len(scans) - 1:
                if not live:
                    notes.append(f"writer {writer_id}, {path.name}: {message}")
            else:
                problems.append(Problem(writer_id, "wal-damaged", scan.damage, path.name))
        for frame in scan.frames:
            if frame.last_seq < cursor.next_seq:
                continue  # already in a segment (a flush was cut short before deleting the WAL)
            if frame.first_seq != cursor.next_seq:
                problems.append(
                    Problem(
                        writer_id,
                        "missing-events",
                        f"WAL frame starts at seq {frame.first_seq}, expected {cursor.next_seq}",
                        path.name,
                        cursor.next_seq,
                    )
                )
                cursor.last_hash = None
            prev = cursor.last_hash
            for offset, line in enumerate(frame.lines):
                seq = frame.first_seq + offset
                row = orjson.loads(line)
                if row.get("seq") != seq or row.get("writer_id") != writer_id:
                    problems.append(
                        Problem(writer_id, "wal-changed", "seq or writer_id edited", path.name, seq)
                    )
                digest = chain_hash(prev if prev is not None else ZERO_HASH, leaf_hash(line))
                prev = digest
            cursor.last_hash = prev
            cursor.next_seq = frame.last_seq + 1
            events += len(frame.lines)
    cursor.events += events
    return events


def _has_live_appender(layout: WriterLayout) -> bool:
    fd = try_lock(layout.lock)
    if fd is None:
        return True
    import os

    os.close(fd)
    return False


def _check_head(
    layout: WriterLayout,
    cursor: _Cursor,
    segments: list[SegmentFile],
    connection: duckdb.DuckDBPyConnection,
) -> Iterator[Problem]:
    """The last flush's recorded (seq, hash) must still be there: catches a dropped tail."""
    head = read_head(layout)
    if head is None:
        return
    seq, digest = head
    flushed_end = segments[-1].last_seq if segments else -1
    if seq > flushed_end:
        yield Problem(
            layout.writer_id,
            "missing-events",
            f"the last flush recorded seq {seq}, but the segments end at seq {flushed_end} "
            "(a tail segment was deleted or cut short)",
            layout.head.name,
            flushed_end + 1,
        )
        return
    stored = cursor.segment_ends.get(seq)
    if stored is None:
        stored = _hash_at(segments, seq, connection)
    if stored is not None and stored != digest:
        yield Problem(
            layout.writer_id,
            "head-mismatch",
            f"the hash stored at seq {seq} differs from the one recorded when it was flushed "
            "(the log was rewritten)",
            layout.head.name,
            seq,
        )


def _hash_at(
    segments: list[SegmentFile], seq: int, connection: duckdb.DuckDBPyConnection
) -> bytes | None:
    for segment in segments:
        if segment.first_seq <= seq <= segment.last_seq:
            found = connection.execute(
                _HASH_AT.sql("duckdb"), {"path": str(segment.path), "seq": seq}
            ).fetchone()
            return bytes(found[0]) if found else None
    return None


_HASH_AT = sqlglot.parse_one(
    "SELECT hash FROM read_parquet($path) WHERE seq = $seq LIMIT 1", read="duckdb"
)
