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

from .compiled import inline, jit, plain_run, put_bytes, put_int, put_time, scratch_buffer
from .hashing import chain_hash
from .schema import CANONICAL_FIELDS, Kind

__all__ = ["Chained", "Rebuilt", "canonical_texts", "chained", "fixed_hashes", "rebuild"]

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
_SHARED_ROWS = 2048  # from this many rows, a pool's thread hashes half the leaves


@dataclass(frozen=True)
class Rebuilt:
    """Per row: the leaf hash of the rebuilt canonical bytes and SHA-256(stored prev_hash || it).

    A row whose attrs text is not exactly one JSON object is ``malformed``: embedded as it is, such
    text could stand in for other members of the event, so its hashes prove nothing.
    """

    leaves: np.ndarray  # (rows, 32) uint8
    chained: np.ndarray  # (rows, 32) uint8
    malformed: np.ndarray  # (rows,) bool


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
    rows = batch.num_rows
    buffer, offsets, malformed = _canonical(batch)
    prev = fixed_hashes(batch.column("prev_hash"))
    leaves = np.empty((rows, 32), np.uint8)
    chained = np.empty((rows, 32), np.uint8)
    _hash(buffer, offsets, prev, leaves, chained, linked=False, separated=False)
    return Rebuilt(leaves, chained, malformed)


def canonical_texts(batch: pa.RecordBatch) -> list[bytes]:
    """Each row's rebuilt leaf input, ``0x00 || canonical bytes`` (for tests and diagnostics)."""
    buffer, offsets, _ = _canonical(batch)
    return [bytes(buffer[offsets[i] : offsets[i + 1]]) for i in range(batch.num_rows)]


