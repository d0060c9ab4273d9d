"""Each stored row's canonical bytes, leaf hash and chained hash, rebuilt from its typed columns.

Verification hashes what a query reads: the typed columns of a segment are turned back into the
RFC 8785 text the writer hashed, so a change to any stored column changes the recomputed hash.
This runs in a loop compiled by numba straight over the Arrow buffers (about a microsecond a row,
where DuckDB's string functions took over three), and hashes with the OpenSSL library that
Python's hashlib itself uses, called from the compiled loop; where that library cannot be loaded,
hashlib hashes the rebuilt bytes instead. The writer makes its rows' canonical bytes from the
client's own text (``ingest``) and hashes them with ``chained``; ``verify`` rebuilds them from the
stored columns here: two independent ways to the same bytes, which the tests hold to each other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .compiled import (
    day_cache,
    inline,
    jit,
    load_int32,
    load_int64,
    load_word,
    plain_run,
    put_bytes,
    put_bytes_below,
    put_int,
    put_time,
    scratch_buffer,
)
from .hashing import chain_hash
from .schema import CANONICAL_FIELDS, SEGMENT_SCHEMA, Kind

__all__ = [
    "HASH_OK",
    "LINK_OK",
    "ROW_OK",
    "SEQ_OK",
    "WRITER_OK",
    "Chained",
    "Rebuilt",
    "RowCheck",
    "canonical_texts",
    "chained",
    "check_rows",
    "fixed_hashes",
    "rebuild",
]

# How each field's value is written; a field's key text and kind are fixed by the schema.
_TEXT, _TIME, _INT, _BOOL, _RAW, _LIST = range(6)
_KIND_CODES = {
    Kind.TIME: _TIME,
    Kind.INT: _INT,
    Kind.BOOL: _BOOL,
    Kind.ATTRS: _RAW,  # stored as its canonical text already
    Kind.TEXT_LIST: _LIST,
}
_KINDS = np.array([_KIND_CODES.get(f.kind, _TEXT) for f in CANONICAL_FIELDS], np.int64)
_KEY_TEXTS = [f'"{f.name}":'.encode() for f in CANONICAL_FIELDS]
_KEYS = np.frombuffer(b"".join(_KEY_TEXTS), np.uint8)
_KEY_OFFSETS = np.cumsum([0, *map(len, _KEY_TEXTS)], dtype=np.int64)

# RFC 8785 escapes: the short forms, and \u00xx in lower case for the other control characters.
_SHORT_ESCAPES = np.zeros(32, np.uint8)
for _code, _letter in {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r"}.items():
    _SHORT_ESCAPES[_code] = ord(_letter)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_WORDS = np.frombuffer(b"truefalsenull", np.uint8)
_TABLES = (_SHORT_ESCAPES, _HEX_DIGITS, _WORDS)

# The widest a value can be written, per byte of input and per value, to size the output.
_MAX_INT_DIGITS = 20
_TIME_TEXT = len('"2026-01-01T00:00:00.000000Z"')
_ESCAPE_WIDTH = len("\\u0000")


_LEAVES, _CHAIN = 1, 2  # the steps of hashing a row
_NOT_ONE_OBJECT, _OUTSIDE_DICTIONARY = 1, 2  # why a row cannot be hashed as it is stored
_SHARED_ROWS = 2048  # from this many rows, a pool's thread hashes half the leaves


@dataclass(frozen=True)
class Rebuilt:
    """Per row: the leaf hash of the rebuilt canonical bytes and SHA-256(stored prev_hash || it).

    A row whose attrs text is not exactly one JSON object is ``malformed``: embedded as it is, such
    text could stand in for other members of the event, so its hashes prove nothing. So is a row
    with a dictionary code outside its dictionary (it has no text to hash): ``outside_dictionary``
    counts those rows, which only a corrupt or forged file holds.
    """

    leaves: np.ndarray  # (rows, 32) uint8
    chained: np.ndarray  # (rows, 32) uint8
    malformed: np.ndarray  # (rows,) bool
    outside_dictionary: int = 0


@dataclass(frozen=True)
class Chained:
    """New rows' canonical bytes (newline-joined: a WAL payload), leaf hashes and hash chain."""

    lines: memoryview
    leaves: np.ndarray  # (rows, 32) uint8
    hashes: np.ndarray  # (rows, 32) uint8: hashes[i] = SHA-256(hashes[i - 1] || leaves[i])


