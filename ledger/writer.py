"""A writer log's appender: one live process, a WAL fsynced per batch, Parquet segments.

Appends go to the current WAL file. A flush rotates to a fresh WAL file and writes the old file's
events to a Parquet segment on a background thread (Arrow releases the GIL while it encodes), then
deletes the old WAL file; a crash at any point leaves either the WAL file or the segment, and
recovery replays whatever the segments lack.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .batch import CheckedBatch, check_batch
from .durable import fsync_dir, write_atomically
from .errors import CorruptLedgerError, LedgerError, WriterBusyError
from .hashing import ZERO_HASH
from .idlookup import find_rows, index_path
from .layout import WriterLayout, new_writer_id, scan_wal_files, table_from_lines, try_lock
from .receipts import Receipts, TextColumn
from .schema import HASH_COLUMNS, SEGMENT_SCHEMA
from .segments import (
    SegmentFile,
    list_segments,
    read_rows,
    read_segment,
    segment_name,
    write_segment,
)
from .wal import WriteAheadLog

if TYPE_CHECKING:
    from .keyset import KeySet

__all__ = ["WriterLog"]

FLUSH_ROWS = 256 * 1024
FLUSH_WAL_BYTES = 96 * 1024 * 1024
SMALL_SEGMENT_ROWS = 64 * 1024
COMPACT_AT = 8

Stored = tuple[int, bytes]  # (seq, hash) of an event already in the log


class WriterLog:
    """The append side of one writer log. Holds its lock from open to close."""

    def __init__(self, layout: WriterLayout, lock_fd: int) -> None:
        self.layout = layout
        self.writer_id = layout.writer_id
        self._lock_fd = lock_fd
        self._state = threading.Lock()  # guards segments and index against the flush thread
        self._segments: list[SegmentFile] = []
        self._keys: KeySet | None = None  # every event_id's key, built on the first append
        self._next_seq = 0
        self._last_hash = ZERO_HASH
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._retiring: list[Path] = []  # WAL files whose events the pending tables hold
        self._inflight: list[pa.Table] = []  # tables the flush thread is writing
        self._inflight_wal: list[Path] = []  # the WAL files those tables' events are in
        self._flusher: threading.Thread | None = None
        self._flush_error: BaseException | None = None
        self._wal: WriteAheadLog | None = None
        self._wal_thread: ThreadPoolExecutor | None = None
        try:
            self._recover()
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def create(cls, writers_dir: Path, ledger_id: str) -> WriterLog:
        """Make a new writer log (it appears whole, by rename) and take its lock."""
        writer_id = new_writer_id()
        staging = writers_dir / f".new-{writer_id}"
        staging.mkdir()
        (staging / "segments").mkdir()
        (staging / "wal").mkdir()
        meta = {"writer_id": writer_id, "ledger_id": ledger_id, "created": time.time()}
        (staging / "writer.json").write_bytes(orjson.dumps(meta))
        fd = try_lock(staging / "LOCK")
        if fd is None:  # pragma: no cover - nobody else knows the staging name
            raise WriterBusyError(f"could not lock new writer log {writer_id}")
        final = writers_dir / writer_id
        os.replace(staging, final)
        fsync_dir(writers_dir)
        return cls(WriterLayout(final), fd)

    @classmethod
    def open(cls, layout: WriterLayout) -> WriterLog:
        """Take an existing writer log's lock and recover it; WriterBusyError if it is held."""
        fd = try_lock(layout.lock)
        if fd is None:
            raise WriterBusyError(f"writer log {layout.writer_id} is held by another process")
        return cls(layout, fd)

    @property
    def closed(self) -> bool:
        """Whether the log was closed or released (after a failure, for recovery)."""
        return self._wal is None

    @property
    def next_seq(self) -> int:
        """The seq the next appended event will get."""
        return self._next_seq

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> None:
        self._finish_compaction()
        for leftover in [
            *self.layout.segments.glob(".tmp-*"),
            *self.layout.segments.glob(".*.tmp"),
        ]:
            leftover.unlink()
        self.layout.wal_dir.mkdir(exist_ok=True)
        self._segments = list_segments(self.layout.segments)
        expected = 0
        for segment in self._segments:
            if segment.first_seq != expected:
                raise CorruptLedgerError(
                    f"writer log {self.writer_id}: segments do not continue at seq {expected} "
                    f"({segment.path.name}); run 'chainsight verify'"
                )
            expected = segment.last_seq + 1
        self._next_seq = expected
        if self._segments:
            self._last_hash = self._last_segment_hash()
        for path, scan in scan_wal_files(self.layout):
            if scan.intact_after_damage:
                raise CorruptLedgerError(
                    f"writer log {self.writer_id}: {path.name} is damaged ({scan.damage}) with "
                    "acknowledged batches after the damage; run 'chainsight verify'"
                )
            if scan.torn:  # a torn tail was never acknowledged
                os.truncate(path, scan.valid_length)
            unflushed = [f for f in scan.frames if f.last_seq >= self._next_seq]
            if not unflushed:
                path.unlink()
                continue
            for frame in unflushed:
                if frame.first_seq != self._next_seq:
                    raise CorruptLedgerError(
                        f"writer log {self.writer_id}: {path.name} frame at byte {frame.offset} "
                        f"starts at seq {frame.first_seq}, expected {self._next_seq}"
                    )
                table = table_from_lines(frame.lines, self._last_hash)
                self._stage(table)
                self._last_hash = table.column("hash")[-1].as_py()
                self._next_seq = frame.last_seq + 1
            self._retiring.append(path)
        fsync_dir(self.layout.wal_dir)
        self._wal = WriteAheadLog(self.layout.wal_file(self._next_seq))

    def _last_segment_hash(self) -> bytes:
        last = self._segments[-1]
        try:
            row = read_rows(last, [last.rows - 1], ["seq", "hash"]).get(last.rows - 1)
        except (OSError, pa.ArrowException) as err:
            raise CorruptLedgerError(
                f"writer log {self.writer_id}: cannot read {last.path.name}: {err}"
            ) from err
        if row is None or row["seq"] != last.last_seq:
            raise CorruptLedgerError(
                f"writer log {self.writer_id}: {last.path.name} does not end at seq {last.last_seq}"
            )
        return bytes(row["hash"])

    def _finish_compaction(self) -> None:
        journal = self.layout.compaction_journal
        if not journal.exists():
            return
        plan = orjson.loads(journal.read_bytes())
        if (self.layout.segments / plan["merged"]).exists():
            for name in plan["sources"]:
                _remove_segment(self.layout.segments / name)
        journal.unlink()
        fsync_dir(self.layout.segments)
        fsync_dir(self.layout.directory)

    # -- appending ----------------------------------------------------------------------------

    def append(
        self,
        records: Sequence[object],
        locations: Sequence[str] | None = None,
        checked: CheckedBatch | None = None,
    ) -> Receipts:
        """Validate (unless ``checked``) and durably append a batch; a receipt per record."""
        self._raise_flush_error()
        return self._append_checked(checked or check_batch(records, locations))

    def _append_checked(self, checked: CheckedBatch) -> Receipts:
        if self._wal is None:
            raise LedgerError("the writer log is closed")
        ids = checked.parsed.column("event_id")
        event_ids = TextColumn(ids)
        # Imported here, as the compiled loops are: numba only for writing commands.
        from .keyset import id_keys
        from .rebuild import chained

        new_positions, stored = self._new_positions(event_ids, id_keys(ids))
        first_seq = self._next_seq
        count = len(new_positions)
        if not count:
            return self._receipts(event_ids, new_positions, np.empty((0, 32), np.uint8), stored)
        all_new = count == len(event_ids)
        observed_micros = time.time_ns() // 1000
        parsed = checked.parsed
        rows = parsed.splice(
            np.asarray(new_positions, np.int64), self.writer_id, first_seq, observed_micros
        )
        # While the WAL frame is written and synced (mostly waiting on the disk) on its own
        # thread, this one hashes the rows and another gathers their columns.
        writing = self._wal_writer().submit(self._wal.append, first_seq, count, rows.payload)
        try:
            gathering = parsed.gathering()
            filling = gathering.start()
            hashed = chained(rows.lines, rows.offsets, self._last_hash)
            failure = writing.exception()
        except BaseException as err:  # e.g. no memory, or an interrupt while the disk syncs
            self._abandon()  # once the WAL write has ended: if it was written, recovery has it
            raise LedgerError(
                f"writer log {self.writer_id}: the batch at seq {first_seq} was interrupted "
                f"({err!r}); the log was released, and reopening the ledger recovers the batch "
                "if its WAL frame was written"
            ) from err
        if isinstance(failure, OSError):  # after a failed write or fsync, trust only recovery
            self._abandon()
            raise LedgerError(
                f"writer log {self.writer_id}: writing the WAL failed ({failure}); the batch was "
                "not acknowledged, and the log was released for recovery"
            ) from failure
        if failure is not None:
            raise failure
        try:
            filling.result()
            columns = gathering.table()
            if not all_new:
                columns = columns.take(pa.array(new_positions, pa.int64()))
            prev_hashes = np.concatenate(
                [np.frombuffer(self._last_hash, np.uint8)[None, :], hashed.hashes[:-1]]
            )
            table = _assigned(columns, self.writer_id, first_seq, observed_micros)
            table = _with_hashes(table, (prev_hashes, hashed.leaves, hashed.hashes))
            self._stage(table)
        except BaseException as err:
            self._abandon()
            raise LedgerError(
                f"writer log {self.writer_id}: the batch at seq {first_seq} is durable in the "
                f"WAL but could not be staged ({err!r}); the log was released, and reopening "
                "the ledger recovers it"
            ) from err
        self._last_hash = hashed.hashes[-1].tobytes()
        self._next_seq = first_seq + count
        if self._pending_rows >= FLUSH_ROWS or self._wal.length >= FLUSH_WAL_BYTES:
            self._flush_in_background()
        return self._receipts(event_ids, new_positions, hashed.hashes, stored, first_seq)

    def _wal_writer(self) -> ThreadPoolExecutor:
        """The thread that writes this log's WAL frames."""
        if self._wal_thread is None:
            self._wal_thread = ThreadPoolExecutor(1, thread_name_prefix="chainsight-wal")
        return self._wal_thread

    def _stop_wal_writer(self) -> None:
        if self._wal_thread is not None:
            self._wal_thread.shutdown()
            self._wal_thread = None

    def _receipts(
        self,
        event_ids: Sequence[str],
        new_positions: list[int],
        new_hashes: np.ndarray,
        stored: dict[str, Stored],
        first_seq: int = 0,
    ) -> Receipts:
        """Each record's receipt: its new place, or the place its event_id already had."""
        count = len(new_positions)
        if count == len(event_ids):
            seqs = range(first_seq, first_seq + count)
            return Receipts(self.writer_id, event_ids, seqs, new_hashes, np.zeros(count, bool))
        rows = len(event_ids)
        seq_of = np.empty(rows, np.int64)
        hashes = np.empty((rows, 32), np.uint8)
        duplicate = np.ones(rows, bool)
        seq_of[new_positions] = np.arange(first_seq, first_seq + count)
        hashes[new_positions] = new_hashes
        duplicate[new_positions] = False
        # A repeat within the batch gets the receipt of its first occurrence.
        placed = {
            event_ids[p]: (first_seq + k, new_hashes[k].tobytes())
            for k, p in enumerate(new_positions)
        }
        for row in np.flatnonzero(duplicate).tolist():
            seq, digest = stored.get(event_ids[row]) or placed[event_ids[row]]
            seq_of[row] = seq
            hashes[row] = np.frombuffer(digest, np.uint8)
        return Receipts(self.writer_id, event_ids, seq_of.tolist(), hashes, duplicate)

    def _new_positions(
        self, event_ids: Sequence[str], keys: np.ndarray
    ) -> tuple[list[int], dict[str, Stored]]:
        """Which records are new (first of their event_id), and the receipts of the others."""
        # Maybe seen: in the log, or earlier in this batch. The keys go in now; one a failed
        # append leaves behind is only a "maybe", confirmed below like any other.
        if self._keys is None:
            self._keys = self._all_keys()
        maybe = self._keys.add(keys)
        if not maybe.any():
            return list(range(len(event_ids))), {}  # the common case: all new
        candidates = sorted({event_ids[i] for i in np.flatnonzero(maybe).tolist()})
        stored = self._lookup_unflushed(candidates)
        unconfirmed = [i for i in candidates if i not in stored]
        with self._state:  # a compaction on the flush thread replaces segments under this lock
            if unconfirmed and self._segments:
                stored.update(self._lookup_flushed(unconfirmed))
        positions: list[int] = []
        seen: set[str] = set()
        for position, event_id in enumerate(event_ids):
            if event_id not in stored and event_id not in seen:
                positions.append(position)
                seen.add(event_id)
        return positions, stored

    def _stage(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows

    def _lookup_unflushed(self, event_ids: list[str]) -> dict[str, Stored]:
        """(seq, hash) of those event_ids the pending or in-flight tables hold."""
        wanted = pa.array(event_ids, pa.string())
        found: dict[str, Stored] = {}
        for table in [*self._inflight, *self._pending]:
            rows = table.filter(pc.is_in(table.column("event_id"), value_set=wanted))
            for row in rows.select(["event_id", "seq", "hash"]).to_pylist():
                found.setdefault(row["event_id"], (row["seq"], row["hash"]))
        return found

    def _all_keys(self) -> KeySet:
        """The keys of every event in the log: its segments' and the unflushed tables'."""
        from .keyset import KeySet, id_keys

        self._join_flusher()  # no flush or compaction moves events while they are read
        ids = [read_segment(s, ["event_id"]).column("event_id") for s in self._segments]
        ids += [table.column("event_id") for table in [*self._inflight, *self._pending]]
        keys = KeySet(sum(map(len, ids)) * 2)
        for column in ids:
            keys.add(id_keys(column))
        return keys

    def _lookup_flushed(self, event_ids: list[str]) -> dict[str, Stored]:
        """Confirm candidate event_ids through each segment's event_id index."""
        found: dict[str, Stored] = {}
        for segment in self._segments:
            for event_id in event_ids:
                rows = read_rows(segment, find_rows(segment, event_id), ["event_id", "seq", "hash"])
                found.update(
                    (r["event_id"], (r["seq"], r["hash"]))
                    for r in rows.values()
                    if r["event_id"] == event_id
                )
        return found

    # -- flushing -----------------------------------------------------------------------------

    def flush(self, wait: bool = True) -> None:
        """Move the WAL's events to a Parquet segment (on a background thread unless ``wait``)."""
        self._join_flusher()
        self._raise_flush_error()
        self._start_flush()
        if wait:
            self._join_flusher()
            self._raise_flush_error()

    def _flush_in_background(self) -> None:
        """After an append: start a flush unless one is running. A failed one is reported by
        the next call, not by this append, whose batch is already durable."""
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._join_flusher()
        if self._flush_error is None:
            try:
                self._start_flush()
            except LedgerError as err:  # e.g. no new WAL file: the next call reports it
                self._flush_error = err

    def _start_flush(self) -> None:
        if not self._pending or self._wal is None:
            return
        # The new WAL file first: if it cannot be made, the current one stays in use.
        try:
            wal = WriteAheadLog(self.layout.wal_file(self._next_seq))
        except OSError as err:
            raise LedgerError(
                f"writer log {self.writer_id}: cannot start a new WAL file ({err}); the events "
                "stay in the current one"
            ) from err
        tables, retiring = self._pending, [*self._retiring, self._wal.path]
        self._wal.close()
        self._wal = wal
        self._inflight, self._inflight_wal = tables, retiring
        self._pending, self._pending_rows, self._retiring = [], 0, []
        self._flusher = threading.Thread(
            target=self._write_segment, args=(tables, retiring), daemon=True
        )
        self._flusher.start()

    def _write_segment(self, tables: list[pa.Table], retiring: list[Path]) -> None:
        first_seq = tables[0].column("seq")[0].as_py()
        last_seq = first_seq + sum(t.num_rows for t in tables) - 1
        try:
            table = pa.concat_tables(tables)
            segment = write_segment(self.layout.segments, table, first_seq)
            self._flushed(segment)
            self._write_head(segment.last_seq, table.column("hash")[-1].as_py())
            for path in retiring:
                path.unlink(missing_ok=True)  # an earlier, failed attempt may have got this far
            fsync_dir(self.layout.wal_dir)
            self._inflight_wal = []
            self._compact()
        except BaseException as err:  # kept for the appender: the events are safe in the WAL
            final = self.layout.segments / segment_name(first_seq, last_seq)
            if self._inflight and final.exists():  # renamed into place before the failure
                self._flushed(SegmentFile(final, first_seq, last_seq))
            self._flush_error = err

    def _flushed(self, segment: SegmentFile) -> None:
        """The in-flight events are in ``segment`` now: it replaces their tables, at once."""
        with self._state:
            self._segments.append(segment)
            self._inflight = []

    def _join_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def _raise_flush_error(self) -> None:
        if self._flush_error is not None:
            # The failed flush's events are still in their WAL files: they are pending again, so
            # the next flush writes them (and duplicates of them are still found).
            self._pending = [*self._inflight, *self._pending]
            self._pending_rows += sum(table.num_rows for table in self._inflight)
            self._retiring = [*self._inflight_wal, *self._retiring]
            self._inflight, self._inflight_wal = [], []
            error, self._flush_error = self._flush_error, None
            raise LedgerError(f"flushing writer log {self.writer_id} failed: {error}") from error

    def _write_head(self, seq: int, digest: bytes) -> None:
        write_atomically(self.layout.head, orjson.dumps({"seq": seq, "hash": digest.hex()}))

    def _compact(self) -> None:
        """Merge a run of small trailing segments into one, crash-safely (journal first)."""
        if self.layout.compaction_journal.exists():  # one that failed part way: finish it first
            with self._state:
                self._finish_compaction()
                self._segments = list_segments(self.layout.segments)
        small: list[SegmentFile] = []
        for segment in reversed(self._segments):
            if segment.rows >= SMALL_SEGMENT_ROWS:
                break
            small.insert(0, segment)
        if len(small) < COMPACT_AT:
            return
        table = pa.concat_tables([read_segment(s) for s in small])
        journal = self.layout.compaction_journal
        plan = {
            "merged": f"{small[0].first_seq:020d}-{small[-1].last_seq:020d}.parquet",
            "sources": [s.path.name for s in small],
        }
        write_atomically(journal, orjson.dumps(plan))
        merged = write_segment(self.layout.segments, table, small[0].first_seq)
        with self._state:
            for segment in small:
                _remove_segment(segment.path)
            fsync_dir(self.layout.segments)
            self._segments = [*self._segments[: len(self._segments) - len(small)], merged]
        journal.unlink()
        fsync_dir(self.layout.directory)

    def _abandon(self) -> None:
        """Release the log without flushing: what is staged is also in the WAL, which recovery
        replays, while a flush would retire WAL files the staged tables do not fully cover."""
        self._join_flusher()
        self._stop_wal_writer()
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        os.close(self._lock_fd)

    def close(self) -> None:
        """Flush and release the writer log's lock."""
        if self._wal is None:
            return
        try:
            self.flush(wait=True)
        finally:
            self._join_flusher()
            self._stop_wal_writer()
            self._wal.close()
            if self._wal.length == 0:
                self._wal.path.unlink(missing_ok=True)
            self._wal = None
            os.close(self._lock_fd)


def _remove_segment(path: Path) -> None:
    """Delete a segment and its derived event_id index."""
    path.unlink(missing_ok=True)
    index_path(path).unlink(missing_ok=True)


_ASSIGNED_NAMES = [n for n in SEGMENT_SCHEMA.names if n not in HASH_COLUMNS]
_ASSIGNED_SCHEMA = pa.schema([SEGMENT_SCHEMA.field(n) for n in _ASSIGNED_NAMES])


def _assigned(client: pa.Table, writer_id: str, first_seq: int, observed_micros: int) -> pa.Table:
    """New events' client columns plus the ledger's own: every field the canonical bytes cover."""
    count = client.num_rows
    assigned = {
        "writer_id": pa.repeat(pa.scalar(writer_id, pa.string()), count),
        "seq": pa.array(np.arange(first_seq, first_seq + count, dtype=np.int64)),
        "observed_time": pa.repeat(
            pa.scalar(observed_micros, SEGMENT_SCHEMA.field("observed_time").type), count
        ),
    }
    columns = [assigned[n] if n in assigned else client.column(n) for n in _ASSIGNED_NAMES]
    return pa.Table.from_arrays(columns, schema=_ASSIGNED_SCHEMA)


def _with_hashes(table: pa.Table, hashes: tuple[np.ndarray, ...]) -> pa.Table:
    """The segment rows: canonical columns plus prev_hash, leaf_hash and hash."""
    for name, values in zip(HASH_COLUMNS, hashes, strict=True):
        data = pa.py_buffer(np.ascontiguousarray(values).tobytes())
        column = pa.Array.from_buffers(pa.binary(32), len(values), [None, data])
        table = table.append_column(SEGMENT_SCHEMA.field(name), column)
    return table
