"""``ledger.rebuild.check_rows`` held to a pure-Python reference, over real and awkward Arrow rows.

``check_rows`` reads Arrow's buffers in place from a compiled loop (``_arrow_layout``), so what
can go wrong is where a value is read: a slice's offset, a validity bit at an offset that is not
a multiple of eight, a list's items that are themselves offset, a column cast to the schema type.
Every batch here is checked twice: by ``check_rows``, and by the reference below, which builds
each row's canonical bytes field by field with ``rfc8785`` from ``batch.to_pylist()`` (Arrow's
own reading of the same rows) and hashes them with hashlib (``ledger.hashing``). The flags,
the count of failing rows and the leaf hashes must agree exactly; most tests also state the
flags they expect by hand, so the reference cannot be vacuously agreeing with a broken check.

The rows come from a real ledger (two segments of one writer log), then are sliced, shifted,
concatenated, cast, nulled and forged. A forger who edits a row may also recompute its hashes
(``rechained``): check_rows must then accept exactly what the reference accepts.
"""

from __future__ import annotations

import itertools
import json
import shutil
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import FULL_EVENT, run_python, tool_event

from ledger import Ledger
from ledger import verify as verify_module
from ledger.hashing import ZERO_HASH, chain_hash, leaf_hash
from ledger.rebuild import (
    HASH_OK,
    LINK_OK,
    ROW_OK,
    SEQ_OK,
    WRITER_OK,
    canonical_texts,
    check_rows,
)
from ledger.schema import HASH_COLUMNS, SEGMENT_SCHEMA
from ledger.verify import check_segment

# Text that JSON escaping gets wrong: quotes, backslashes, every short escape, other control
# characters, DEL, non-ASCII of every UTF-8 length, and runs longer than one 8-byte word or the
# 64 bytes from which the compiled copy switches to memcpy, with escapes across word boundaries.
TRICKY = (
    "plain",
    'q"uote',
    "back\\slash",
    "\x01\x08\t\n\x0c\r\x1f\x7f",
    "ünïcödé",
    "☃ 雪だるま",
    "\U0001f600\U0010ffff",
    "\u2028\u2029",
    "</script>",
    "",
    "x" * 70,
    'a"' * 40,
    "1234567\n" * 9,
    "é" * 33 + "\\",
)
SEGMENT_SIZES = (61, 19)  # two appends, closed between them: two segments of one writer log
ALL_BUT = {bit: ROW_OK & ~bit for bit in (SEQ_OK, WRITER_OK, HASH_OK, LINK_OK)}


# -- the reference ----------------------------------------------------------------------------