def chained(
    lines: np.ndarray, offsets: np.ndarray, prev: bytes, pool: Executor | None = None
) -> Chained:
    """Hash new canonical rows in a chain from ``prev``: leaf = SHA-256(0x00 || row).

    Row i is ``lines[offsets[i]:offsets[i + 1] - 1]``, each followed by a newline, so the rows
    joined by newlines (a WAL payload) are ``lines`` up to the last newline, without a copy.
    With a ``pool``, half the leaves are hashed on its thread meanwhile.
    """
    rows = len(offsets) - 1
    leaves = np.empty((rows, 32), np.uint8)
    hashes = np.empty((rows, 32), np.uint8)
    start = np.frombuffer(prev, np.uint8).copy()
    if pool is None or rows < _SHARED_ROWS:
        _hash(lines, offsets, start, leaves, hashes, linked=True, separated=True)
    else:
        half = rows // 2
        share = (lines, offsets[half:], start, leaves[half:], hashes[half:], True, True, _LEAVES)
        other = pool.submit(_hash, *share)
        _hash(lines, offsets[: half + 1], start, leaves[:half], hashes[:half], True, True, _LEAVES)
        other.result()
        _hash(lines, offsets, start, leaves, hashes, linked=True, separated=True, steps=_CHAIN)
    return Chained(lines.data[: max(int(offsets[rows]) - 1, 0)], leaves, hashes)


def rebuild(batch: pa.RecordBatch) -> Rebuilt:
    """Rebuild the leaf and chained hashes of a batch of segment rows from their columns."""
    return _rebuilt(batch, _Layout.of(batch, _CANONICAL_COLUMNS))


# What a row check found, per row: one bit per check passed.
SEQ_OK, WRITER_OK, HASH_OK, LINK_OK = 1, 2, 4, 8
ROW_OK = SEQ_OK | WRITER_OK | HASH_OK | LINK_OK


@dataclass(frozen=True)
class RowCheck:
    """A batch's rows checked: per row the checks passed (``ROW_OK`` when all), and its leaves."""

    flags: np.ndarray  # (rows,) uint8
    failing: int  # how many rows are not ROW_OK
    leaves: np.ndarray  # (rows, 32) uint8: the rebuilt leaf hashes
    outside_dictionary: int = 0  # rows with a dictionary code outside its dictionary


def check_rows(
    batch: pa.RecordBatch, first_seq: int, writer_id: str, previous: bytes | None
) -> RowCheck:
    """Check each stored row: its hashes against its rebuilt columns (HASH_OK), its prev_hash
    against the hash before (LINK_OK; ``previous`` for the first row, unchecked if None), its seq
    (SEQ_OK, counting from ``first_seq``) and its writer_id (WRITER_OK)."""
    layout = _Layout.of(batch, _LAYOUT_COLUMNS)
    rebuilt = _rebuilt(batch, layout)
    flags = np.empty(batch.num_rows, np.uint8)
    failing = _check_rows(
        layout.memory,
        layout.table,
        _CHECKED,
        rebuilt.leaves.reshape(-1),
        rebuilt.chained.reshape(-1),
        rebuilt.malformed,
        first_seq,
        np.frombuffer(writer_id.encode(), np.uint8),
        previous is not None,
        np.frombuffer(previous or b"", np.uint8),
        flags,
    )
    return RowCheck(flags, failing, rebuilt.leaves, rebuilt.outside_dictionary)


def canonical_texts(batch: pa.RecordBatch) -> list[bytes]:
    """Each row's rebuilt leaf input, ``0x00 || canonical bytes`` (for tests and diagnostics)."""
    buffer, offsets, _ = _canonical(_Layout.of(batch, _CANONICAL_COLUMNS))
    return [bytes(buffer[offsets[i] : offsets[i + 1]]) for i in range(batch.num_rows)]


