"""Client records to stored columns and canonical bytes, in one compiled pass over orjson's text.

orjson serialises a batch once, with sorted keys; a loop compiled by numba then reads that text,
accepting it only when every record is valid *and* already RFC 8785 canonical (so the ledger's own
members can be spliced into each record's text to make its canonical bytes), and records where each
value lies so the stored Arrow columns are gathered from the same text. The loop checks the text
itself (grammar, UTF-8, escapes, key order, number forms) rather than trusting how it was made.
Anything it does not accept goes to the record-by-record validator, which names each problem or
normalises the values; the normalised batch then passes here.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .compiled import scratch_buffer
from .rebuild import Chained, chained
from .schema import CLIENT_FIELDS, SEGMENT_SCHEMA
from .textscan import (
    ALL_FIELDS,
    ATTRS,
    BOOL,
    FIELD_INDEX,
    FIELDS,
    INT,
    KINDS,
    LIST,
    MORE_ITEMS,
    REFUSED,
    TABLES,
    TIME,
    gather_columns,
    parse_records,
    parse_sent_slices,
    splice,
)

__all__ = [
    "SPLIT_ROWS",
    "Gathering",
    "ParsedBatch",
    "Spliced",
    "parse_batch",
    "parse_serialised",
    "slice_cuts",
    "worker",
]

# What the ledger adds to a record's text, at most: ,"observed_time":"…" (46 bytes), ,"seq":…
# (27), a newline; writer_id's member is counted on its own.
_ADDED_BYTES = 80


@dataclass(frozen=True)
class ParsedBatch:
    """A valid batch in canonical form: orjson's text of it and where each value lies in it."""

    text: np.ndarray  # uint8: a JSON array of the records, keys sorted
    bounds: np.ndarray  # (rows, 2): where each record's object starts and ends
    inserts: np.ndarray  # (rows, 3): where observed_time, seq and writer_id go in it
    found: _Found  # where each value lies

    @functools.cached_property
    def columns(self) -> pa.Table:
        """The client columns (attrs as its canonical text)."""
        gathering = self.gathering()
        gathering.fill()
        return gathering.table()

    def gathering(self) -> Gathering:
        """Buffers for the client columns, to fill on any thread (see ``Gathering``)."""
        return self.found.plan(ALL_FIELDS)

    def column(self, name: str) -> pa.Array:
        """One column, gathered alone (the writer needs event_ids before the rest)."""
        gathering = self.found.plan(np.array([FIELD_INDEX[name]], np.int64))
        gathering.fill()
        return gathering.arrays()[0]

    def chain(
        self,
        positions: np.ndarray,
        writer_id: str,
        first_seq: int,
        observed_micros: int,
        prev: bytes,
    ) -> Chained:
        """The chosen records' canonical bytes with the ledger's members, hashed in a chain."""
        rows = self.splice(positions, writer_id, first_seq, observed_micros)
        return chained(rows.lines, rows.offsets, prev, worker())

    def splice(
        self, positions: np.ndarray, writer_id: str, first_seq: int, observed_micros: int
    ) -> Spliced:
        """The chosen records' canonical bytes: their text with the ledger's members added."""
        rows = len(positions)
        member = b',"writer_id":' + orjson.dumps(writer_id)
        bounds, inserts = self.bounds[positions], self.inserts[positions]
        size = int((bounds[:, 1] - bounds[:, 0]).sum()) + rows * (len(member) + _ADDED_BYTES)
        out = scratch_buffer(size)
        offsets = np.empty(rows + 1, np.int64)
        splice(
            self.text,
            bounds,
            inserts,
            np.frombuffer(member, np.uint8),
            first_seq,
            observed_micros,
            out,
            offsets,
        )
        return Spliced(out, offsets)


@dataclass(frozen=True)
class Spliced:
    """New rows' canonical bytes, each followed by a newline: row i is
    ``lines[offsets[i]:offsets[i + 1] - 1]``. ``lines`` is this thread's scratch buffer."""

    lines: np.ndarray
    offsets: np.ndarray

    @property
    def payload(self) -> memoryview:
        """The rows joined by newlines (a WAL frame's payload), without a copy."""
        return self.lines.data[: max(int(self.offsets[-1]) - 1, 0)]