def _utc_text(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def reference_canonical(row: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a stored row (DESIGN.md §3), member by member: nulls absent, times in
    canonical UTC text, attrs embedded as the text it is stored as (even when malformed)."""
    members: list[tuple[str, bytes]] = []
    for name, value in row.items():
        if value is None or name in HASH_COLUMNS:
            continue
        if isinstance(value, datetime):
            text = bytes(rfc8785.dumps(_utc_text(value)))
        elif name == "attrs":
            text = value.encode()
        elif isinstance(value, bool):
            text = b"true" if value else b"false"
        elif isinstance(value, int):
            text = str(value).encode()
        else:  # a string, or a list of strings (a null item as null)
            text = bytes(rfc8785.dumps(value))
        members.append((name, text))
    members.sort(key=lambda member: member[0].encode("utf-16-be"))
    body = b",".join(bytes(rfc8785.dumps(name)) + b":" + text for name, text in members)
    return b"{" + body + b"}"


def reference_malformed(attrs: str | None) -> bool:
    """Whether stored attrs text is not exactly one JSON object (nothing before or after it)."""
    if attrs is None:
        return False
    try:
        value, end = json.JSONDecoder().raw_decode(attrs)
    except ValueError:
        return True
    return not isinstance(value, dict) or end != len(attrs)


@dataclass(frozen=True)
class Reference:
    flags: list[int]
    leaves: list[bytes]

    @property
    def failing(self) -> int:
        return sum(flag != ROW_OK for flag in self.flags)


def reference_check(
    rows: Sequence[dict[str, Any]], first_seq: int, writer_id: str, previous: bytes | None
) -> Reference:
    flags = []
    leaves = []
    for i, row in enumerate(rows):
        leaf = leaf_hash(reference_canonical(row))
        leaves.append(leaf)
        prev, stored_leaf, stored_hash = (row[name] for name in HASH_COLUMNS)
        hash_ok = (
            None not in (prev, stored_leaf, stored_hash)
            and not reference_malformed(row["attrs"])
            and stored_leaf == leaf
            and stored_hash == chain_hash(prev, leaf)
        )
        if i == 0:
            link_ok = previous is None or (prev is not None and prev == previous)
        else:
            before = rows[i - 1]["hash"]
            link_ok = prev is not None and before is not None and prev == before
        seq_ok = row["seq"] is not None and row["seq"] == first_seq + i
        writer_ok = row["writer_id"] is not None and row["writer_id"] == writer_id
        flags.append(
            (SEQ_OK if seq_ok else 0)
            | (WRITER_OK if writer_ok else 0)
            | (HASH_OK if hash_ok else 0)
            | (LINK_OK if link_ok else 0)
        )
    return Reference(flags, leaves)


def checked_like_reference(
    batch: pa.RecordBatch, first_seq: int, writer_id: str, previous: bytes | None
) -> list[int]:
    """check_rows on a batch, asserted equal to the reference in every output; its flags."""
    rows = batch.to_pylist()
    want = reference_check(rows, first_seq, writer_id, previous)
    assert canonical_texts(batch) == [b"\x00" + reference_canonical(row) for row in rows]
    got = check_rows(batch, first_seq, writer_id, previous)
    assert got.flags.dtype == np.uint8
    assert got.flags.shape == (batch.num_rows,)
    assert got.flags.tolist() == want.flags, _difference(got.flags.tolist(), want.flags)
    assert isinstance(got.failing, int)
    assert got.failing == want.failing
    assert got.outside_dictionary == 0  # malformed attrs are not codes outside a dictionary
    assert got.leaves.dtype == np.uint8
    assert got.leaves.shape == (batch.num_rows, 32)
    assert [bytes(leaf) for leaf in got.leaves] == want.leaves
    return want.flags


def _difference(got: list[int], want: list[int]) -> str:
    return "rows (index, check_rows, reference): " + repr(
        [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    )


def failing_at(rows: int, bits: dict[int, int]) -> list[int]:
    """Flags of ``rows`` rows, all ROW_OK but the rows in ``bits`` missing those bits."""
    return [ROW_OK & ~bits.get(row, 0) for row in range(rows)]


# -- building and bending batches ---------------------------------------------------------------


def replaced(batch: pa.RecordBatch, name: str, array: pa.Array) -> pa.RecordBatch:
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, batch.schema.field(index), array)


def with_values(batch: pa.RecordBatch, name: str, changes: dict[int, Any]) -> pa.RecordBatch:
    """The batch with some values of one column replaced (None: null)."""
    values = batch.column(name).to_pylist()
    for row, value in changes.items():
        values[row] = value
    return replaced(batch, name, pa.array(values, batch.schema.field(name).type))


def rechained(batch: pa.RecordBatch, first_prev: bytes, start: int = 0) -> pa.RecordBatch:
    """The batch with the hashes of rows ``start``.. recomputed (by the reference) from their
    columns, chained from ``first_prev``: what a forger who edits rows writes."""
    rows = batch.to_pylist()
    prevs, leaves, hashes = ([row[name] for row in rows] for name in HASH_COLUMNS)
    prev = first_prev
    for i in range(start, len(rows)):
        leaf = leaf_hash(reference_canonical(rows[i]))
        prevs[i], leaves[i], hashes[i] = prev, leaf, chain_hash(prev, leaf)
        prev = hashes[i]
    for name, values in zip(HASH_COLUMNS, (prevs, leaves, hashes), strict=True):
        batch = replaced(batch, name, pa.array(values, pa.binary(32)))
    return batch


def shifted(array: pa.Array, by: int) -> pa.Array:
    """The same values at array offset ``by``, behind ``by`` rows of nulls in the same buffers."""
    if by == 0:
        return array
    whole = pa.concat_arrays([pa.nulls(by, array.type), array])
    moved = whole.slice(by)
    assert moved.offset == by
    return moved


def each_column_shifted(batch: pa.RecordBatch, seed: int) -> pa.RecordBatch:
    """Every column at its own array offset (1..13, mostly not multiples of eight)."""
    arrays = [shifted(batch.column(i), (seed + 5 * i) % 13 + 1) for i in range(batch.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def hashes_of(batch: pa.RecordBatch, name: str = "hash") -> list[bytes | None]:
    values: list[bytes | None] = batch.column(name).to_pylist()
    return values


def previous_of(batch: pa.RecordBatch, start: int) -> bytes:
    """The hash before row ``start`` of a whole first segment's batch."""
    if start == 0:
        return ZERO_HASH
    value = hashes_of(batch)[start - 1]
    assert value is not None
    return value


# -- the real ledger ------------------------------------------------------------------------------


def rich_event(i: int) -> dict[str, Any]:
    """Events that differ in which fields are present, with tricky text in many of them."""
    n = len(TRICKY)
    event = tool_event(i, tool=TRICKY[i % n], intent=TRICKY[(5 * i + 3) % n])
    if i % 3 == 0:
        event["credential_scopes"] = list(TRICKY[i % 4 : i % 4 + i % 5])  # sometimes empty
    if i % 4 == 1:
        event["intent_scopes"] = [TRICKY[(i + k) % n] for k in range(i % 6)]
    if i % 5 == 2:
        full = {k: v for k, v in FULL_EVENT.items() if k not in ("event_id", "time", "agent_id")}
        event |= full | {"bytes": i * 10 ** (i % 15), "external": i % 2 == 0}
    if i % 2 == 0:
        event["attrs"] = {"n": i, "s": TRICKY[i % n], "nested": {"l": [1, "}{", None, True]}}
    if i % 7 == 3:
        event["error"] = 'ünï "quoted" \\ {braces} [brackets]'
    return event


@dataclass(frozen=True)
class Stored:
    writer_id: str
    paths: tuple[Path, ...]
    batches: tuple[pa.RecordBatch, ...]  # each segment's rows, read as verify reads them

    @property
    def first(self) -> pa.RecordBatch:
        return self.batches[0]

    def __repr__(self) -> str:  # failure reports would otherwise print every row
        return f"Stored({self.writer_id!r}, {[p.name for p in self.paths]})"


def read_like_verify(path: Path) -> pa.RecordBatch:
    parquet = pq.ParquetFile(path)
    [batch] = parquet.iter_batches(8192, use_threads=False)
    return batch


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    return stored_segments(tmp_path_factory.mktemp("row-check") / "ledger")


def stored_segments(root: Path) -> Stored:
    """A new ledger at ``root`` holding ``rich_event`` rows in segments of SEGMENT_SIZES."""
    Ledger.init(root)
    writer_ids = set()
    first = 0
    for size in SEGMENT_SIZES:
        with Ledger.open(root) as opened:
            writer_ids.add(opened.append([rich_event(first + i) for i in range(size)]).writer_id)
        first += size
    [writer_id] = writer_ids
    paths = tuple(sorted((root / "writers" / writer_id / "segments").glob("*.parquet")))
    assert len(paths) == len(SEGMENT_SIZES)
    batches = tuple(read_like_verify(path) for path in paths)
    assert [b.num_rows for b in batches] == list(SEGMENT_SIZES)
    assert batches[0].schema.remove_metadata().equals(SEGMENT_SCHEMA)
    return Stored(writer_id, paths, batches)


# -- real rows ------------------------------------------------------------------------------------


def test_the_reference_agrees_with_the_writer_and_with_whole_object_rfc8785(
    stored: Stored,
) -> None:
    """The reference's bytes hash to what the writer stored (its own route from the client's
    text), and equal rfc8785 over the whole row (the route test_rebuild takes)."""
    for batch in stored.batches:
        for row in batch.to_pylist():
            canonical = reference_canonical(row)
            assert leaf_hash(canonical) == row["leaf_hash"]
            assert chain_hash(row["prev_hash"], row["leaf_hash"]) == row["hash"]
            whole = {
                k: (_utc_text(v) if isinstance(v, datetime) else v)
                for k, v in row.items()
                if v is not None and k not in HASH_COLUMNS
            }
            if "attrs" in whole:
                whole["attrs"] = json.loads(whole["attrs"])
            assert canonical == bytes(rfc8785.dumps(whole))


def test_stored_segments_check_whole(stored: Stored) -> None:
    first, second = stored.batches
    flags = checked_like_reference(first, 0, stored.writer_id, ZERO_HASH)
    assert flags == [ROW_OK] * first.num_rows
    assert check_rows(first, 0, stored.writer_id, None).flags.tolist() == flags
    # The second segment continues the first.
    last = previous_of(first, first.num_rows)
    flags = checked_like_reference(second, first.num_rows, stored.writer_id, last)
    assert flags == [ROW_OK] * second.num_rows
    leaves = check_rows(second, first.num_rows, stored.writer_id, last).leaves
    assert leaves.tobytes() == b"".join(hashes_of(second, "leaf_hash"))  # type: ignore[arg-type]


@pytest.mark.parametrize("start", [0, 1, 3, 7, 8, 9, 15, 16, 17, 30, 59, 60])
def test_slices_check_like_the_rows_they_hold(stored: Stored, start: int) -> None:
    batch = stored.first
    for length in sorted({1, 2, 8, 9, batch.num_rows - start}):
        if start + length > batch.num_rows:
            continue
        part = batch.slice(start, length)
        assert part.column("hash").offset == start or start == 0
        flags = checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))
        assert flags == [ROW_OK] * length
        # Counted from the wrong place, every row's seq is wrong, and only that.
        flags = checked_like_reference(part, start + 1, stored.writer_id, None)
        assert flags == [ALL_BUT[SEQ_OK]] * length