def _rebuilt(batch: pa.RecordBatch, layout: _Layout) -> Rebuilt:
    rows = batch.num_rows
    buffer, offsets, unhashable = _canonical(layout)
    prev = fixed_hashes(batch.column("prev_hash"))
    leaves = np.empty((rows, 32), np.uint8)
    chained = np.empty((rows, 32), np.uint8)
    _hash(buffer, offsets, prev, leaves, chained, linked=False, separated=False)
    outside = int(np.count_nonzero(unhashable & _OUTSIDE_DICTIONARY))
    return Rebuilt(leaves, chained, unhashable != 0, outside)


def _canonical(layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``0x00 || canonical bytes`` of every row in a shared buffer, where each row starts, and
    why each row cannot be hashed as it is stored, if it cannot (_NOT_ONE_OBJECT: attrs text
    that is not exactly one JSON object; _OUTSIDE_DICTIONARY: a code outside its dictionary).

    The buffer is reused by the next call on this thread.
    """
    rows = layout.rows
    buffer = scratch_buffer(_output_bound(layout))
    offsets = np.empty(rows + 1, np.int64)
    malformed = np.zeros(rows, np.uint8)
    _write_canonical(
        rows,
        _KINDS,
        _KEYS,
        _KEY_OFFSETS,
        layout.memory,
        layout.table,
        buffer,
        offsets,
        *_TABLES,
        malformed,
    )
    return buffer, offsets, malformed


def fixed_hashes(column: pa.Array) -> np.ndarray:
    """A fixed-size 32-byte binary column as a (rows, 32) array (nulls read as zero bytes)."""
    if column.type != pa.binary(32):
        column = column.cast(pa.binary(32))
    rows = len(column)
    data = column.buffers()[1]
    if data is None:
        return np.zeros((rows, 32), np.uint8)
    flat = np.frombuffer(data, np.uint8)[column.offset * 32 : (column.offset + rows) * 32]
    result = flat.reshape(rows, 32)
    if column.null_count:
        result = np.where(_validity(column)[:, None] == 1, result, 0).astype(np.uint8)
    return result


def _validity(array: pa.Array) -> np.ndarray:
    rows = len(array)
    if array.null_count == 0:
        return np.ones(rows, np.uint8)
    bits = np.frombuffer(array.buffers()[0], np.uint8)
    return np.unpackbits(bits, bitorder="little")[array.offset : array.offset + rows]


# Where an array's buffers are, per row of a layout (positions in the memory view, or -1).
_VALID, _OFFSET, _MAIN, _DATA, _ITEMS_VALID, _ITEMS_OFFSET, _ITEMS_MAIN, _ITEMS_DATA = range(8)
_DATA_END, _ITEMS_DATA_END = 8, 9  # where those two buffers end: short copies read no further
# A dictionary-encoded text column: its codes; _MAIN and _DATA are then its dictionary's.
_CODES, _DICTIONARY_OFFSET, _DICTIONARY_LENGTH = 10, 11, 12
_LAYOUT_WIDTH = 13
_ABSENT = -1
_DICTIONARY_TEXT = pa.dictionary(pa.int32(), pa.string())
# A layout's arrays: the canonical fields (in _KINDS' order), then what only a row check reads.
_CANONICAL_COLUMNS = tuple(f.name for f in CANONICAL_FIELDS)
_LAYOUT_COLUMNS = (*_CANONICAL_COLUMNS, "prev_hash", "leaf_hash", "hash")
_SCHEMA_TYPES = {f.name: f.type for f in SEGMENT_SCHEMA}
_TEXT_COLUMNS = frozenset(
    name for name, kind in zip(_CANONICAL_COLUMNS, _KINDS, strict=True) if kind == _TEXT
)
# Where a row check finds the columns it compares, in the layout.
_CHECKED_COLUMNS = ("prev_hash", "leaf_hash", "hash", "seq", "writer_id")
_CHECKED = np.array([_LAYOUT_COLUMNS.index(name) for name in _CHECKED_COLUMNS], np.int64)


@dataclass(frozen=True)
class _Layout:
    """A batch's columns as the compiled loops read them (see ``_arrow_layout``)."""

    columns: list[pa.Array]  # kept here: the memory view reads their buffers
    memory: np.ndarray
    table: np.ndarray

    @classmethod
    def of(cls, batch: pa.RecordBatch, names: tuple[str, ...]) -> _Layout:
        """The named columns of a batch, cast to the schema's types where needed."""
        columns = _typed_columns(batch, names)
        return cls(columns, *_arrow_layout(columns))

    @property
    def rows(self) -> int:
        """How many rows the batch has."""
        return len(self.columns[0]) if self.columns else 0


def _arrow_layout(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays as the compiled loops read them where Arrow keeps them, without a copy.

    Returns a byte view over the address range that all their buffers lie in, and per array
    where in it each buffer starts (validity, offset, values or offsets, string data; for a list,
    the same of its items; for a dictionary, its codes, with its dictionary's offsets and data).
    The arrays must outlive the view.
    """
    parts: list[tuple[pa.Buffer | int | None, ...]] = []
    for array in arrays:
        buffers = array.buffers()
        validity = buffers[0] if array.null_count else None
        part: tuple[pa.Buffer | int | None, ...]
        if pa.types.is_list(array.type):
            items = array.values
            inner = items.buffers()
            inner_validity = inner[0] if items.null_count else None
            part = (validity, array.offset, buffers[1], None)
            part += (inner_validity, items.offset, inner[1], inner[2], None, None, None, 0, 0)
        elif pa.types.is_dictionary(array.type):
            dictionary = array.dictionary
            values = dictionary.buffers()
            part = (validity, array.offset, values[1], values[2], None, 0, None, None, None, None)
            part += (buffers[1], dictionary.offset, len(dictionary))
        else:
            data = buffers[2] if len(buffers) > 2 else None
            part = (validity, array.offset, buffers[1], data, None, 0, None, None, None, None)
            part += (None, 0, 0)
        parts.append(part)
    used = [b for part in parts for b in part if isinstance(b, pa.Buffer) and b.size]
    low = min((b.address for b in used), default=0)
    high = max((b.address + b.size for b in used), default=low)
    layout = np.full((len(arrays), _LAYOUT_WIDTH), _ABSENT, np.int64)
    for index, part in enumerate(parts):
        for slot, value in enumerate(part):
            if isinstance(value, pa.Buffer):
                layout[index, slot] = value.address - low if value.size else _ABSENT
            elif value is not None:
                layout[index, slot] = value
        for data, end in ((_DATA, _DATA_END), (_ITEMS_DATA, _ITEMS_DATA_END)):
            buffer = part[data]
            if isinstance(buffer, pa.Buffer) and buffer.size:
                layout[index, end] = buffer.address + buffer.size - low
    return _memory_view(low, high - low), layout


def _typed_columns(batch: pa.RecordBatch, names: tuple[str, ...]) -> list[pa.Array]:
    """The named columns cast to the schema's types; a text column may stay dictionary-encoded
    (int32 codes, no null entries), which the compiled loops read through its dictionary."""
    columns = []
    for name in names:
        column = batch.column(name)
        wanted = _SCHEMA_TYPES[name]
        keep = column.type == wanted or (
            column.type == _DICTIONARY_TEXT
            and name in _TEXT_COLUMNS
            and column.dictionary.null_count == 0
        )
        columns.append(column if keep else column.cast(wanted))
    return columns


def _output_bound(layout: _Layout) -> int:
    """An upper bound of the size of the canonical rows written from a layout's columns."""
    rows = layout.rows
    bound = rows * (3 + int(_KEY_OFFSETS[-1]) + len(_KINDS) * (_MAX_INT_DIGITS + _TIME_TEXT))
    for field, (column, kind) in enumerate(zip(layout.columns, _KINDS, strict=False)):
        if kind == _LIST:
            items = column.values
            bound += _ESCAPE_WIDTH * _size(items.buffers()[2]) + 5 * len(items)  # "",
        elif pa.types.is_dictionary(column.type):
            text = _coded_text_bytes(layout.memory, layout.table, field, rows)
            bound += _ESCAPE_WIDTH * text
        elif kind in (_TEXT, _RAW):
            bound += _ESCAPE_WIDTH * _size(column.buffers()[2])
    return bound


def _size(buffer: pa.Buffer | None) -> int:
    return buffer.size if buffer is not None else 0


def _memory_view(address: int, size: int) -> np.ndarray:
    """The ``size`` bytes from ``address`` as a numpy array that does not own them."""
    if size == 0:
        return np.zeros(8, np.uint8)
    pointer = ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8))
    return np.ctypeslib.as_array(pointer, shape=(size,))


# -- the compiled loops ---------------------------------------------------------------------------


@inline
def _put_string(
    out: Any, at: int, data: Any, start: int, end: int, limit: int, short: Any, hexd: Any
) -> int:
    """Write ``data[start:end]`` as a JSON string, reading nothing of ``data`` from ``limit``."""
    out[at] = 34  # "
    at += 1
    i = start
    while i < end:
        plain_end = plain_run(data, i, end, False)  # copied as it is, in one go
        at = put_bytes_below(out, at, data, i, plain_end, limit)
        if plain_end == end:
            break
        byte = data[plain_end]
        i = plain_end + 1
        if byte >= 0x20:  # " or \
            out[at] = 92
            out[at + 1] = byte
            at += 2
        elif short[byte] != 0:
            out[at] = 92
            out[at + 1] = short[byte]
            at += 2
        else:
            out[at] = 92
            out[at + 1] = 117  # u
            out[at + 2] = 48
            out[at + 3] = 48
            out[at + 4] = hexd[byte >> 4]
            out[at + 5] = hexd[byte & 15]
            at += 6
    out[at] = 34
    return at + 1


@inline
def _one_object(data: Any, start: int, end: int) -> bool:
    """Whether raw JSON text is exactly one object: its first brace closes at its last byte.

    Stored attrs text is embedded as it is, so text such as ``{"a":1},"bytes":5`` would stand in
    for other members of the event; one balanced object cannot.
    """
    if end - start < 2 or data[start] != 123:  # {
        return False
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, end):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 92:  # backslash
                escaped = True
            elif byte == 34:
                in_string = False
        elif byte == 34:
            in_string = True
        elif byte == 123 or byte == 91:  # noqa: PLR1714 - compiled as two compares
            depth += 1
        elif byte == 125 or byte == 93:  # noqa: PLR1714 - compiled as two compares
            depth -= 1
            if depth == 0 and i != end - 1:
                return False
    return depth == 0 and not in_string


