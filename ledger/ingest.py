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
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

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
    splice,
)

__all__ = ["Gathering", "ParsedBatch", "Spliced", "parse_batch", "parse_parts", "worker"]

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
    return parse_parts([(text, rows)], trusted_attrs)


def parse_parts(
    parts: Sequence[tuple[bytes, int]], trusted_attrs: bool = False
) -> ParsedBatch | None:
    """Parse orjson's texts of consecutive slices of a batch as one batch (see ``parse_batch``).

    The slices are parsed at once, each on its own thread (the compiled loop releases the GIL).
    """
    texts = [text for text, _ in parts]
    if len(texts) == 1:
        data = np.frombuffer(texts[0], np.uint8)
    else:  # one text, in memory already mapped (a new join's pages fault as they are written)
        data = _work_array((sum(map(len, texts)),), np.uint8)
        for text, start in zip(texts, np.cumsum([0, *map(len, texts)]).tolist(), strict=False):
            data[start : start + len(text)] = np.frombuffer(text, np.uint8)
    counts = [count for _, count in parts]
    rows = sum(counts)
    fields = len(FIELDS)
    starts = _work_array((rows, fields), np.int64, zeroed=True)
    ends = _work_array((rows, fields), np.int64, zeroed=True)
    values = _work_array((rows, fields), np.int64, zeroed=True)
    present = _work_array((rows, fields), np.uint8, zeroed=True)
    escaped = np.zeros((len(parts), fields), np.uint8)
    lengths = np.zeros((len(parts), fields), np.int64)
    bounds = _work_array((rows, 2), np.int64)
    inserts = _work_array((rows, 3), np.int64)
    text_starts = np.cumsum([0, *map(len, texts)])
    row_starts = np.cumsum([0, *counts])
    capacities = [4 * count + 64 for count in counts]
    while True:
        item_bases = np.cumsum([0, *capacities])
        item_starts = _work_array((int(item_bases[-1]),), np.int64)
        item_ends = _work_array((int(item_bases[-1]),), np.int64)

        def parse(
            part: int,
            item_bases: np.ndarray = item_bases,
            item_starts: np.ndarray = item_starts,
            item_ends: np.ndarray = item_ends,
        ) -> int:
            return int(
                parse_records(
                    data,
                    text_starts[part],
                    text_starts[part + 1],
                    row_starts[part],
                    counts[part],
                    item_bases[part],
                    item_bases[part + 1],
                    *TABLES,
                    trusted_attrs,
                    bounds,
                    inserts,
                    starts,
                    ends,
                    values,
                    present,
                    escaped[part],
                    lengths[part],
                    item_starts,
                    item_ends,
                )
            )

        others = [worker().submit(parse, part) for part in range(1, len(parts))]
        outcomes = [parse(0), *(other.result() for other in others)]
        if REFUSED in outcomes:
            return None
        if MORE_ITEMS not in outcomes:
            break
        capacities = [len(text) // 3 + 1 for text in texts]  # an item takes at least `"",`
        present[:] = 0
        escaped[:] = 0
        lengths[:] = 0
    found = _Found(
        data,
        starts,
        ends,
        values,
        present,
        escaped.max(axis=0),
        lengths.sum(axis=0),
        item_starts,
        item_ends,
    )
    return ParsedBatch(data, bounds, inserts, found)


_WORKER: list[ThreadPoolExecutor] = []
_WORKER_LOCK = threading.Lock()


def worker() -> ThreadPoolExecutor:
    """The thread that takes a share of the compiled work (parsing, gathering, hashing)."""
    with _WORKER_LOCK:
        if not _WORKER:
            _WORKER.append(ThreadPoolExecutor(1, thread_name_prefix="chainsight-ingest"))
        return _WORKER[0]


# The parse's work arrays take several megabytes a batch. Fresh ones cost a page fault for each
# 4 KiB page the parse touches (about 3 ms a batch of 10,000 events, on the parsing threads);
# zeroing arrays already mapped costs about a twentieth of that. So their memory is kept and handed
# out again once nothing else refers to it: a parsed batch still alive, or any view of its arrays,
# keeps its memory from being reused.
_SPARE: list[np.ndarray] = []
_SPARE_LOCK = threading.Lock()
_MAX_SPARE = 12
_MAX_SPARE_BYTES = 16 << 20  # batches of up to ~57,000 events; at most 192 MiB kept
_ONLY_HERE = 2  # a spare buffer's references when only this cache holds it: the list's, the call's


def _work_array(shape: tuple[int, ...], dtype: type, zeroed: bool = False) -> np.ndarray:
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
        return np.zeros(shape, dtype) if zeroed else np.empty(shape, dtype)
    array: np.ndarray = chosen[:size].view(dtype).reshape(shape)
    if zeroed:
        array.fill(0)
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