def _canonical(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``0x00 || canonical bytes`` of every row in a shared buffer, where each row starts, and
    which rows hold attrs text that is not exactly one JSON object.

    The buffer is reused by the next call on this thread.
    """
    columns = _Columns.of(batch)
    buffer = scratch_buffer(columns.bound)
    offsets = np.empty(batch.num_rows + 1, np.int64)
    malformed = np.zeros(batch.num_rows, np.uint8)
    _write_canonical(
        batch.num_rows,
        _KINDS,
        _KEYS,
        _KEY_OFFSETS,
        columns.valid,
        columns.offsets,
        columns.data,
        columns.values,
        columns.items_valid,
        columns.items_offsets,
        columns.items_data,
        buffer,
        offsets,
        *_TABLES,
        malformed,
    )
    return buffer, offsets, malformed.astype(bool)


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


def _strings(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (rebased to 0, int64) and bytes of a string array."""
    if array.type != pa.string():
        array = array.cast(pa.string())
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[array.offset : array.offset + len(array) + 1]
    start = int(offsets[0]) if len(offsets) else 0
    data = (
        np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    )
    return offsets.astype(np.int64) - start, data[start : int(offsets[-1]) if len(offsets) else 0]


@dataclass(frozen=True)
class _Columns:
    """A batch's canonical fields as the flat arrays the compiled loop reads."""

    valid: np.ndarray  # (fields, rows) uint8
    offsets: np.ndarray  # (fields, rows + 1): into data (text, raw) or items (lists)
    data: np.ndarray  # every text and raw column's bytes, one after another
    values: np.ndarray  # (fields, rows) int64: times as µs, integers, booleans as 0/1
    items_valid: np.ndarray
    items_offsets: np.ndarray
    items_data: np.ndarray
    bound: int  # an upper bound of the output's size

    @classmethod
    def of(cls, batch: pa.RecordBatch) -> _Columns:
        rows = batch.num_rows
        fields = len(CANONICAL_FIELDS)
        valid = np.empty((fields, rows), np.uint8)
        offsets = np.zeros((fields, rows + 1), np.int64)
        values = np.zeros((fields, rows), np.int64)
        data: list[np.ndarray] = []
        items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        data_size = items_count = items_size = 0
        bound = rows * (3 + int(_KEY_OFFSETS[-1]) + fields * (_MAX_INT_DIGITS + _TIME_TEXT))
        for index, (field, kind) in enumerate(zip(CANONICAL_FIELDS, _KINDS, strict=True)):
            column = batch.column(field.name)
            valid[index] = _validity(column)
            if kind in (_TEXT, _RAW):
                starts, text = _strings(column)
                offsets[index] = starts + data_size
                data.append(text)
                data_size += len(text)
                bound += _ESCAPE_WIDTH * len(text)
            elif kind == _LIST:
                list_offsets = np.frombuffer(column.buffers()[1], np.int32)
                list_offsets = list_offsets[column.offset : column.offset + rows + 1]
                child = column.values
                first, last = int(list_offsets[0]), int(list_offsets[-1])
                child = child.slice(first, last - first)
                offsets[index] = list_offsets.astype(np.int64) - first + items_count
                item_starts, item_text = _strings(child)
                items.append((_validity(child), item_starts[:-1] + items_size, item_text))
                items_count += len(child)
                items_size += len(item_text)
                # An item is written quoted (2) or as null (4), and followed by a comma.
                bound += _ESCAPE_WIDTH * len(item_text) + 5 * len(child)
            elif kind == _BOOL:
                bits = np.frombuffer(column.buffers()[1], np.uint8)
                values[index] = np.unpackbits(bits, bitorder="little")[
                    column.offset : column.offset + rows
                ]
            else:
                raw = np.frombuffer(column.buffers()[1], np.int64)
                values[index] = raw[column.offset : column.offset + rows]
        return cls(
            valid,
            offsets,
            np.concatenate(data) if data else np.zeros(0, np.uint8),
            values,
            np.concatenate([v for v, _, _ in items]) if items else np.zeros(0, np.uint8),
            np.concatenate([*(s for _, s, _ in items), np.array([items_size], np.int64)]),
            np.concatenate([t for _, _, t in items]) if items else np.zeros(0, np.uint8),
            bound,
        )


# -- the compiled loops ---------------------------------------------------------------------------


@inline
def _put_string(out: Any, at: int, data: Any, start: int, end: int, short: Any, hexd: Any) -> int:
    out[at] = 34  # "
    at += 1
    i = start
    while i < end:
        plain_end = plain_run(data, i, end, False)  # copied as it is, in one go
        at = put_bytes(out, at, data, i, plain_end)
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


@jit
def _write_canonical(
    rows: int,
    kinds: Any,
    keys: Any,
    key_offsets: Any,
    valid: Any,
    offsets: Any,
    data: Any,
    values: Any,
    items_valid: Any,
    items_offsets: Any,
    items_data: Any,
    out: Any,
    out_offsets: Any,
    short: Any,
    hexd: Any,
    words: Any,
    malformed: Any,
) -> None:
    """Write ``0x00 || canonical JSON`` of every row into ``out``; row i ends at offsets[i+1]."""
    at = 0
    for row in range(rows):
        out_offsets[row] = at
        out[at] = 0
        out[at + 1] = 123  # {
        at += 2
        first = True
        for field in range(len(kinds)):
            if valid[field, row] == 0:
                continue  # null means absent
            if not first:
                out[at] = 44  # ,
                at += 1
            first = False
            at = put_bytes(out, at, keys, key_offsets[field], key_offsets[field + 1])
            kind = kinds[field]
            start = offsets[field, row]
            end = offsets[field, row + 1]
            if kind == 0:  # _TEXT
                at = _put_string(out, at, data, start, end, short, hexd)
            elif kind == 1:  # _TIME
                at = put_time(out, at, values[field, row])
            elif kind == 2:  # _INT
                at = put_int(out, at, values[field, row])
            elif kind == 3:  # _BOOL
                if values[field, row] != 0:
                    at = put_bytes(out, at, words, 0, 4)  # true
                else:
                    at = put_bytes(out, at, words, 4, 9)  # false
            elif kind == 4:  # _RAW
                at = put_bytes(out, at, data, start, end)
                if not _one_object(data, start, end):
                    malformed[row] = 1
            else:  # _LIST
                out[at] = 91  # [
                at += 1
                for item in range(start, end):
                    if item > start:
                        out[at] = 44
                        at += 1
                    if items_valid[item] == 0:  # never written; a forged null still mismatches
                        at = put_bytes(out, at, words, 9, 13)  # null
                    else:
                        item_start = items_offsets[item]
                        item_end = items_offsets[item + 1]
                        at = _put_string(out, at, items_data, item_start, item_end, short, hexd)
                out[at] = 93  # ]
                at += 1
        out[at] = 125  # }
        at += 1
    out_offsets[rows] = at


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
    context: int,
    digest: int,
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
    for row in range(len(offsets) - 1):
        if not linked:
            prev_at = first_prev_at + 32 * row
        elif row == 0:
            prev_at = first_prev_at
        else:
            prev_at = chained_at + 32 * (row - 1)
        ok = 1
        if steps & _LEAVES:
            ok &= init(context, digest, 0)
            length = offsets[row + 1] - offsets[row]
            if separated:
                ok &= update(context, zero_at, 1)
                length -= 1
            ok &= update(context, text_at + offsets[row], length)
            ok &= final(context, leaves_at + 32 * row, 0)
        if steps & _CHAIN:
            ok &= init(context, digest, 0)
            ok &= update(context, prev_at, 32)
            ok &= update(context, leaves_at + 32 * row, 32)
            ok &= final(context, chained_at + 32 * row, 0)
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
    """Each row's leaf hash and chained hash (see ``_hash_rows``): through OpenSSL's EVP
    interface from the compiled loop, or with hashlib where that library cannot be used."""
    openssl = _openssl()
    if openssl is not None:
        digest, new_context, free_context, init, update, final = openssl
        context = new_context()  # one a call: callers may hash on several threads at once
        if context:
            try:
                arguments = (text, offsets, prev, leaves, hashes, linked, separated, steps, _ZERO)
                failed = _hash_rows(*arguments, context, digest, init, update, final)
            finally:
                free_context(context)
            if failed == 0:
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


@functools.cache
def _openssl() -> tuple[int, Any, Any, Any, Any, Any] | None:
    """OpenSSL's SHA-256 and EVP digest functions, or None where the library is unavailable.

    The library is the one hashlib has loaded where that can be seen, else the system's
    ``libcrypto``; only its stable EVP interface (OpenSSL 3) is called.
    """
    name = _hashlib_libcrypto() or ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        fetch = library.EVP_MD_fetch
        new_context = library.EVP_MD_CTX_new
        free_context = library.EVP_MD_CTX_free
        init = library.EVP_DigestInit_ex
        update = library.EVP_DigestUpdate
        final = library.EVP_DigestFinal_ex
    except (OSError, AttributeError):
        return None
    fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    fetch.restype = ctypes.c_void_p
    new_context.argtypes = []
    new_context.restype = ctypes.c_void_p
    free_context.argtypes = [ctypes.c_void_p]
    free_context.restype = None
    init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    init.restype = ctypes.c_int
    update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    update.restype = ctypes.c_int
    final.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    final.restype = ctypes.c_int
    digest = fetch(None, b"SHA256", None)
    if not digest:
        return None
    return digest, new_context, free_context, init, update, final