def test_every_row_alone_checks(stored: Stored) -> None:
    batch = stored.first
    for row in range(batch.num_rows):
        one = batch.slice(row, 1)
        checked = check_rows(one, row, stored.writer_id, previous_of(batch, row))
        assert checked.flags.tolist() == [ROW_OK]
        assert checked.failing == 0
        assert checked.leaves.tobytes() == hashes_of(batch, "leaf_hash")[row]
    assert checked_like_reference(batch.slice(13, 1), 13, stored.writer_id, None) == [ROW_OK]


def test_zero_row_batches(stored: Stored) -> None:
    batch = stored.first
    empties = [batch.slice(start, 0) for start in (0, 5, 8, batch.num_rows)]
    empties.append(pa.RecordBatch.from_pylist([], schema=SEGMENT_SCHEMA))
    for empty in empties:
        checked = check_rows(empty, 0, stored.writer_id, ZERO_HASH)
        assert checked.flags.shape == (0,)
        assert checked.failing == 0
        assert checked.leaves.shape == (0, 32)
        assert checked_like_reference(empty, 7, "someone-else", b"\x01" * 32) == []


def test_every_column_at_its_own_offset(stored: Stored) -> None:
    """Columns whose array offsets differ from each other and from eight-bit boundaries."""
    batch = stored.first
    for seed in (0, 3, 6):
        moved = each_column_shifted(batch, seed)
        offsets = {moved.column(i).offset for i in range(moved.num_columns)}
        assert len(offsets) > 5
        flags = checked_like_reference(moved, 0, stored.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        part = moved.slice(11, 29)  # a slice of a batch of offset arrays: offsets add up
        flags = checked_like_reference(part, 11, stored.writer_id, previous_of(batch, 11))
        assert flags == [ROW_OK] * 29


# -- nulls in the checked columns -----------------------------------------------------------------


def expected_for_null(column: str, rows: int, nulls: set[int], previous_given: bool) -> list[int]:
    """The flags of a whole, otherwise intact, batch with ``column`` null at ``nulls``."""
    bits: dict[int, int] = {}

    def fail(row: int, bit: int) -> None:
        if row < rows:
            bits[row] = bits.get(row, 0) | bit

    for row in nulls:
        if column == "prev_hash":
            fail(row, HASH_OK)
            if row > 0 or previous_given:
                fail(row, LINK_OK)
        elif column == "leaf_hash":
            fail(row, HASH_OK)
        elif column == "hash":
            fail(row, HASH_OK)
            fail(row + 1, LINK_OK)
        elif column == "seq":  # also a member of the canonical bytes
            fail(row, SEQ_OK | HASH_OK)
        elif column == "writer_id":  # also a member of the canonical bytes
            fail(row, WRITER_OK | HASH_OK)
    return failing_at(rows, bits)


@pytest.mark.parametrize("column", ["prev_hash", "leaf_hash", "hash", "seq", "writer_id"])
def test_nulls_at_the_first_middle_and_last_row(stored: Stored, column: str) -> None:
    batch = stored.first
    last = batch.num_rows - 1
    nulls = {0, 9, 30, last}
    forged = with_values(batch, column, dict.fromkeys(nulls))
    assert forged.column(column).null_count == len(nulls)
    for previous in (None, ZERO_HASH):
        flags = checked_like_reference(forged, 0, stored.writer_id, previous)
        assert flags == expected_for_null(column, batch.num_rows, nulls, previous is not None)
    # Slices put the null bits at other bit offsets, and start or end on a null row.
    for start, length in ((1, 60), (9, 22), (3, 7), (30, 1), (last, 1), (29, 2), (10, 20)):
        part = forged.slice(start, length)
        inside = {row - start for row in nulls if start <= row < start + length}
        assert part.column(column).null_count == len(inside)
        flags = checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))
        assert flags == expected_for_null(column, length, inside, previous_given=True)
    # The same nulls in a column at its own offset, other columns at theirs.
    moved = each_column_shifted(forged, 4)
    assert checked_like_reference(moved, 0, stored.writer_id, None) == expected_for_null(
        column, batch.num_rows, nulls, previous_given=False
    )