def parse_batch(text: bytes, rows: int, trusted_attrs: bool = False) -> ParsedBatch | None:
    """Parse orjson's sorted-key text of ``rows`` records; None unless all are valid and canonical.

    ``trusted_attrs``: each attrs text was made by the canonical JSON serialiser (floats, nulls and
    any member names allowed), so only its JSON grammar, depth and size are checked.
    """
    slices = _Slices(np.array([rows], np.int64), trusted_attrs)
    slices.add(text)
    slices.take_from_back()
    return slices.parsed()


# A batch of this many records or more is serialised in slices, each parsed on one of two threads
# while the next ones are serialised (orjson holds the GIL; the compiled parse does not).
SPLIT_ROWS = 2048
_SLICES = 32  # at most
_MIN_SLICE_ROWS = 256  # each slice costs some Python
_AHEAD = 2  # slices sent to the worker and not yet parsed, at most: enough to keep it busy
_SLICE_TOKEN, _NO_MORE_SLICES = b"\x01", b"\x00"  # what the worker reads from its pipe
# How long the serialising thread waits for the worker to start (it may be busy elsewhere).
_HAND_OVER_SECONDS = 0.0005
_PENDING = -1  # a slice's outcome until it is parsed


def slice_cuts(rows: int) -> list[int]:
    """Where a batch of ``rows`` records is cut into the slices that are serialised one by one."""
    if rows < max(SPLIT_ROWS, 2):
        return [0, rows]
    slices = max(2, min(_SLICES, rows // _MIN_SLICE_ROWS))
    return sorted({rows * k // slices for k in range(slices + 1)})


def parse_serialised(
    records: Sequence[Any],
    serialise: Callable[[Sequence[Any]], bytes | None],
    check_size: Callable[[int], None],
) -> ParsedBatch | None:
    """Serialise a batch slice by slice and parse it (see ``parse_batch``); None unless every
    record is valid and canonical.

    ``serialise`` gives orjson's sorted-key text of a slice, or None when it has none.
    ``check_size`` gets the size of the whole batch's text (it raises if that is too large),
    unless a slice has no text. Each slice is parsed while the next ones are serialised: the
    worker parses the slices this thread sends it, from the front, and this thread, once it has
    serialised them all, parses the rest from the back (see ``_Slices``).
    """
    cuts = slice_cuts(len(records))
    slices = _Slices(np.diff(cuts), trusted_attrs=False)
    if len(cuts) > 2:
        slices.share()
    try:
        size = 0
        for first, last in itertools.pairwise(cuts):
            text = serialise(records[first:last])
            if text is None:
                slices.stop()
                break
            size += len(text)
            if slices.refused:  # the rest is serialised only for its size, which is checked
                slices.stop()
            else:
                slices.add(text)
        else:
            # Each slice's text is an array of its own: one array's text would be that much less.
            check_size(size - (len(cuts) - 2))
        slices.take_from_back()
        return slices.parsed()
    except BaseException:
        slices.stop()
        raise
    finally:  # on every path, the worker's share ends before the batch's arrays are let go
        slices.unshare()


class _Slices:
    """The slices of one batch's text, parsed as they are added, on two threads at once.

    The worker parses the slices sent to it, from the front, in order: the adding thread keeps it
    a slice or two ahead, and once all are added parses the rest from the back. The worker waits
    for each slice on a pipe, inside the compiled loop, so it never needs the GIL (which orjson
    holds while the adding thread serialises). While it waits it is busy with this batch: other
    work given to it (another writer's, in the same process) waits too. A slice refused on either
    thread ends the parse.
    """

    def __init__(self, counts: np.ndarray, trusted_attrs: bool) -> None:
        rows, fields = int(counts.sum()), len(FIELDS)
        self._counts = counts
        self._trusted_attrs = trusted_attrs
        self._row_starts = np.concatenate(([0], np.cumsum(counts)))
        self._text = np.empty(0, np.uint8)
        self._text_starts = np.zeros(len(counts) + 1, np.int64)
        self._bounds = _work_array((rows, 2), np.int64)
        self._inserts = _work_array((rows, 3), np.int64)
        self._starts = _work_array((rows, fields), np.int64)
        self._ends = _work_array((rows, fields), np.int64)
        self._values = _work_array((rows, fields), np.int64)
        self._present = _work_array((rows, fields), np.uint8)
        self._escaped = np.zeros((len(counts), fields), np.uint8)
        self._lengths = np.zeros((len(counts), fields), np.int64)
        self._outcomes = np.full(len(counts), _PENDING, np.int64)
        self._make_items(4 * counts + 64)
        self._added = 0
        self._sent = 0  # slices [0, sent) are the worker's to parse
        self._back = len(counts)  # slices [back, count) are this thread's
        self._stopped = False
        self._shared = False  # the worker takes a share
        self._sharing: _Sharing | None = None  # the worker's share, while it runs

    @property
    def size(self) -> int:
        """The bytes of text added so far."""
        return int(self._text_starts[self._added])

    @property
    def refused(self) -> bool:
        """Whether a slice parsed so far was refused."""
        return bool((self._outcomes == REFUSED).any())

    def share(self) -> None:
        """Have the worker parse slices from now on, as they are added."""
        self._shared = True
        if self._added:
            self._start_worker()

    def unshare(self) -> None:
        """End the worker's share, once it has parsed what it was sent (see ``_stop_worker``)."""
        self._shared = False
        self._stop_worker()

    def add(self, text: bytes) -> None:
        """Add the next slice's text, for either thread to parse."""
        added = self._added
        start, end = self.size, self.size + len(text)
        if len(self._counts) == 1:
            self._text = np.frombuffer(text, np.uint8)
        else:
            if end > len(self._text):
                self._grow(end, added + 1)
            self._text[start:end] = np.frombuffer(text, np.uint8)
        self._text_starts[added + 1] = end
        self._added = added + 1
        if self._shared and self._sharing is None and not self._stopped:
            self._start_worker()
        if self._sharing is not None:
            self._send(self._sharing)

    def stop(self) -> None:
        """Parse no more slices: the batch is not taken."""
        self._stopped = True

    def take_from_back(self) -> None:
        """Parse the slices not sent to the worker, from the back, keeping the worker busy; then
        end its share (once all are added, or the parse stopped)."""
        while not (self._stopped or self.refused):
            if self._sharing is not None:
                self._send(self._sharing)
            if self._back <= self._sent:
                break
            self._back -= 1
            self._parse(self._back)
        self.unshare()

    def parsed(self) -> ParsedBatch | None:
        """The parsed batch, or None if it was refused or stopped."""
        if self._stopped or self.refused:
            return None
        if (self._outcomes == MORE_ITEMS).any():
            self._parse_again()
            if self._stopped or self.refused:
                return None
        found = _Found(
            self._text[: self.size],
            self._starts,
            self._ends,
            self._values,
            self._present,
            self._escaped.max(axis=0),
            self._lengths.sum(axis=0),
            self._item_starts,
            self._item_ends,
        )
        return ParsedBatch(found.text, self._bounds, self._inserts, found)

    def _start_worker(self) -> None:
        """Start the worker on the slices from the next one not sent, in the text as it is."""
        try:
            read_end, write_end = os.pipe()
        except OSError:  # e.g. no file descriptors left: parse on this thread alone
            self._shared = False
            return
        done, started = np.full(1, self._sent, np.int64), threading.Event()
        try:
            parsing = worker().submit(self._parse_sent, read_end, done, started, self._text)
        except BaseException as err:
            os.close(read_end)
            os.close(write_end)
            if not isinstance(err, RuntimeError):
                raise
            self._shared = False  # it takes no new work (the interpreter is exiting)
            return
        self._sharing = sharing = _Sharing(write_end, read_end, done, parsing)
        self._send(sharing)
        started.wait(_HAND_OVER_SECONDS)  # it needs the GIL to start: wait while it does

    def _send(self, sharing: _Sharing) -> None:
        """Send the worker added slices, to keep it up to _AHEAD slices ahead of its parse."""
        ahead = self._sent - int(sharing.done[0])
        count = min(self._added, self._back) - self._sent
        count = min(count, _AHEAD - ahead)
        if count > 0:
            os.write(sharing.write_end, _SLICE_TOKEN * count)
            self._sent += count

    def _stop_worker(self) -> None:
        """Send the worker the end of its slices and wait until it stops; then parse here the
        slices it was sent and did not parse (it stopped early, or never started, being busy
        elsewhere). Its pipe is closed on every path."""
        sharing, self._sharing = self._sharing, None
        if sharing is None:
            return
        try:  # the end: not only the write end's close, as a forked child may hold a copy of it
            os.write(sharing.write_end, _NO_MORE_SLICES)
        finally:
            os.close(sharing.write_end)
            sharing.parsing.add_done_callback(lambda _: os.close(sharing.read_end))
        failure = None if sharing.parsing.cancel() else sharing.parsing.exception()
        if failure is not None:
            raise failure
        for slice_ in range(int(sharing.done[0]), self._sent):
            if self._stopped or self.refused:
                break
            self._parse(slice_)

    def _parse_sent(
        self, read_end: int, done: np.ndarray, started: threading.Event, text: np.ndarray
    ) -> None:
        """On the worker: parse each slice sent, until the end is sent (see parse_sent_slices)."""
        started.set()
        parse_sent_slices(read_end, np.zeros(1, np.uint8), done, text, *self._layout)

    def _parse(self, slice_: int) -> None:
        outcome = parse_records(self._text, slice_, *self._layout)
        if outcome == REFUSED:
            self.stop()

    def _grow(self, needed: int, slices: int) -> None:
        """Room for at least ``needed`` bytes, and half as much again as the slices so far
        suggest. The worker parses the text it was given: it starts again with the new one."""
        self._stop_worker()
        rows_so_far = int(self._row_starts[slices])
        expected = needed * int(self._row_starts[-1]) // max(rows_so_far, 1)
        grown = _work_array((max(needed, expected + expected // 2 + 65536),), np.uint8)
        start = self.size
        grown[:start] = self._text[:start]
        self._text = grown

    def _make_items(self, capacities: np.ndarray) -> None:
        self._item_bases = np.concatenate(([0], np.cumsum(capacities)))
        self._item_starts = _work_array((int(self._item_bases[-1]),), np.int64)
        self._item_ends = _work_array((int(self._item_bases[-1]),), np.int64)
        # What the compiled parse takes after the text and the slice (see parse_records): where
        # the slices are, what it writes per slice, the tables, and what it writes per row.
        self._layout = (
            self._text_starts,
            self._row_starts,
            self._item_bases,
            self._escaped,
            self._lengths,
            self._outcomes,
            *TABLES,
            self._trusted_attrs,
            self._bounds,
            self._inserts,
            self._starts,
            self._ends,
            self._values,
            self._present,
            self._item_starts,
            self._item_ends,
        )

    def _parse_again(self) -> None:
        """Parse every slice again, with room for as many list items as its text could hold."""
        self._make_items(np.diff(self._text_starts) // 3 + 1)  # an item takes at least `"",`
        self._escaped.fill(0)
        self._lengths.fill(0)
        self._outcomes.fill(_PENDING)
        self._sent, self._back = 0, len(self._counts)
        if len(self._counts) > 1:
            self.share()
        self.take_from_back()


@dataclass(frozen=True)
class _Sharing:
    """The worker's share of a parse: the pipe that sends it slices, and how far it has got."""

    write_end: int  # a byte a slice, then one that ends them
    read_end: int
    done: np.ndarray  # (1,) int64: the worker has parsed every slice before this one
    parsing: Future[None]


_WORKER: list[ThreadPoolExecutor] = []
_WORKER_LOCK = threading.Lock()


def worker() -> ThreadPoolExecutor:
    """The thread that takes a share of the compiled work (parsing, gathering, hashing)."""
    with _WORKER_LOCK:
        if not _WORKER:
            _WORKER.append(ThreadPoolExecutor(1, thread_name_prefix="chainsight-ingest"))
        return _WORKER[0]


# The parse's work arrays take several megabytes a batch. Fresh ones cost a page fault for each
# 4 KiB page the parse touches (about 3 ms a batch of 10,000 events, on the parsing threads), and
# the parse writes each row afresh anyway (absent fields as zeros). So their memory is kept and
# handed out again once nothing else refers to it: a parsed batch still alive, or any view of its
# arrays, keeps its memory from being reused.
_SPARE: list[np.ndarray] = []
_SPARE_LOCK = threading.Lock()
_MAX_SPARE = 12
_MAX_SPARE_BYTES = 16 << 20  # batches of up to ~57,000 events; at most 192 MiB kept
_ONLY_HERE = 2  # a spare buffer's references when only this cache holds it: the list's, the call's


def _work_array(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An array for the parse to fill: from a spare buffer nothing else refers to, or new."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    chosen = None
    if size <= _MAX_SPARE_BYTES:
        with _SPARE_LOCK:
            free = [i for i in range(len(_SPARE)) if sys.getrefcount(_SPARE[i]) == _ONLY_HERE]
            fitting = [i for i in free if len(_SPARE[i]) >= size]
            if fitting:
                chosen = _SPARE[fitting[0]]
            else:
                chosen = np.empty(max(size, 1), np.uint8)
                if free:  # too small: a spare that fits takes its place
                    _SPARE[free[0]] = chosen
                elif len(_SPARE) < _MAX_SPARE:
                    _SPARE.append(chosen)
    if chosen is None:
        return np.empty(shape, dtype)
    array: np.ndarray = chosen[:size].view(dtype).reshape(shape)
    return array


def _forget_worker() -> None:
    """In a forked child: the parent's thread does not exist there, so make a new one on use."""
    global _WORKER_LOCK, _SPARE_LOCK  # noqa: PLW0603 - the parent's may have been held at the fork
    _WORKER_LOCK = threading.Lock()
    _SPARE_LOCK = threading.Lock()
    _WORKER.clear()


os.register_at_fork(after_in_child=_forget_worker)


@dataclass(frozen=True)
class _Copy:
    """One compiled copy: the values of ``fields`` (columns of starts and ends) into ``data``."""

    starts: np.ndarray
    ends: np.ndarray
    fields: np.ndarray
    unescape: np.ndarray
    offsets: np.ndarray  # (fields, values + 1) int32
    data: np.ndarray

    @classmethod
    def of(
        cls,
        text_fields: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        unescape: np.ndarray,
        size: int,
    ) -> _Copy:
        offsets = np.empty((len(text_fields), len(starts) + 1), np.int32)
        return cls(starts, ends, text_fields, unescape, offsets, np.empty(size, np.uint8))

    def run(self, text: np.ndarray) -> None:
        gather_columns(
            text, self.starts, self.ends, self.fields, self.unescape, self.offsets, self.data
        )

    def strings(self, position: int, validity: pa.Buffer | None = None, nulls: int = 0) -> pa.Array:
        buffers = [validity, pa.py_buffer(self.offsets[position]), pa.py_buffer(self.data)]
        return pa.Array.from_buffers(pa.string(), len(self.starts), buffers, nulls)


@dataclass(frozen=True)
class Gathering:
    """Client columns being gathered: ``fill`` runs the copies (compiled, without the GIL, so on
    any thread), then ``table`` or ``arrays`` wrap the filled buffers as Arrow."""

    found: _Found
    fields: np.ndarray  # which fields, by index into FIELDS
    texts: _Copy  # the text fields among them (attrs included), sharing one buffer
    lists: dict[int, tuple[_Copy, np.ndarray]]  # per list field: its items, and list offsets
    validity: np.ndarray  # (len(fields), bytes): each field's validity bits
    nulls: np.ndarray  # (len(fields),)

    def start(self) -> Future[None]:
        """``fill`` on the worker thread."""
        return worker().submit(self.fill)

    def fill(self) -> None:
        """Copy every value into the column buffers."""
        self.texts.run(self.found.text)
        for items, _ in self.lists.values():
            items.run(self.found.text)

    def arrays(self) -> list[pa.Array]:
        """The columns of ``fields``, in that order."""
        rows = len(self.found.present)
        text_positions = {int(f): p for p, f in enumerate(self.texts.fields)}
        arrays = []
        for position, index in enumerate(self.fields):
            nulls = int(self.nulls[position])
            bits = pa.py_buffer(self.validity[position]) if nulls else None
            arrow_type = SEGMENT_SCHEMA.field(FIELDS[index].name).type
            kind = KINDS[index]
            if kind in (TIME, INT):
                values = pa.py_buffer(self.found.values[:, index].copy())
                arrays.append(pa.Array.from_buffers(arrow_type, rows, [bits, values], nulls))
            elif kind == BOOL:
                flags = np.packbits(self.found.values[:, index].astype(np.uint8), bitorder="little")
                arrays.append(
                    pa.Array.from_buffers(arrow_type, rows, [bits, pa.py_buffer(flags)], nulls)
                )
            elif kind == LIST:
                items, list_offsets = self.lists[int(index)]
                arrays.append(
                    pa.Array.from_buffers(
                        arrow_type,
                        rows,
                        [bits, pa.py_buffer(list_offsets)],
                        nulls,
                        children=[items.strings(0)],
                    )
                )
            else:
                arrays.append(self.texts.strings(text_positions[int(index)], bits, nulls))
        return arrays

    def table(self) -> pa.Table:
        """The client columns, in schema order."""
        by_name = dict(zip((FIELDS[i].name for i in self.fields), self.arrays(), strict=True))
        return pa.table(
            [by_name[f.name] for f in CLIENT_FIELDS], names=[f.name for f in CLIENT_FIELDS]
        )


@dataclass(frozen=True)
class _Found:
    """The parse's findings, from which each client column is gathered."""

    text: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    present: np.ndarray
    escaped: np.ndarray
    lengths: np.ndarray  # per field, the bytes of its values' text
    item_starts: np.ndarray
    item_ends: np.ndarray

    def plan(self, fields: np.ndarray) -> Gathering:
        """Allocate the buffers of the given fields' columns (on the calling thread)."""
        rows = len(self.present)
        present = self.present[:, fields].T
        nulls = rows - present.sum(axis=1, dtype=np.int64)
        validity = np.ascontiguousarray(np.packbits(present, axis=1, bitorder="little"))
        kinds = KINDS[fields]
        text_fields = fields[~np.isin(kinds, (TIME, INT, BOOL, LIST))]
        unescape = self.escaped[text_fields] & (KINDS[text_fields] != ATTRS)  # attrs: JSON
        size = int(self.lengths[text_fields].sum())
        texts = _Copy.of(text_fields, self.starts, self.ends, unescape, size)
        lists = {}
        for index in fields[kinds == LIST]:
            first, last = self.starts[:, index], self.ends[:, index]  # a range of items
            counts = last - first
            list_offsets = np.zeros(rows + 1, np.int32)
            np.cumsum(counts, out=list_offsets[1:])
            # Each row's items are contiguous in the item arrays: index them in row order.
            items = np.arange(int(list_offsets[-1])) + np.repeat(first - list_offsets[:-1], counts)
            item_copy = _Copy.of(
                np.zeros(1, np.int64),
                self.item_starts[items][:, None],
                self.item_ends[items][:, None],
                self.escaped[index : index + 1],
                int(self.lengths[index]),
            )
            lists[int(index)] = (item_copy, list_offsets)
        return Gathering(self, fields, texts, lists, validity, nulls)