@inline
def _is_set(memory: Any, bits: int, index: int) -> bool:
    """Bit ``index`` of the bitmap at ``bits`` (Arrow's order: least significant bit first)."""
    byte: int = memory[bits + (index >> 3)]
    return (byte >> (index & 7)) & 1 != 0


@inline
def _present(memory: Any, validity: int, index: int) -> bool:
    return validity == _ABSENT or _is_set(memory, validity, index)


@inline
def _value_at(memory: Any, layout: Any, field: int, index: int) -> int:
    """Where element ``index`` of a text column is among its values: through its dictionary
    for a dictionary column, where a code outside the dictionary gives -1."""
    codes = layout[field, _CODES]
    if codes == _ABSENT:
        return index
    code = load_int32(memory, codes + 4 * index)
    if code < 0 or code >= layout[field, _DICTIONARY_LENGTH]:
        return -1
    value: int = layout[field, _DICTIONARY_OFFSET] + code
    return value


@jit
def _coded_text_bytes(memory: Any, layout: Any, field: int, rows: int) -> int:
    """At least as many bytes as the text of a dictionary column's rows: rows times its
    longest entry where that is small, else the sum over the rows."""
    offsets = layout[field, _MAIN]
    first = layout[field, _DICTIONARY_OFFSET]
    longest = 0
    for entry in range(first, first + layout[field, _DICTIONARY_LENGTH]):
        at = offsets + 4 * entry
        longest = max(longest, load_int32(memory, at + 4) - load_int32(memory, at))
    if longest * rows <= _SMALL_TEXT_BOUND:
        return longest * rows
    total = 0
    for row in range(rows):
        value = _value_at(memory, layout, field, layout[field, _OFFSET] + row)
        if value >= 0:
            at = offsets + 4 * value
            total += load_int32(memory, at + 4) - load_int32(memory, at)
    return total


