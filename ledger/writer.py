"""A writer log's appender: one live process, a WAL fsynced per batch, Parquet segments.

Appends go to the current WAL file. A flush rotates to a fresh WAL file and writes the old file's
events to a Parquet segment on a background thread (Arrow releases the GIL while it encodes), then
deletes the old WAL file; a crash at any point leaves either the WAL file or the segment, and
recovery replays whatever the segments lack.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from .batch import SERIALISE_OPTIONS, CheckedBatch, check_batch, normalise
from .canonical import format_micros
from .durable import fsync_dir, write_atomically
from .errors import CorruptLedgerError, LedgerError, WriterBusyError
from .hashing import ZERO_HASH
from .idindex import IdIndex, id_keys
from .idlookup import find_rows, index_path
from .layout import WriterLayout, new_writer_id, scan_wal_files, table_from_lines, try_lock
from .receipts import Receipts
from .schema import SEGMENT_SCHEMA
from .segments import SegmentFile, list_segments, read_rows, read_segment, write_segment
from .wal import WriteAheadLog

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
        self._index: IdIndex | None = None
        self._next_seq = 0
        self._last_hash = ZERO_HASH
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_ids: dict[str, Stored] = {}
        self._retiring: list[Path] = []  # WAL files whose events the pending tables hold
        self._inflight_ids: dict[str, Stored] = {}
        self._flusher: threading.Thread | None = None
        self._flush_error: BaseException | None = None
        self._wal: WriteAheadLog | None = None
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
                self._stage(
                    table,
                    table.column("event_id").to_pylist(),
                    table.column("seq").to_pylist(),
                    table.column("hash").to_pylist(),
                )
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
        checked = checked or check_batch(records, locations)
        try:
            return self._append_checked(checked)
        except TypeError:
            # orjson met a value Arrow accepted that JSON has no form for (bytes, str subclasses),
            # or a null member: the record-by-record validator names or normalises it.
            if checked.attrs_is_text:
                raise
            return self._append_checked(normalise(records, locations))

    def _append_checked(self, checked: CheckedBatch) -> Receipts:
        if self._wal is None:
            raise LedgerError("the writer log is closed")
        event_ids: list[str] = checked.columns.column("event_id").to_pylist()
        new_positions, stored = self._new_positions(event_ids)
        first_seq = self._next_seq
        observed_micros = time.time_ns() // 1000
        lines, leaves, chained = _chain(
            [checked.records[p] for p in new_positions],
            [checked.attrs_texts[p] for p in new_positions],
            {"writer_id": self.writer_id, "observed_time": format_micros(observed_micros)},
            first_seq,
            self._last_hash,
            checked.attrs_is_text,
        )
        # Each record's receipt: its new place, or the place its event_id already had.
        seqs = range(first_seq, first_seq + len(lines))
        placed = dict(zip(new_positions, zip(seqs, chained, strict=True), strict=True))
        known = {**stored, **{event_ids[p]: placed[p] for p in new_positions}}
        receipts = [placed.get(p) or known[event_ids[p]] for p in range(len(event_ids))]
        if lines:
            columns = checked.columns
            if len(new_positions) != len(event_ids):
                columns = columns.take(pa.array(new_positions, pa.int64()))
            prev_hashes = [self._last_hash, *chained[:-1]]
            table = _segment_table(
                columns, self.writer_id, first_seq, observed_micros, (prev_hashes, leaves, chained)
            )
            self._wal.append(first_seq, lines)  # durable from here on: acknowledge
            new_ids = [event_ids[p] for p in new_positions]
            self._stage(table, new_ids, range(first_seq, first_seq + len(lines)), chained)
            self._last_hash = chained[-1]
            self._next_seq = first_seq + len(lines)
            if self._pending_rows >= FLUSH_ROWS or self._wal.length >= FLUSH_WAL_BYTES:
                self.flush(wait=False)
        return Receipts(
            self.writer_id,
            event_ids,
            [seq for seq, _ in receipts],
            [digest for _, digest in receipts],
            [p not in placed for p in range(len(event_ids))],
        )

    def _new_positions(self, event_ids: list[str]) -> tuple[list[int], dict[str, Stored]]:
        """Which records are new (first of their event_id), and the receipts of the others."""
        stored = self._find_stored(event_ids)
        if not stored and len(set(event_ids)) == len(event_ids):
            return list(range(len(event_ids))), stored  # the common case: all new
        positions: list[int] = []
        seen: set[str] = set()
        for position, event_id in enumerate(event_ids):
            if event_id not in stored and event_id not in seen:
                positions.append(position)
                seen.add(event_id)
        return positions, stored

    def _stage(
        self, table: pa.Table, ids: list[str], seqs: Sequence[int], hashes: Sequence[bytes]
    ) -> None:
        self._pending_ids.update(zip(ids, zip(seqs, hashes, strict=True), strict=True))
        self._pending.append(table)
        self._pending_rows += table.num_rows

    def _find_stored(self, event_ids: list[str]) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        for known in (self._pending_ids, self._inflight_ids):
            if known:
                found.update((i, known[i]) for i in event_ids if i in known)
        with self._state:
            if not self._segments:
                return found
            if self._index is None:
                self._index = self._build_index()
            maybe = self._index.maybe_contains(id_keys(event_ids))
            candidates = [event_ids[i] for i in maybe.nonzero()[0] if event_ids[i] not in found]
            if candidates:
                found.update(self._lookup_flushed(candidates))
        return found

    def _build_index(self) -> IdIndex:
        index = IdIndex()
        for segment in self._segments:
            column = read_segment(segment, ["event_id"]).column("event_id").combine_chunks()
            index.add(id_keys(pl.Series(column)))
        return index

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
        if self._pending and self._wal is not None:
            tables, retiring = self._pending, [*self._retiring, self._wal.path]
            self._wal.close()
            self._wal = WriteAheadLog(self.layout.wal_file(self._next_seq))
            self._inflight_ids = self._pending_ids
            self._pending, self._pending_rows, self._pending_ids, self._retiring = [], 0, {}, []
            self._flusher = threading.Thread(
                target=self._write_segment, args=(tables, retiring), daemon=True
            )
            self._flusher.start()
        if wait:
            self._join_flusher()
            self._raise_flush_error()

    def _write_segment(self, tables: list[pa.Table], retiring: list[Path]) -> None:
        try:
            table = pa.concat_tables(tables)
            first_seq = table.column("seq")[0].as_py()
            segment = write_segment(self.layout.segments, table, first_seq)
            self._write_head(segment.last_seq, table.column("hash")[-1].as_py())
            for path in retiring:
                path.unlink()
            fsync_dir(self.layout.wal_dir)
            with self._state:
                self._segments.append(segment)
                if self._index is not None:
                    self._index.add(id_keys(table.column("event_id").combine_chunks()))
            self._inflight_ids = {}
            self._compact()
        except BaseException as err:  # kept for the appender: the events are safe in the WAL
            self._flush_error = err

    def _join_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def _raise_flush_error(self) -> None:
        if self._flush_error is not None:
            error, self._flush_error = self._flush_error, None
            raise LedgerError(f"flushing writer log {self.writer_id} failed: {error}") from error

    def _write_head(self, seq: int, digest: bytes) -> None:
        write_atomically(self.layout.head, orjson.dumps({"seq": seq, "hash": digest.hex()}))

    def _compact(self) -> None:
        """Merge a run of small trailing segments into one, crash-safely (journal first)."""
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

    def close(self) -> None:
        """Flush and release the writer log's lock."""
        if self._wal is None:
            return
        try:
            self.flush(wait=True)
        finally:
            self._join_flusher()
            self._wal.close()
            if self._wal.length == 0:
                self._wal.path.unlink(missing_ok=True)
            self._wal = None
            os.close(self._lock_fd)