def test_nulls_in_every_checked_column_at_once(stored: Stored) -> None:
    batch = stored.first
    forged = batch
    for k, column in enumerate(("prev_hash", "leaf_hash", "hash", "seq", "writer_id")):
        forged = with_values(forged, column, {k: None, 20 + 7 * k: None, 60 - k: None})
    flags = checked_like_reference(forged.slice(0, 61), 0, stored.writer_id, ZERO_HASH)
    assert flags.count(ROW_OK) < batch.num_rows - 10
    for start in (1, 5, 13, 21):
        part = forged.slice(start)
        checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))


def masked(array: pa.Array, rows: set[int]) -> pa.Array:
    """The same buffers under a validity bitmap that nulls ``rows``: each null hides the intact
    value still stored beneath it, which a check must not read."""
    assert array.offset == 0
    bitmap = pa.array([row not in rows for row in range(len(array))], pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(array.type, len(array), [bitmap, *array.buffers()[1:]])


@pytest.mark.parametrize("column", ["prev_hash", "leaf_hash", "hash", "seq", "writer_id"])
def test_nulls_hiding_intact_values(stored: Stored, column: str) -> None:
    batch = stored.first
    rows = batch.num_rows
    nulls = {0, 8, 17, 30, rows - 1}
    forged = replaced(batch, column, masked(batch.column(column), nulls))
    assert forged.column(column).null_count == len(nulls)
    assert forged.column(column).buffers()[-1] == batch.column(column).buffers()[-1]
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == expected_for_null(column, rows, nulls, previous_given=True)
    for start in (1, 8, 13, 30):
        part = forged.slice(start, 20)
        inside = {row - start for row in nulls if start <= row < start + 20}
        flags = checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))
        assert flags == expected_for_null(column, 20, inside, previous_given=True)


# -- forged content: lists, text, attrs ---------------------------------------------------------


def list_column(rows: int, seed: int) -> pa.Array:
    """A list<string> column with null items, empty lists, null lists (one over a non-empty
    range of items), items that are themselves a slice at an odd offset, and tricky text."""
    pool = [None if k % 5 == 3 else TRICKY[(k + seed) % len(TRICKY)] for k in range(3 * rows + 20)]
    items = pa.array(pool, pa.string()).slice(3 + seed % 4)
    offsets = [0]
    valid = []
    for row in range(rows):
        kind = (row + seed) % 6
        length = {0: 0, 1: 1, 2: 3, 3: 2, 4: 0, 5: 1}[kind]
        offsets.append(offsets[-1] + length)
        valid.append(kind not in (3, 4))  # kind 3: a null list over two items
    first = 2  # the list's offsets do not start at 0 either
    offsets_array = pa.array([first + offset for offset in offsets], pa.int32())
    mask = pa.array([not v for v in valid], pa.bool_())
    column = pa.ListArray.from_arrays(offsets_array, items, mask=mask)
    assert column.null_count > 0
    assert column.values.offset > 0
    assert column.values.null_count > 0
    return column