_SMALL_TEXT_BOUND = 1 << 20


@jit
def _write_canonical(
    rows: int,
    kinds: Any,
    keys: Any,
    key_offsets: Any,
    memory: Any,
    layout: Any,
    out: Any,
    out_offsets: Any,
    short: Any,
    hexd: Any,
    words: Any,
    malformed: Any,
) -> None:
    """Write ``0x00 || canonical JSON`` of every row into ``out``; row i ends at offsets[i+1].

    Each field's values are read where ``layout`` says its Arrow buffers are in ``memory``.
    """
    dates = day_cache()
    at = 0
    for row in range(rows):
        out_offsets[row] = at
        out[at] = 0
        out[at + 1] = 123  # {
        at += 2
        first = True
        for field in range(len(kinds)):
            index = layout[field, _OFFSET] + row
            if not _present(memory, layout[field, _VALID], index):
                continue  # null means absent
            if not first:
                out[at] = 44  # ,
                at += 1
            first = False
            at = put_bytes(out, at, keys, key_offsets[field], key_offsets[field + 1])
            kind = kinds[field]
            main = layout[field, _MAIN]
            if kind == 4 or kind == 5:  # noqa: PLR1714 - _RAW, _LIST
                start = load_int32(memory, main + 4 * index)
                end = load_int32(memory, main + 4 * index + 4)
            if kind == 0:  # _TEXT
                value = _value_at(memory, layout, field, index)
                start = end = 0
                if value < 0:  # a code outside its dictionary: there is no text to hash
                    malformed[row] |= _OUTSIDE_DICTIONARY
                else:
                    start = load_int32(memory, main + 4 * value)
                    end = load_int32(memory, main + 4 * value + 4)
                data = layout[field, _DATA]
                limit = layout[field, _DATA_END]
                at = _put_string(out, at, memory, data + start, data + end, limit, short, hexd)
            elif kind == 1:  # _TIME
                at = put_time(out, at, load_int64(memory, main + 8 * index), dates)
            elif kind == 2:  # _INT
                at = put_int(out, at, load_int64(memory, main + 8 * index))
            elif kind == 3:  # _BOOL
                if _is_set(memory, main, index):
                    at = put_bytes(out, at, words, 0, 4)  # true
                else:
                    at = put_bytes(out, at, words, 4, 9)  # false
            elif kind == 4:  # _RAW
                data = layout[field, _DATA]
                at = put_bytes_below(
                    out, at, memory, data + start, data + end, layout[field, _DATA_END]
                )
                if not _one_object(memory, data + start, data + end):
                    malformed[row] |= _NOT_ONE_OBJECT
            else:  # _LIST
                items_valid = layout[field, _ITEMS_VALID]
                items_main = layout[field, _ITEMS_MAIN]
                items_data = layout[field, _ITEMS_DATA]
                out[at] = 91  # [
                at += 1
                for item in range(start, end):
                    if item > start:
                        out[at] = 44
                        at += 1
                    item_index = layout[field, _ITEMS_OFFSET] + item
                    if not _present(memory, items_valid, item_index):
                        # never written; a forged null still mismatches
                        at = put_bytes(out, at, words, 9, 13)  # null
                    else:
                        item_start = load_int32(memory, items_main + 4 * item_index)
                        item_end = load_int32(memory, items_main + 4 * item_index + 4)
                        at = _put_string(
                            out,
                            at,
                            memory,
                            items_data + item_start,
                            items_data + item_end,
                            layout[field, _ITEMS_DATA_END],
                            short,
                            hexd,
                        )
                out[at] = 93  # ]
                at += 1
        out[at] = 125  # }
        at += 1
    out_offsets[rows] = at