def _remove_segment(path: Path) -> None:
    """Delete a segment and its derived event_id index."""
    path.unlink(missing_ok=True)
    index_path(path).unlink(missing_ok=True)


def _chain(
    records: Sequence[dict[str, Any]],
    attrs_texts: Sequence[str | None],
    assigned: dict[str, str],
    first_seq: int,
    prev: bytes,
    attrs_is_text: bool,
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Canonical bytes, leaf hashes and chained hashes of new events, in order.

    ``attrs`` goes in as the canonical text the batch check already made, not serialised again.
    """
    lines: list[bytes] = []
    leaves: list[bytes] = []
    chained: list[bytes] = []
    sha256 = hashlib.sha256
    dumps = orjson.dumps
    fragment = orjson.Fragment
    for seq, (record, attrs) in enumerate(zip(records, attrs_texts, strict=True), first_seq):
        row = {**record, **assigned, "seq": seq}
        if attrs is not None:
            row["attrs"] = fragment(attrs)
        canonical = dumps(row, option=SERIALISE_OPTIONS)
        if not attrs_is_text and b'":null' in canonical:
            raise TypeError("a null member")  # nulls mean "absent": normalise the batch
        leaf = sha256(b"\x00" + canonical).digest()
        prev = sha256(prev + leaf).digest()
        lines.append(canonical)
        leaves.append(leaf)
        chained.append(prev)
    return lines, leaves, chained


def _segment_table(
    client: pa.Table,
    writer_id: str,
    first_seq: int,
    observed_micros: int,
    chain: tuple[Sequence[bytes], Sequence[bytes], Sequence[bytes]],
) -> pa.Table:
    """The segment rows of a batch's new events: client columns plus the ledger's own."""
    count = client.num_rows
    prev_hashes, leaves, hashes = chain
    assigned = {
        "writer_id": pa.array([writer_id] * count, pa.string()),
        "seq": pa.array(range(first_seq, first_seq + count), pa.int64()),
        "observed_time": pa.array([observed_micros] * count, pa.int64()).cast(
            SEGMENT_SCHEMA.field("observed_time").type
        ),
        "prev_hash": pa.array(prev_hashes, pa.binary(32)),
        "leaf_hash": pa.array(leaves, pa.binary(32)),
        "hash": pa.array(hashes, pa.binary(32)),
    }
    columns = [
        assigned[name] if name in assigned else client.column(name) for name in SEGMENT_SCHEMA.names
    ]
    return pa.Table.from_arrays(columns, schema=SEGMENT_SCHEMA)