def test_list_columns_with_null_items_empty_and_null_lists(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    forged = replaced(batch, "credential_scopes", list_column(rows, 0))
    forged = replaced(forged, "intent_scopes", list_column(rows + 9, 1).slice(9))
    listed = forged.column("credential_scopes").to_pylist()
    assert [] in listed
    assert None in listed
    assert any(items and None in items for items in listed)
    # Unchanged hashes: every row whose lists now read differently fails its hash, only that.
    changed = {
        row
        for row, (old, new) in enumerate(zip(batch.to_pylist(), forged.to_pylist(), strict=True))
        if (old["credential_scopes"], old["intent_scopes"])
        != (new["credential_scopes"], new["intent_scopes"])
    }
    assert 0 < len(changed) < rows
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, dict.fromkeys(changed, HASH_OK))
    # Hashes recomputed by a forger: the rebuilt bytes are the reference's, so all rows pass.
    forged = rechained(forged, ZERO_HASH)
    assert checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH) == [ROW_OK] * rows
    for start in (1, 7, 9, 17, 55):
        part = forged.slice(start, min(13, rows - start))
        previous = previous_of(forged, start)
        flags = checked_like_reference(part, start, stored.writer_id, previous)
        assert flags == [ROW_OK] * part.num_rows
    moved = each_column_shifted(forged, 2)
    assert checked_like_reference(moved, 0, stored.writer_id, None) == [ROW_OK] * rows


def test_text_needing_escapes_and_non_ascii(stored: Stored) -> None:
    """Text the writer never stores (NUL, every control character) still rebuilds exactly."""
    batch = stored.first
    rows = batch.num_rows
    controls = "".join(map(chr, range(32)))
    texts = [
        controls,
        controls[::-1] + "\x7f",
        "\\" * 9 + '"' * 9,
        "ab\x00cd" * 20,  # past 64 bytes, escapes across eight-byte words
        "ü" * 7 + "\n" + "€" * 5 + "\U0001f4a9",
        "",
        None,
        "x" * 63 + "\t",
        "y" * 64,
        "\u2028\u2029\ufeff\uffff",
    ]
    for column in ("tool", "error", "agent_id", "writer_id"):
        values = {row: texts[(row + len(column)) % len(texts)] for row in range(rows)}
        if column in ("agent_id", "writer_id"):
            values = {row: text for row, text in values.items() if text is not None}
        forged = rechained(with_values(batch, column, values), ZERO_HASH)
        flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
        if column == "writer_id":  # now wrong, though hashed: only the writer check fails
            assert flags == failing_at(rows, dict.fromkeys(values, WRITER_OK))
        else:
            assert flags == [ROW_OK] * rows
        checked_like_reference(forged.slice(3, 30), 3, stored.writer_id, previous_of(forged, 3))
    # A one-byte change inside an escaped run is seen.
    edited = with_values(batch, "tool", {12: TRICKY[3].replace("\t", "\x0b")})
    flags = checked_like_reference(edited, 0, stored.writer_id, None)
    assert flags == failing_at(rows, {12: HASH_OK})


MALFORMED_ATTRS = (
    '{"a":1},"b":2',  # closes early: the rest would read as members of the event
    "[]",
    "{",
    "}",
    "",
    '"text"',
    "1",
    "null",
    '{"a":1}}',
    '{"a":1} ',
    ' {"a":1}',
    '{"a":"unterminated}',
    '{"a":1}{"b":2}',
)
WELL_FORMED_ATTRS = (
    "{}",
    '{"a":1}',
    '{"a":"}{","b":[1,{"c":"\\"}"}]}',
    '{"k":"\\\\"}',
    '{"k":"ü☃\\u0000"}',
    '{"n":{"m":{"o":[[],[{}]]}}}',
)


def test_malformed_attrs_fail_the_hash_even_when_rehashed(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    values: dict[int, str | None] = {}
    for k, text in enumerate(MALFORMED_ATTRS + WELL_FORMED_ATTRS):
        values[3 * k + 1] = text
    values[0] = None
    values[rows - 1] = "{"
    bad = {row for row, text in values.items() if reference_malformed(text)}
    assert len(bad) == len(MALFORMED_ATTRS) + 1
    forged = rechained(with_values(batch, "attrs", values), ZERO_HASH)
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, dict.fromkeys(bad, HASH_OK))
    for start in (1, 6, 9, 33):
        part = forged.slice(start, 20)
        checked_like_reference(part, start, stored.writer_id, previous_of(forged, start))
    moved = each_column_shifted(forged, 5)
    assert checked_like_reference(moved, 0, stored.writer_id, None) == flags


# -- tables: concatenated, combined, cast -------------------------------------------------------