@inline
def _same_bytes(left: Any, left_at: int, right: Any, right_at: int, count: int) -> bool:
    """Whether ``count`` bytes (a multiple of eight) are equal, a word at a time."""
    for i in range(0, count, 8):
        if load_word(left, left_at + i) != load_word(right, right_at + i):
            return False
    return True


@jit
def _check_rows(
    memory: Any,
    layout: Any,
    checked: Any,
    leaves: Any,
    chained: Any,
    malformed: Any,
    first_seq: int,
    writer: Any,
    link_first: bool,
    previous: Any,
    flags: Any,
) -> int:
    """Set each row's flags (see ``check_rows``); ``checked`` says where in ``layout`` the
    prev_hash, leaf_hash, hash, seq and writer_id columns are."""
    prev, leaf, stored, seq, writer_field = checked
    failing = 0
    last_at = 0  # where the hash of the row before is in memory
    last_present = False
    for row in range(len(flags)):
        prev_index = layout[prev, _OFFSET] + row
        leaf_index = layout[leaf, _OFFSET] + row
        hash_index = layout[stored, _OFFSET] + row
        prev_at = layout[prev, _MAIN] + 32 * prev_index
        hash_at = layout[stored, _MAIN] + 32 * hash_index
        prev_present = _present(memory, layout[prev, _VALID], prev_index)
        hash_present = _present(memory, layout[stored, _VALID], hash_index)
        hash_ok = (
            prev_present
            and hash_present
            and _present(memory, layout[leaf, _VALID], leaf_index)
            and not malformed[row]
            and _same_bytes(memory, layout[leaf, _MAIN] + 32 * leaf_index, leaves, 32 * row, 32)
            and _same_bytes(memory, hash_at, chained, 32 * row, 32)
        )
        if row == 0:
            link_ok = not link_first or (
                prev_present
                and len(previous) == 32
                and _same_bytes(memory, prev_at, previous, 0, 32)
            )
        else:
            link_ok = (
                prev_present and last_present and _same_bytes(memory, prev_at, memory, last_at, 32)
            )
        last_at = hash_at
        last_present = hash_present
        seq_index = layout[seq, _OFFSET] + row
        seq_ok = (
            _present(memory, layout[seq, _VALID], seq_index)
            and load_int64(memory, layout[seq, _MAIN] + 8 * seq_index) == first_seq + row
        )
        writer_index = layout[writer_field, _OFFSET] + row
        writer_ok = _present(memory, layout[writer_field, _VALID], writer_index)
        value = _value_at(memory, layout, writer_field, writer_index) if writer_ok else -1
        writer_ok = value >= 0
        if writer_ok:
            start = load_int32(memory, layout[writer_field, _MAIN] + 4 * value)
            end = load_int32(memory, layout[writer_field, _MAIN] + 4 * value + 4)
            writer_ok = end - start == len(writer)
            data = layout[writer_field, _DATA]
            for i in range(len(writer)):
                if not writer_ok:
                    break
                writer_ok = memory[data + start + i] == writer[i]
        flag = (
            (SEQ_OK if seq_ok else 0)
            | (WRITER_OK if writer_ok else 0)
            | (HASH_OK if hash_ok else 0)
            | (LINK_OK if link_ok else 0)
        )
        flags[row] = flag
        if flag != ROW_OK:
            failing += 1
    return failing


