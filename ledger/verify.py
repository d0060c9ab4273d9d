"""Verification of a ledger: every stored column, every link, every segment, the WAL and head.

Each segment is checked on its own (in parallel worker processes for large ledgers): every row's
canonical bytes are rebuilt from its typed columns and its leaf and chained hashes recomputed
(``rebuild``), compared with the stored ones, and each row's seq, writer and prev_hash link
checked. The segments' ends are then linked writer log by writer log.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .checkpoints import CheckpointStore
from .hashing import ZERO_HASH, chain_hash, leaf_hash
from .layout import WriterLayout, read_head, scan_wal_files, segments_in_force, try_lock
from .note import Verifier
from .report import IntegrityProblem, VerifyReport, WriterSummary
from .schema import SEGMENT_SCHEMA
from .segments import DICTIONARY_TEXT_COLUMNS, SegmentFile, hash_at
from .verify_checkpoints import RootRecorder, check_checkpoints, checkpointed_sizes

__all__ = ["IntegrityProblem", "VerifyReport", "WriterSummary", "check_segment", "verify_ledger"]


@dataclass(frozen=True)
class SegmentCheck:
    """What checking one segment on its own found (a worker process's answer)."""

    rows: int
    first_prev_hash: bytes | None
    last_hash: bytes | None
    failing: tuple[tuple[int, int, bool, bool, bool, bool], ...] = ()
    error_code: str = ""
    error: str = ""
    leaves: bytes = b""  # the recomputed leaf hashes, concatenated, for the Merkle tree
    statistics: str = ""  # what is wrong with the footer statistics, if anything


@dataclass
class _Cursor:
    """Where a writer log's walk has reached: next expected seq and the hash before it."""

    next_seq: int = 0
    last_hash: bytes | None = ZERO_HASH  # None: unknown, after an unreadable segment
    events: int = 0
    segment_ends: dict[int, bytes] = field(default_factory=dict)


PARALLEL_FROM_ROWS = 400_000
MAX_REPORTED_ROWS = 1000


def verify_ledger(
    writer_layouts: list[WriterLayout],
    workers: int | None = None,
    checkpoints: CheckpointStore | None = None,
    verifiers: Sequence[Verifier] = (),
) -> VerifyReport:
    """Verify every writer log of a ledger (segments in parallel when it pays) and checkpoints."""
    started = time.perf_counter()
    notes: list[str] = []
    plans = []
    for layout in writer_layouts:
        segments, note = segments_in_force(layout)
        plans.append((layout, segments))
        notes.extend([note] if note else [])
    sizes = checkpointed_sizes(checkpoints) if checkpoints is not None else {}
    # Leaf hashes travel back from the workers only for logs whose checkpoint roots need them.
    jobs = [
        (str(s.path), s.first_seq, layout.writer_id, layout.writer_id in sizes)
        for layout, segs in plans
        for s in segs
    ]
    total_rows = sum(s.rows for _, segs in plans for s in segs)
    recorders = {
        layout.writer_id: RootRecorder(sizes.get(layout.writer_id, [])) for layout in writer_layouts
    }
    problems: list[IntegrityProblem] = []
    writers: list[WriterSummary] = []
    workers = workers or os.cpu_count() or 1
    with ExitStack() as stack:
        pool = None
        if workers > 1 and len(jobs) > 1 and total_rows >= PARALLEL_FROM_ROWS:
            pool = stack.enter_context(_worker_pool(min(workers, len(jobs))))
        if pool is not None:
            checks: Iterator[SegmentCheck] = pool.map(_check_segment_job, jobs)
        else:
            checks = (check_segment(*job) for job in jobs)
        for layout, segments in plans:
            recorder = recorders[layout.writer_id]
            summary, found = _verify_writer(layout, segments, checks, recorder, notes)
            writers.append(summary)
            problems.extend(found)
    if checkpoints is not None:
        problems.extend(check_checkpoints(checkpoints, verifiers, recorders, writer_layouts))
    elapsed = time.perf_counter() - started
    return VerifyReport(tuple(problems), tuple(writers), tuple(notes), elapsed)


@contextmanager
def _worker_pool(size: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes, or None where they cannot start.

    Workers need only this module, so the caller's main module is hidden from them while the
    pool lives: otherwise each worker would re-run the caller's script (one without a
    ``__main__`` guard, or read from stdin, would break or recurse).
    """
    with _main_module_hidden():
        pool = ProcessPoolExecutor(size, mp_context=get_context("forkserver"))
        try:
            pool.submit(os.getpid).result()
        except (BrokenProcessPool, RuntimeError):
            pool.shutdown(cancel_futures=True)
            yield None
            return
        with pool:
            yield pool


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    names: tuple[str, ...] = ("__spec__", "__file__")
    saved = {name: main.__dict__[name] for name in names if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _verify_writer(
    layout: WriterLayout,
    segments: list[SegmentFile],
    checks: Iterator[SegmentCheck],
    recorder: RootRecorder,
    notes: list[str],
) -> tuple[WriterSummary, list[IntegrityProblem]]:
    writer_id = layout.writer_id
    problems: list[IntegrityProblem] = []
    cursor = _Cursor()
    for segment in segments:
        check = next(checks)
        found = list(_link_segment(writer_id, segment, check, cursor))
        problems.extend(found)
        if found or not check.leaves:
            recorder.intact = recorder.intact and not found and check.rows == 0
        else:
            recorder.feed_blob(check.leaves)
    wal_events = _check_wal(layout, cursor, problems, notes, recorder)
    problems.extend(_check_head(layout, cursor, segments))
    summary = WriterSummary(
        writer_id,
        cursor.events,
        len(segments),
        wal_events,
        cursor.next_seq - 1 if cursor.next_seq else None,
        cursor.last_hash.hex() if cursor.last_hash else "",
    )
    return summary, problems


def _link_segment(
    writer_id: str, segment: SegmentFile, check: SegmentCheck, cursor: _Cursor
) -> Iterator[IntegrityProblem]:
    """Place one checked segment in its writer log's sequence and report what is wrong."""
    name = segment.path.name
    if segment.first_seq < cursor.next_seq:
        yield IntegrityProblem(
            writer_id,
            "overlapping-segment",
            f"claims seqs {segment.first_seq}..{segment.last_seq}, but seqs up to "
            f"{cursor.next_seq - 1} are already held by another segment "
            "(a duplicated or forged file)",
            name,
        )
        return
    if segment.first_seq > cursor.next_seq:
        yield IntegrityProblem(
            writer_id,
            "missing-events",
            f"no segment holds seqs {cursor.next_seq}..{segment.first_seq - 1} "
            "(a segment file was deleted)",
            name,
            cursor.next_seq,
        )
        cursor.last_hash = None
    cursor.next_seq = segment.last_seq + 1
    if check.error_code:
        yield IntegrityProblem(writer_id, check.error_code, check.error, name)
        cursor.last_hash = None
        return
    if check.rows != segment.rows:
        yield IntegrityProblem(
            writer_id,
            "row-count",
            f"holds {check.rows} rows but its name claims seqs {segment.first_seq}.."
            f"{segment.last_seq} ({segment.rows} rows): rows were deleted or inserted",
            name,
        )
    known = cursor.last_hash is not None
    if known and check.rows and check.first_prev_hash != cursor.last_hash:
        yield IntegrityProblem(
            writer_id,
            "chain-broken",
            "row 0: prev_hash does not equal the last hash of the previous segment "
            "(events between them were removed, inserted or rewritten)",
            name,
            segment.first_seq,
        )
    if check.statistics:
        yield IntegrityProblem(writer_id, "statistics-changed", check.statistics, name)
    for failing in check.failing:
        yield from _row_problems(writer_id, segment, failing)
    cursor.events += check.rows
    whole = check.rows == segment.rows and not check.failing
    cursor.last_hash = check.last_hash if whole else None
    if check.last_hash is not None:
        cursor.segment_ends[segment.last_seq] = check.last_hash


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


def _check_segment_job(job: tuple[str, int, str, bool]) -> SegmentCheck:
    return check_segment(*job)


def check_segment(
    path: str, first_seq: int, writer_id: str, return_leaves: bool = True
) -> SegmentCheck:
    """Check one segment on its own: every row's hash, seq, writer and link to the row before."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        return SegmentCheck(0, None, None, (), "unreadable-segment", f"not readable Parquet: {err}")
    if not schema.remove_metadata().equals(SEGMENT_SCHEMA):
        return SegmentCheck(0, None, None, (), "schema-changed", _schema_difference(schema))
    state = _SegmentState(return_leaves)
    statistics = ""
    try:
        parquet = pq.ParquetFile(path, read_dictionary=DICTIONARY_TEXT_COLUMNS)
        # Row group by row group, so the footer statistics are checked against the columns
        # already read rather than by reading them again.
        for group in range(parquet.metadata.num_row_groups):
            chunks = _chunks_with_statistics(parquet.metadata.row_group(group))
            read: dict[str, list[pa.Array]] = {_column_of(c): [] for c in chunks}
            for batch in parquet.iter_batches(_BATCH_ROWS, row_groups=[group], use_threads=False):
                _check_batch(batch, first_seq, writer_id, state)
                for name, arrays in read.items():
                    arrays.append(batch.column(name))
            statistics = statistics or _forged_statistics(group, chunks, read)
    except (OSError, pa.ArrowException, TypeError, ValueError) as err:
        message = f"cannot be read: {err}"
        return SegmentCheck(state.rows, None, None, (), "unreadable-segment", message)
    return SegmentCheck(
        state.rows,
        state.first_prev,
        state.previous,
        tuple(state.failing),
        leaves=b"".join(state.leaves),
        statistics=statistics,
    )


# Large batches: pyarrow copies a row group's dictionaries into every batch it reads, and each
# batch costs the compiled loops a layout of its ~40 columns.
_BATCH_ROWS = 32768


def _chunks_with_statistics(group: pq.RowGroupMetaData) -> list[pq.ColumnChunkMetaData]:
    chunks = [group.column(i) for i in range(group.num_columns)]
    return [c for c in chunks if c.statistics is not None]


def _column_of(chunk: pq.ColumnChunkMetaData) -> str:
    """The top-level column a chunk belongs to (a list's leaf is ``name.list.element``)."""
    name: str = chunk.path_in_schema.split(".")[0]
    return name


def _forged_statistics(
    group: int, chunks: list[pq.ColumnChunkMetaData], read: dict[str, list[pa.Array]]
) -> str:
    """What is wrong with a row group's footer statistics, if they do not describe its rows.

    Readers skip row groups by these statistics, so a forged minimum or maximum would hide rows
    from queries. Statistics that bound their rows are harmless, wherever they are.
    """
    for chunk in chunks:
        name = _column_of(chunk)
        stored = SEGMENT_SCHEMA.field(name).type
        values = pa.chunked_array([a.cast(stored) for a in read[name]], stored)
        nested = pa.types.is_list(values.type)
        if nested:
            values = pc.list_flatten(values)
        problem = _statistics_problem(chunk.statistics, values, count_nulls=not nested)
        if problem:
            return f"row group {group}, column {chunk.path_in_schema}: {problem}"
    return ""


def _statistics_problem(
    statistics: pq.Statistics, values: pa.ChunkedArray, count_nulls: bool
) -> str:
    # A list column's leaf null count also counts empty and absent lists: only bounds apply.
    if count_nulls and statistics.has_null_count and statistics.null_count != values.null_count:
        return f"null count says {statistics.null_count}, the rows hold {values.null_count}"
    if not statistics.has_min_max:
        return ""
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
        low, high = statistics.min_raw, statistics.max_raw
    else:
        low, high = statistics.min, statistics.max
    actual = pc.min_max(values)
    if actual["min"].as_py() is None:
        return ""
    if low > actual["min"].as_py() or high < actual["max"].as_py():
        return "minimum/maximum do not bound the rows (queries would skip some of them)"
    return ""


@dataclass
class _SegmentState:
    keep_leaves: bool
    rows: int = 0
    first_prev: bytes | None = None
    previous: bytes | None = None
    failing: list[tuple[int, int, bool, bool, bool, bool]] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)


def _check_batch(
    batch: pa.RecordBatch, first_seq: int, writer_id: str, state: _SegmentState
) -> None:
    """Check a batch's rows: rebuilt hashes, seq, writer and the link to the row before."""
    # Imported here: numba's import (~0.1 s) is only for commands that write or verify.
    from .rebuild import HASH_OK, LINK_OK, ROW_OK, SEQ_OK, WRITER_OK, check_rows

    rows = batch.num_rows
    if rows == 0:
        return
    hashes = batch.column("hash")
    if state.first_prev is None:
        first = batch.column("prev_hash")[0]
        state.first_prev = first.as_py() if first.is_valid else bytes(32)
    checked = check_rows(batch, first_seq + state.rows, writer_id, state.previous)
    if checked.outside_dictionary:
        # Read as text, such a file fails as unreadable ("index not in dictionary bounds"); read
        # as dictionaries, pyarrow passes the codes on unchecked: refused here the same way.
        raise ValueError(f"{_columns_outside_dictionary(batch)}: codes outside the dictionary")
    if checked.failing:
        seqs = batch.column("seq")
        flags = checked.flags
        for row in np.flatnonzero(flags != ROW_OK)[
            : max(0, MAX_REPORTED_ROWS - len(state.failing))
        ]:
            flag = int(flags[row])
            state.failing.append(
                (
                    state.rows + int(row),
                    seqs[int(row)].as_py(),
                    bool(flag & SEQ_OK),
                    bool(flag & WRITER_OK),
                    bool(flag & HASH_OK),
                    bool(flag & LINK_OK),
                )
            )
    if state.keep_leaves:
        state.leaves.append(checked.leaves.tobytes())
    last = hashes[rows - 1]
    state.previous = last.as_py() if last.is_valid else bytes(32)
    state.rows += rows


def _columns_outside_dictionary(batch: pa.RecordBatch) -> str:
    """The dictionary columns of a batch whose codes go past their dictionary."""
    named = []
    for name in batch.schema.names:
        column = batch.column(name)
        if pa.types.is_dictionary(column.type) and column.null_count < len(column):
            codes = pc.min_max(column.indices)
            if codes["min"].as_py() < 0 or codes["max"].as_py() >= len(column.dictionary):
                named.append(name)
    return "columns " + ", ".join(named)


def _row_problems(
    writer_id: str, segment: SegmentFile, failing: tuple[int, int, bool, bool, bool, bool]
) -> Iterator[IntegrityProblem]:
    row, stored_seq, seq_ok, writer_ok, hash_ok, link_ok = failing
    name = segment.path.name
    at = f"row {row}"
    seq = segment.first_seq + row  # the position in the chain, whatever the seq column says
    if not seq_ok:
        yield IntegrityProblem(
            writer_id,
            "seq-out-of-place",
            f"{at} holds seq {stored_seq}, expected {seq} "
            "(rows deleted, inserted, reordered, or the seq column edited)",
            name,
            seq,
        )
    if not writer_ok:
        yield IntegrityProblem(
            writer_id, "writer-changed", f"{at}: writer_id column edited", name, seq
        )
    if not hash_ok:
        yield IntegrityProblem(
            writer_id,
            "content-changed",
            f"{at}: the stored columns no longer hash to the row's hash "
            "(a column of this row, or its hash, was changed)",
            name,
            seq,
        )
    if not link_ok:
        yield IntegrityProblem(
            writer_id,
            "chain-broken",
            f"{at}: prev_hash does not equal the previous event's hash "
            "(an event before it was removed, inserted, reordered or rewritten)",
            name,
            seq,
        )


def _check_wal(
    layout: WriterLayout,
    cursor: _Cursor,
    problems: list[IntegrityProblem],
    notes: list[str],
    recorder: RootRecorder,
) -> int:
    """Check the WAL frames past the segments continue the chain; return their event count."""
    writer_id = layout.writer_id
    scans = scan_wal_files(layout)
    live = _has_live_appender(layout)
    events = 0
    for position, (path, scan) in enumerate(scans):
        if scan.intact_after_damage:
            problems.append(
                IntegrityProblem(
                    writer_id,
                    "wal-damaged",
                    f"{scan.damage}, with intact batches after it: acknowledged events are lost",
                    path.name,
                    scan.frames[-1].last_seq + 1 if scan.frames else int(path.stem),
                )
            )
        elif scan.torn:
            message = f"damaged tail ({scan.damage}): never acknowledged, dropped on next open"
            if position == len(scans) - 1:
                if not live:
                    notes.append(f"writer {writer_id}, {path.name}: {message}")
            else:
                problems.append(IntegrityProblem(writer_id, "wal-damaged", scan.damage, path.name))
        for frame in scan.frames:
            if frame.last_seq < cursor.next_seq:
                continue  # already in a segment (a flush was cut short before deleting the WAL)
            if frame.first_seq != cursor.next_seq:
                problems.append(
                    IntegrityProblem(
                        writer_id,
                        "missing-events",
                        f"WAL frame starts at seq {frame.first_seq}, expected {cursor.next_seq}",
                        path.name,
                        cursor.next_seq,
                    )
                )
                cursor.last_hash = None
                recorder.intact = False
            prev = cursor.last_hash
            leaves = []
            for offset, line in enumerate(frame.lines):
                seq = frame.first_seq + offset
                row = orjson.loads(line)
                if row.get("seq") != seq or row.get("writer_id") != writer_id:
                    problems.append(
                        IntegrityProblem(
                            writer_id, "wal-changed", "seq or writer_id edited", path.name, seq
                        )
                    )
                leaf = leaf_hash(line)
                leaves.append(leaf)
                prev = chain_hash(prev if prev is not None else ZERO_HASH, leaf)
            recorder.feed(leaves)
            cursor.last_hash = prev
            cursor.next_seq = frame.last_seq + 1
            events += len(frame.lines)
    cursor.events += events
    return events


def _has_live_appender(layout: WriterLayout) -> bool:
    fd = try_lock(layout.lock)
    if fd is None:
        return True
    os.close(fd)
    return False


def _check_head(
    layout: WriterLayout, cursor: _Cursor, segments: list[SegmentFile]
) -> Iterator[IntegrityProblem]:
    """The last flush's recorded (seq, hash) must still be there: catches a dropped tail."""
    head = read_head(layout)
    if head is None:
        return
    seq, digest = head
    flushed_end = segments[-1].last_seq if segments else -1
    if seq > flushed_end:
        yield IntegrityProblem(
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
        stored = _hash_at(segments, seq)
    if stored is not None and stored != digest:
        yield IntegrityProblem(
            layout.writer_id,
            "head-mismatch",
            f"the hash stored at seq {seq} differs from the one recorded when it was flushed "
            "(the log was rewritten)",
            layout.head.name,
            seq,
        )


def _hash_at(segments: Sequence[SegmentFile], seq: int) -> bytes | None:
    try:
        return hash_at(segments, seq)
    except (OSError, pa.ArrowException):
        return None  # already reported as unreadable