def test_concatenated_and_combined_tables(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    cuts = (0, 7, 8, 23, 40, rows)
    pieces = [pa.Table.from_batches([batch.slice(a, b - a)]) for a, b in itertools.pairwise(cuts)]
    table = pa.concat_tables(pieces)
    # Chunk by chunk, each carried on from the one before.
    position = 0
    for chunk in table.to_batches():
        previous = previous_of(batch, position)
        flags = checked_like_reference(chunk, position, stored.writer_id, previous)
        assert flags == [ROW_OK] * chunk.num_rows
        position += chunk.num_rows
    assert position == rows
    [combined] = table.combine_chunks().to_batches()
    assert checked_like_reference(combined, 0, stored.writer_id, ZERO_HASH) == [ROW_OK] * rows
    # Out of order: the moved rows' seqs and the links at the seams fail.
    swapped = pa.concat_tables([pieces[3], pieces[0], pieces[1], pieces[2], pieces[4]])
    [combined] = swapped.combine_chunks().to_batches()
    flags = checked_like_reference(combined, 0, stored.writer_id, ZERO_HASH)
    assert flags[0] == ROW_OK & ~SEQ_OK & ~LINK_OK
    # Only the rows after the swapped ones pass, but for the first of them: its link.
    assert flags[cuts[4] :] == failing_at(rows - cuts[4], {0: LINK_OK})
    assert flags.count(ROW_OK) == rows - cuts[4] - 1
    # Two segments' rows, one of them forged, combined.
    forged = replaced(stored.first, "credential_scopes", list_column(rows, 3))
    tables = [pa.Table.from_batches([b]) for b in (forged, *stored.batches[1:])]
    [combined] = pa.concat_tables(tables).combine_chunks().to_batches()
    flags = checked_like_reference(combined, 0, stored.writer_id, ZERO_HASH)
    assert flags[rows:] == [ROW_OK] * SEGMENT_SIZES[1]


def large_types(schema: pa.Schema, skip: Sequence[str] = ()) -> pa.Schema:
    """The schema with string columns as large_string and lists as large lists of them."""
    fields = []
    for field in schema:
        kind = field.type
        if field.name in skip:
            pass
        elif kind == pa.string():
            kind = pa.large_string()
        elif pa.types.is_list(kind):
            kind = pa.large_list(pa.large_string())
        fields.append(field.with_type(kind))
    return pa.schema(fields)


def test_columns_cast_from_large_types(stored: Stored) -> None:
    """Canonical columns of other types are cast to the schema's (writer_id: see below)."""
    forged = replaced(stored.first, "intent_scopes", list_column(SEGMENT_SIZES[0], 2))
    tables = [pa.Table.from_batches([b]) for b in (forged, *stored.batches[1:])]
    [whole] = pa.concat_tables(tables).combine_chunks().to_batches()
    whole = rechained(whole, ZERO_HASH)
    rows = whole.num_rows
    large = pa.Table.from_batches([whole.slice(0, 40), whole.slice(40)])
    large = large.cast(large_types(large.schema, skip=("writer_id",)))
    assert large.schema.field("tool").type == pa.large_string()
    assert pa.types.is_large_list(large.schema.field("credential_scopes").type)
    # Chunk by chunk: the second chunk's arrays are offset 40 into the cast buffers.
    first, second = large.to_batches()
    assert second.column("attrs").type == pa.large_string()
    assert checked_like_reference(first, 0, stored.writer_id, ZERO_HASH) == [ROW_OK] * 40
    flags = checked_like_reference(second, 40, stored.writer_id, previous_of(whole, 40))
    assert flags == [ROW_OK] * (rows - 40)
    [combined] = large.combine_chunks().to_batches()
    assert checked_like_reference(combined, 0, stored.writer_id, ZERO_HASH) == [ROW_OK] * rows
    part = combined.slice(5, 60)
    assert checked_like_reference(part, 5, stored.writer_id, None) == [ROW_OK] * 60
    edited = with_values(combined, "tool", {70: "edited"})
    flags = checked_like_reference(edited, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, {70: HASH_OK})


_CAST_CHECK = """
import json, sys
import pyarrow as pa
import pyarrow.parquet as pq
pa.set_memory_pool(pa.system_memory_pool())  # glibc malloc: MALLOC_PERTURB_ fills freed blocks
from ledger.rebuild import check_rows
path, writer_id = sys.argv[1], sys.argv[2]
batch = pq.ParquetFile(path).read_row_group(0).to_batches()[0]
for name, kind in CASTS:
    index = batch.schema.get_field_index(name)
    cast = batch.column(index).cast(kind)
    batch = batch.set_column(index, batch.schema.field(index).with_type(kind), cast)
print(json.dumps(check_rows(batch, 0, writer_id, bytes(32)).flags.tolist()))
"""


@pytest.mark.parametrize(
    "casts",
    [
        pytest.param("[('writer_id', pa.large_string())]", id="writer_id-large_string"),
        pytest.param("[('seq', pa.int32())]", id="seq-int32"),
        pytest.param(
            "[(n, pa.binary()) for n in ('prev_hash', 'leaf_hash', 'hash')]", id="hashes-binary"
        ),
    ],
)
def test_checked_columns_cast_from_other_types(stored: Stored, casts: str) -> None:
    """writer_id, seq and the hash columns, of another type, are cast too: the casts must live
    while the compiled loop reads them. Run where freed memory is overwritten at once (glibc's
    allocator with MALLOC_PERTURB_), so reading a freed cast cannot pass by luck."""
    script = textwrap.dedent(_CAST_CHECK.replace("CASTS", casts))
    done = run_python(script, str(stored.paths[0]), stored.writer_id, MALLOC_PERTURB_="165")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [ROW_OK] * SEGMENT_SIZES[0]


# -- each check failing alone -------------------------------------------------------------------

POSITIONS = (0, 8, 29, 60)  # first, on a byte boundary of the bitmaps, middle, last


def _edits(column: str, row: int, writer_id: str) -> tuple[Any, ...]:
    if column == "seq":
        return (row + 1, row - 1, -1, 2**62)
    return (writer_id[:-1], writer_id + "x", writer_id[:-1] + "Z", "", "ü" + writer_id[2:])


@pytest.mark.parametrize("row", POSITIONS)
@pytest.mark.parametrize(
    ("column", "flag", "before", "width"), [("seq", SEQ_OK, 3, 9), ("writer_id", WRITER_OK, 2, 11)]
)
def test_an_edited_seq_or_writer_id_fails_only_its_own_check(
    stored: Stored, row: int, column: str, flag: int, before: int, width: int
) -> None:
    """Even rehashed, the edit fails only that row's seq or writer check, in a slice too."""
    batch = stored.first
    rows = batch.num_rows
    writer_id = stored.writer_id
    for value in _edits(column, row, writer_id):
        forged = rechained(with_values(batch, column, {row: value}), ZERO_HASH)
        flags = checked_like_reference(forged, 0, writer_id, ZERO_HASH)
        assert flags == failing_at(rows, {row: flag})
    start = max(row - before, 0)
    part = forged.slice(start, min(width, rows - start))
    flags = checked_like_reference(part, start, writer_id, previous_of(forged, start))
    assert flags == failing_at(part.num_rows, {row - start: flag})


def test_the_wrong_writer_or_first_seq_fails_every_row(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    writer_id = stored.writer_id
    for other in (writer_id[:-1], writer_id + "\x00", writer_id.upper(), "", "ü" * 8):
        flags = checked_like_reference(batch, 0, other, ZERO_HASH)
        assert flags == [ALL_BUT[WRITER_OK]] * rows
    for first_seq in (1, -1, 61, 2**40):
        flags = checked_like_reference(batch, first_seq, writer_id, ZERO_HASH)
        assert flags == [ALL_BUT[SEQ_OK]] * rows


@pytest.mark.parametrize("row", POSITIONS)
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("tool", "tool-edited"),
        ("bytes", 10**12 + 1),
        ("external", True),
        ("time", datetime(2026, 3, 1, 10, 0, 0, 1, tzinfo=UTC)),
        ("observed_time", datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("attrs", '{"n":-1}'),
        ("credential_scopes", ["edited"]),
        ("intent", None),
    ],
)
def test_an_edited_column_fails_only_the_hash_check(
    stored: Stored, row: int, column: str, value: Any
) -> None:
    batch = stored.first
    assert batch.column(column)[row].as_py() != value
    forged = with_values(batch, column, {row: value})
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(batch.num_rows, {row: HASH_OK})
    start = max(row - 5, 0)
    part = forged.slice(start)
    flags = checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))
    assert flags == failing_at(part.num_rows, {row - start: HASH_OK})