@jit
def _hash_rows(
    text: Any,
    offsets: Any,
    prev: Any,
    leaves: Any,
    chained: Any,
    linked: bool,
    separated: bool,
    steps: int,
    zero: Any,
    context: Any,
    init: Any,
    update: Any,
    final: Any,
) -> int:
    """SHA-256 of each row's leaf input, then of its prev hash || that leaf, by OpenSSL.

    ``prev`` holds each row's stored prev_hash, or (``linked``) only the hash before the first
    row, each row then following the one before. ``separated`` rows end with a newline and do not
    start with 0x00: the leaf hash covers 0x00 (from ``zero``) and the row without its newline.
    ``steps`` says which hashes to compute: _LEAVES, _CHAIN (from the leaves there) or both.
    Returns how many OpenSSL calls failed.
    """
    failed = 0
    # Addresses as signed integers: numba would widen unsigned + signed arithmetic to floats.
    text_at = np.int64(text.ctypes.data)
    leaves_at = np.int64(leaves.ctypes.data)
    chained_at = np.int64(chained.ctypes.data)
    zero_at = np.int64(zero.ctypes.data)
    first_prev_at = np.int64(prev.ctypes.data)
    context_at = np.int64(context.ctypes.data)
    for row in range(len(offsets) - 1):
        if not linked:
            prev_at = first_prev_at + 32 * row
        elif row == 0:
            prev_at = first_prev_at
        else:
            prev_at = chained_at + 32 * (row - 1)
        ok = 1
        if steps & _LEAVES:
            ok &= init(context_at)
            length = offsets[row + 1] - offsets[row]
            if separated:
                ok &= update(context_at, zero_at, 1)
                length -= 1
            ok &= update(context_at, text_at + offsets[row], length)
            ok &= final(leaves_at + 32 * row, context_at)
        if steps & _CHAIN:
            ok &= init(context_at)
            ok &= update(context_at, prev_at, 32)
            ok &= update(context_at, leaves_at + 32 * row, 32)
            ok &= final(chained_at + 32 * row, context_at)
        if ok == 0:
            failed += 1
    return failed