@pytest.mark.parametrize("row", POSITIONS)
def test_an_edited_stored_hash(stored: Stored, row: int) -> None:
    batch = stored.first
    rows = batch.num_rows
    stored_leaf = hashes_of(batch, "leaf_hash")[row]
    stored_hash = hashes_of(batch)[row]
    assert stored_leaf is not None and stored_hash is not None
    flipped_leaf = bytes([stored_leaf[0] ^ 1]) + stored_leaf[1:]
    flipped_hash = stored_hash[:31] + bytes([stored_hash[31] ^ 0x80])
    # A stored leaf hash changed: that row's hash check only.
    forged = with_values(batch, "leaf_hash", {row: flipped_leaf})
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, {row: HASH_OK})
    # A stored hash changed: that row's hash check, and the next row's link to it.
    forged = with_values(batch, "hash", {row: flipped_hash})
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, {row: HASH_OK, row + 1: LINK_OK})
    part = forged.slice(row, 2)
    flags = checked_like_reference(part, row, stored.writer_id, previous_of(batch, row))
    assert flags == failing_at(part.num_rows, {0: HASH_OK, 1: LINK_OK})


@pytest.mark.parametrize("row", [1, 7, 8, 29, 60])
def test_a_broken_link_fails_only_the_link_check(stored: Stored, row: int) -> None:
    """prev_hash of a row changed and the chain rehashed from it: only that row's link fails."""
    batch = stored.first
    rows = batch.num_rows
    forged = rechained(batch, b"\x5a" * 32, start=row)
    assert hashes_of(forged)[: row - 1] == hashes_of(batch)[: row - 1]
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == failing_at(rows, {row: LINK_OK})
    for start in (row - 1, max(row - 9, 0)):
        part = forged.slice(start, row - start + 1)
        flags = checked_like_reference(part, start, stored.writer_id, previous_of(batch, start))
        assert flags == failing_at(part.num_rows, {row - start: LINK_OK})
    # Starting at the broken row, the link is to ``previous``.
    assert checked_like_reference(forged.slice(row), row, stored.writer_id, None) == [ROW_OK] * (
        rows - row
    )
    previous = hashes_of(forged, "prev_hash")[row]
    flags = checked_like_reference(forged.slice(row), row, stored.writer_id, previous)
    assert flags == [ROW_OK] * (rows - row)


@pytest.mark.parametrize("start", [0, 1, 8, 30, 60])
def test_the_wrong_previous_fails_only_the_first_link(stored: Stored, start: int) -> None:
    batch = stored.first
    part = batch.slice(start)
    right = previous_of(batch, start)
    assert checked_like_reference(part, start, stored.writer_id, right) == [ROW_OK] * len(part)
    for wrong in (right[:31] + bytes([right[31] ^ 1]), b"\xff" * 32, chain_hash(right, right)):
        flags = checked_like_reference(part, start, stored.writer_id, wrong)
        assert flags == failing_at(len(part), {0: LINK_OK})
    # A null prev_hash in the first row fails its link to any previous, and its hash always.
    nulled = with_values(batch, "prev_hash", {start: None}).slice(start)
    flags = checked_like_reference(nulled, start, stored.writer_id, right)
    assert flags == failing_at(len(part), {0: HASH_OK | LINK_OK})
    flags = checked_like_reference(nulled, start, stored.writer_id, None)
    assert flags == failing_at(len(part), {0: HASH_OK})


@pytest.mark.parametrize(
    "previous",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(31), id="31-bytes"),
        pytest.param(bytes(32) + b"\x01", id="33-bytes"),
    ],
)
def test_a_previous_of_another_length_never_links(stored: Stored, previous: bytes) -> None:
    """Only None leaves the first link unchecked: no 32-byte prev_hash equals other bytes.

    The first stored row's prev_hash is 32 zero bytes, which each of these resembles."""
    part = stored.first.slice(0, 3)
    assert hashes_of(part, "prev_hash")[0] == ZERO_HASH
    flags = checked_like_reference(part, 0, stored.writer_id, previous)
    assert flags == failing_at(3, {0: LINK_OK})


# -- a property over random layouts ---------------------------------------------------------------

CHECKED_COLUMNS = ("prev_hash", "leaf_hash", "hash", "seq", "writer_id", "attrs", "tool")


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    rows = SEGMENT_SIZES[0]
    start = draw(st.integers(0, rows))
    return {
        "start": start,
        "length": draw(st.integers(0, rows - start)),
        "nulls": {
            name: draw(st.sets(st.integers(0, rows - 1), max_size=4))
            for name in draw(st.sets(st.sampled_from(CHECKED_COLUMNS), max_size=3))
        },
        "lists": draw(st.booleans()),
        "shift": draw(st.none() | st.integers(0, 12)),
        "rechain": draw(st.booleans()),
        "seq_delta": draw(st.sampled_from((0, 0, 1))),
        "previous": draw(st.sampled_from(("right", "none", "wrong"))),
        "writer": draw(st.sampled_from(("right", "right", "wrong"))),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layout=layouts())
def test_random_layouts_check_like_the_reference(stored: Stored, layout: dict[str, Any]) -> None:
    batch = stored.first
    if layout["lists"]:
        batch = replaced(batch, "credential_scopes", list_column(batch.num_rows, 5))
    if layout["rechain"]:
        batch = rechained(batch, ZERO_HASH)
    for name, rows in layout["nulls"].items():
        batch = with_values(batch, name, dict.fromkeys(rows))
    if layout["shift"] is not None:
        batch = each_column_shifted(batch, layout["shift"])
    start, length = layout["start"], layout["length"]
    previous = {
        "right": previous_of(stored.first, start),
        "none": None,
        "wrong": b"\x07" * 32,
    }[layout["previous"]]
    writer_id = stored.writer_id if layout["writer"] == "right" else stored.writer_id + "-"
    part = batch.slice(start, length)
    flags = checked_like_reference(part, start + layout["seq_delta"], writer_id, previous)
    untouched = not (layout["nulls"] or layout["lists"] or layout["seq_delta"])
    if untouched and layout["previous"] != "wrong" and layout["writer"] == "right":
        assert flags == [ROW_OK] * length


# -- check_segment on a rewritten segment ---------------------------------------------------------


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Segments read eight rows a batch, so rows are linked across batches through previous."""
    monkeypatch.setattr(verify_module, "_BATCH_ROWS", 8)
    yield 8


def test_check_segment_reports_a_tampered_row(
    stored: Stored, tmp_path: Path, small_batches: int
) -> None:
    path = tmp_path / stored.paths[0].name
    shutil.copyfile(stored.paths[0], path)
    intact = check_segment(str(path), 0, stored.writer_id)
    assert (intact.rows, intact.failing, intact.error_code) == (SEGMENT_SIZES[0], (), "")
    assert intact.leaves == b"".join(hashes_of(stored.first, "leaf_hash"))  # type: ignore[arg-type]
    assert intact.last_hash == previous_of(stored.first, SEGMENT_SIZES[0])
    # Row 5's tool edited; row 15's stored hash (the last of its batch) changed, so row 16,
    # first of the next batch, no longer links to it.
    table = pq.read_table(path)
    forged = with_values(table.combine_chunks().to_batches()[0], "tool", {5: "edited"})
    flipped = bytes(32 - len(b"x")) + b"x"
    forged = with_values(forged, "hash", {15: flipped})
    pq.write_table(pa.Table.from_batches([forged]), path, compression="zstd")
    checked = check_segment(str(path), 0, stored.writer_id)
    assert checked.error_code == ""
    assert checked.failing == (
        (5, 5, True, True, False, True),
        (15, 15, True, True, False, True),
        (16, 16, True, True, True, False),
    )
    assert checked.last_hash == intact.last_hash
    # The reference agrees with what check_segment saw, row for row.
    rows = pq.read_table(path).to_pylist()
    reference = reference_check(rows, 0, stored.writer_id, None)
    assert [i for i, f in enumerate(reference.flags) if f != ROW_OK] == [5, 15, 16]
    assert checked.leaves == b"".join(reference.leaves)