def _hash(
    text: np.ndarray,
    offsets: np.ndarray,
    prev: np.ndarray,
    leaves: np.ndarray,
    hashes: np.ndarray,
    linked: bool,
    separated: bool,
    steps: int = 3,
) -> None:
    """Each row's leaf hash and chained hash (see ``_hash_rows``): by OpenSSL's SHA-256
    functions from the compiled loop, or with hashlib where that library cannot be used."""
    openssl = _openssl()
    if openssl is not None:
        context = np.zeros(_CONTEXT_BYTES, np.uint8)  # one a call: threads may hash at once
        arguments = (text, offsets, prev, leaves, hashes, linked, separated, steps, _ZERO)
        if _hash_rows(*arguments, context, *openssl) == 0:
            return
    view = text.data
    before = prev.tobytes()[:32]
    for row in range(len(offsets) - 1):
        if steps & _LEAVES:
            leaf_input = hashlib.sha256(b"\x00" if separated else b"")
            leaf_input.update(view[offsets[row] : offsets[row + 1] - (1 if separated else 0)])
            leaves[row] = np.frombuffer(leaf_input.digest(), np.uint8)
        if steps & _CHAIN:
            before = chain_hash(before if linked else prev[row].tobytes(), leaves[row].tobytes())
            hashes[row] = np.frombuffer(before, np.uint8)


_ZERO = np.zeros(1, np.uint8)


def _hashlib_libcrypto() -> str | None:
    """The path of the libcrypto that hashlib's OpenSSL module loaded, on Linux."""
    import _hashlib  # noqa: F401 - loads hashlib's libcrypto into this process

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if path.startswith("/") and os.path.basename(path).startswith("libcrypto."):
                    return path
    except OSError:
        pass
    return None


# sizeof(SHA256_CTX) is 112 bytes; more is harmless.
_CONTEXT_BYTES = 256


@functools.cache
def _openssl() -> tuple[Any, Any, Any] | None:
    """OpenSSL's SHA256_Init, SHA256_Update and SHA256_Final, or None where unavailable.

    The library is the one hashlib has loaded where that can be seen, else the system's
    ``libcrypto``. These functions (in OpenSSL 1.1 and 3, LibreSSL and BoringSSL) hash from a
    plain context; OpenSSL 3's EVP interface does the same work with about 90 ns a row more of
    dispatch, a fifth of the hashing.
    """
    name = _hashlib_libcrypto() or ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        init = library.SHA256_Init
        update = library.SHA256_Update
        final = library.SHA256_Final
    except (OSError, AttributeError):
        return None
    init.argtypes = [ctypes.c_void_p]
    init.restype = ctypes.c_int
    update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    update.restype = ctypes.c_int
    final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    final.restype = ctypes.c_int
    return init, update, final
