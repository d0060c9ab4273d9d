"""Dictionary-encoded text columns, read through their dictionaries by the compiled row check.

``check_segment`` reads the text columns listed in ``DICTIONARY_TEXT_COLUMNS`` as
``dictionary<int32, string>`` arrays, and ``ledger.rebuild`` reads each of their values through
the dictionary in place (``_value_at``): a code is an index into a dictionary that may itself be
a slice of a bigger array, may hold entries no row uses, and may be out of range (a forged or
broken array), which must fail the row rather than read some other memory.

Every batch here is checked three ways: dictionary-encoded, the same rows plain (cast to the
schema's types), and by ``test_row_check``'s pure-Python reference (``batch.to_pylist()``, which
decodes dictionaries itself). The canonical bytes, rebuilt leaf and chained hashes, the malformed
rows and the row-check flags must agree exactly; tests also state the flags they expect by hand.
Codes outside their dictionary cannot be decoded by Arrow, so those tests state the flags alone,
and run the wildest codes again in a child process, where a stray read would kill only the child.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import run_python

from ledger import Ledger
from ledger import rebuild as rebuild_module
from ledger import verify as verify_module
from ledger.hashing import ZERO_HASH
from ledger.rebuild import (
    _CANONICAL_COLUMNS,
    HASH_OK,
    ROW_OK,
    WRITER_OK,
    _Layout,
    _output_bound,
    canonical_texts,
    check_rows,
    rebuild,
)
from ledger.schema import REQUIRED_FIELDS, SEGMENT_SCHEMA
from ledger.segments import DICTIONARY_TEXT_COLUMNS, STATISTICS_COLUMNS
from ledger.verify import check_segment
from tests.ledger.test_row_check import (
    SEGMENT_SIZES,
    TRICKY,
    Stored,
    checked_like_reference,
    failing_at,
    masked,
    previous_of,
    rechained,
    reference_canonical,
    shifted,
    stored_segments,
    with_values,
)
from tests.ledger.test_tamper import (
    assert_localised,
    expect,
    footer_start,
    realistic_events,
)

DICTIONARY_TEXT = pa.dictionary(pa.int32(), pa.string())
# Always present in a stored row (writer_id is assigned by the ledger), or not.
ALWAYS_PRESENT = (*(n for n in DICTIONARY_TEXT_COLUMNS if n in REQUIRED_FIELDS), "writer_id")
OPTIONAL_CODED = tuple(n for n in DICTIONARY_TEXT_COLUMNS if n not in ALWAYS_PRESENT)
# Canonical text columns that segments store plain: dictionary-encoded by hand they read the same.
OTHER_TEXT = ("event_id", "trace_id", "span_id", "parent_span_id", "caused_by")
POSITIONS = (0, 8, 29, 60)  # first, on a byte boundary of the bitmaps, middle, last
CONTROLS = "".join(map(chr, range(32)))
MIB = 1 << 20
JUNK = ("unused", "\x00junk\x1f", "ü" * 9, "x" * 70, "")  # dictionary entries no row uses


# -- building dictionary columns ------------------------------------------------------------------


def recoded(batch: pa.RecordBatch, name: str, array: pa.Array) -> pa.RecordBatch:
    """The batch with one column replaced by an array of any type (a dictionary, a cast)."""
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, batch.schema.field(index).with_type(array.type), array)


def dictionary_encoded(
    batch: pa.RecordBatch, names: Iterable[str] = DICTIONARY_TEXT_COLUMNS
) -> pa.RecordBatch:
    for name in names:
        batch = recoded(batch, name, pc.dictionary_encode(batch.column(name)))
    return batch


def decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column cast to the segment schema's type: the plain batch of a dictionary batch."""
    for field in SEGMENT_SCHEMA:
        column = batch.column(field.name)
        if column.type != field.type:
            batch = recoded(batch, field.name, column.cast(field.type))
    return batch


def coded(
    column: pa.Array,
    *,
    order: Sequence[int] | None = None,
    before: Sequence[str | None] = (),
    after: Sequence[str | None] = (),
    shift: int = 0,
    hidden: Iterable[int] = (),
) -> pa.DictionaryArray:
    """A plain string column as a dictionary array with awkward buffers: its distinct values in
    ``order`` (a permutation), after ``before`` and before ``after`` entries no row uses, the
    dictionary a slice that starts past ``before``; its codes at array offset ``shift``; and the
    rows ``hidden`` null, their valid codes still stored beneath the null bit."""
    values = column.to_pylist()
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if order is not None:
        distinct = [distinct[i] for i in order]
    where = {value: code for code, value in enumerate(distinct)}
    whole = pa.array([*before, *distinct, *after], pa.string())
    dictionary = whole.slice(len(before))
    codes = pa.array([None if v is None else where[v] for v in values], pa.int32())
    hidden = set(hidden)
    if hidden:
        stored = [0 if v is None else where[v] for v in values]
        codes = masked(
            pa.array(stored, pa.int32()), hidden | {i for i, v in enumerate(values) if v is None}
        )
    array = pa.DictionaryArray.from_arrays(shifted(codes, shift), dictionary)
    assert array.offset == shift
    assert array.dictionary.offset == len(before)
    return array


def stored_codes(column: pa.DictionaryArray) -> np.ndarray:
    """The int32 codes a dictionary column stores, including those beneath its nulls."""
    indices = column.indices
    data = np.frombuffer(indices.buffers()[1], np.int32)
    return data[indices.offset : indices.offset + len(indices)].copy()


def with_codes(batch: pa.RecordBatch, name: str, codes: dict[int, int]) -> pa.RecordBatch:
    """A dictionary column's codes set at some rows (which become valid), unchecked: codes may
    lie outside the dictionary, which Arrow itself would refuse. Other rows keep their codes,
    nulls included with the codes beneath them."""
    column = batch.column(name)
    assert column.type == DICTIONARY_TEXT
    stored = stored_codes(column)
    for row, code in codes.items():
        stored[row] = code
    nulls = set(np.flatnonzero(~np.asarray(column.is_valid())).tolist()) - set(codes)
    indices = masked(pa.array(stored, pa.int32()), nulls)
    forged = pa.DictionaryArray.from_arrays(indices, column.dictionary, safe=False)
    return recoded(batch, name, forged)


def is_coded(batch: pa.RecordBatch, name: str) -> bool:
    return bool(pa.types.is_dictionary(batch.schema.field(name).type))


# -- comparing ------------------------------------------------------------------------------------


def reads_like_plain(
    batch: pa.RecordBatch, first_seq: int, writer_id: str, previous: bytes | None
) -> list[int]:
    """A batch with dictionary columns, asserted to rebuild and check exactly as its plain
    counterpart and as the reference do; its flags."""
    assert any(pa.types.is_dictionary(f.type) for f in batch.schema), "nothing dictionary-encoded"
    plain = decoded(batch)
    assert not any(pa.types.is_dictionary(f.type) for f in plain.schema)
    assert canonical_texts(batch) == canonical_texts(plain)
    got, want = rebuild(batch), rebuild(plain)
    assert got.leaves.tobytes() == want.leaves.tobytes()
    assert got.chained.tobytes() == want.chained.tobytes()
    assert got.malformed.tolist() == want.malformed.tolist()
    checked = check_rows(batch, first_seq, writer_id, previous)
    expected = check_rows(plain, first_seq, writer_id, previous)
    assert checked.flags.tolist() == expected.flags.tolist()
    assert checked.failing == expected.failing
    assert checked.leaves.tobytes() == expected.leaves.tobytes()
    # The reference reads the dictionary batch through Arrow's own decoding.
    flags = checked_like_reference(batch, first_seq, writer_id, previous)
    assert flags == expected.flags.tolist()
    return flags


# -- the real ledger ------------------------------------------------------------------------------


def read_coded(path: Path) -> pa.RecordBatch:
    """A segment's rows as check_segment reads them: its dictionary text columns as dictionaries."""
    parquet = pq.ParquetFile(path, read_dictionary=DICTIONARY_TEXT_COLUMNS)
    [batch] = parquet.iter_batches(8192, use_threads=False)
    return batch


@dataclass(frozen=True)
class Segments:
    """The row-check ledger's segments, plain and read as verify reads them."""

    stored: Stored
    coded: tuple[pa.RecordBatch, ...]

    @property
    def writer_id(self) -> str:
        return self.stored.writer_id

    @property
    def plain(self) -> pa.RecordBatch:
        return self.stored.first

    def __repr__(self) -> str:
        return f"Segments({self.stored!r})"


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Segments:
    """Two segments of one writer log holding ``test_row_check``'s rich events (tricky text)."""
    stored = stored_segments(tmp_path_factory.mktemp("dictionary-read") / "ledger")
    return Segments(stored, tuple(read_coded(p) for p in stored.paths))


# -- 1. dictionary columns read like plain ones ---------------------------------------------------


class TestDictionaryColumnsReadLikePlain:
    def test_segments_as_verify_reads_them(self, segments: Segments) -> None:
        first, second = segments.coded
        for batch in segments.coded:
            for name in DICTIONARY_TEXT_COLUMNS:
                assert batch.schema.field(name).type == DICTIONARY_TEXT, name
        assert decoded(first).equals(segments.plain)
        flags = reads_like_plain(first, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * first.num_rows
        last = previous_of(segments.plain, first.num_rows)
        flags = reads_like_plain(second, first.num_rows, segments.writer_id, last)
        assert flags == [ROW_OK] * second.num_rows

    def test_every_text_column_encoded(self, segments: Segments) -> None:
        batch = dictionary_encoded(segments.plain, (*DICTIONARY_TEXT_COLUMNS, *OTHER_TEXT))
        flags = reads_like_plain(batch, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        # One column at a time, the rest plain.
        for name in DICTIONARY_TEXT_COLUMNS:
            one = dictionary_encoded(segments.plain, [name])
            assert reads_like_plain(one, 0, segments.writer_id, None) == [ROW_OK] * one.num_rows

    @pytest.mark.parametrize("start", [0, 1, 3, 7, 8, 9, 17, 30, 59, 60])
    def test_slices(self, segments: Segments, start: int) -> None:
        batch = dictionary_encoded(segments.plain)
        rows = batch.num_rows
        for length in sorted({1, 2, 8, 9, rows - start}):
            if start + length > rows:
                continue
            part = batch.slice(start, length)
            assert part.column("agent_id").offset == start
            previous = previous_of(segments.plain, start)
            flags = reads_like_plain(part, start, segments.writer_id, previous)
            assert flags == [ROW_OK] * length
            # The slices of a segment read by check_segment too.
            part = segments.coded[0].slice(start, length)
            assert reads_like_plain(part, start, segments.writer_id, previous) == [ROW_OK] * length

    @pytest.mark.parametrize("seed", [0, 3, 6])
    def test_codes_and_dictionaries_at_their_own_offsets(
        self, segments: Segments, seed: int
    ) -> None:
        """Codes at array offsets 1..13 (not multiples of eight), each dictionary a slice of a
        bigger array whose other entries (some long, some escaped) no row uses, permuted."""
        batch = segments.plain
        for k, name in enumerate(DICTIONARY_TEXT_COLUMNS):
            column = batch.column(name)
            size = len(set(column.drop_null().to_pylist()))
            order = list(range(size))[::-1] if (seed + k) % 2 else None
            before = JUNK[: (seed + k) % (len(JUNK) + 1)]
            array = coded(
                column, order=order, before=before, after=JUNK, shift=(seed + 5 * k) % 13 + 1
            )
            assert array.to_pylist() == column.to_pylist()
            batch = recoded(batch, name, array)
        offsets = {batch.column(n).offset for n in DICTIONARY_TEXT_COLUMNS}
        assert len(offsets) > 5
        assert {batch.column(n).dictionary.offset for n in DICTIONARY_TEXT_COLUMNS} != {0}
        flags = reads_like_plain(batch, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        part = batch.slice(11, 29)  # offsets add up
        previous = previous_of(segments.plain, 11)
        assert reads_like_plain(part, 11, segments.writer_id, previous) == [ROW_OK] * 29

    @pytest.mark.parametrize("name", ["agent_id", "tool", "error", "sensitivity", "writer_id"])
    def test_nulls_in_the_codes(self, segments: Segments, name: str) -> None:
        """Rows nulled in the codes' validity, valid codes still stored beneath: read as absent."""
        batch = segments.plain
        rows = batch.num_rows
        nulls = {0, 8, 17, 30, rows - 1}
        column = batch.column(name)
        plain = with_values(batch, name, dict.fromkeys(nulls))
        present = {row for row in nulls if column[row].is_valid}
        assert present, "the nulls hide values"
        for shift in (0, 3, 8):
            array = coded(column, hidden=nulls, before=JUNK[:2], shift=shift)
            assert array.null_count == plain.column(name).null_count
            forged = recoded(batch, name, array)
            flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
            bit = HASH_OK | (WRITER_OK if name == "writer_id" else 0)
            assert flags == failing_at(rows, dict.fromkeys(present, bit))
            assert flags == check_rows(plain, 0, segments.writer_id, ZERO_HASH).flags.tolist()
            part = forged.slice(5, 40)
            reads_like_plain(part, 5, segments.writer_id, previous_of(batch, 5))
        # A forger who nulls them and rehashes: the absent values hash as absent.
        if name not in ("agent_id", "writer_id"):
            rehashed = rechained(plain, ZERO_HASH)
            forged = recoded(rehashed, name, coded(batch.column(name), hidden=nulls, shift=5))
            assert reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH) == [ROW_OK] * rows

    def test_unused_entries(self, segments: Segments) -> None:
        """Dictionaries holding entries no row uses, before and after the used ones, including
        every first segment value of another column and text a megabyte long."""
        batch = segments.plain
        pool = sorted(
            {v for n in DICTIONARY_TEXT_COLUMNS for v in batch.column(n).to_pylist() if v}
        )
        extra = [*pool, "\x01" * MIB, *TRICKY]
        for name in DICTIONARY_TEXT_COLUMNS:
            column = batch.column(name)
            batch = recoded(batch, name, coded(column, before=extra[::-1], after=extra))
        assert len(batch.column("tool").dictionary) > len(pool)
        flags = reads_like_plain(batch, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows

    @pytest.mark.parametrize("name", [*OPTIONAL_CODED[:3], "error", *ALWAYS_PRESENT])
    def test_an_empty_dictionary_with_every_row_null(self, segments: Segments, name: str) -> None:
        batch = segments.plain
        rows = batch.num_rows
        for dictionary in (pa.array([], pa.string()), pa.array(JUNK, pa.string()).slice(5)):
            assert len(dictionary) == 0
            empty = pa.DictionaryArray.from_arrays(pa.nulls(rows, pa.int32()), dictionary)
            assert empty.null_count == rows
            forged = recoded(batch, name, empty)
            flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
            had = {row for row, v in enumerate(batch.column(name).to_pylist()) if v is not None}
            bit = HASH_OK | (WRITER_OK if name == "writer_id" else 0)
            assert flags == failing_at(rows, dict.fromkeys(had, bit))
            reads_like_plain(forged.slice(9, 20), 9, segments.writer_id, None)
            # The same through pc.dictionary_encode of an all-null column, rehashed by a forger.
            nulled = rechained(recoded(batch, name, pa.nulls(rows, pa.string())), ZERO_HASH)
            forged = dictionary_encoded(nulled, [name])
            assert len(forged.column(name).dictionary) == 0
            flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
            assert flags == failing_at(
                rows, dict.fromkeys(had if name == "writer_id" else (), WRITER_OK)
            )

    def test_tricky_text_in_every_dictionary_column(self, segments: Segments) -> None:
        """Escapes, control characters, non-ASCII of every UTF-8 length, runs past 64 bytes."""
        batch = segments.plain
        rows = batch.num_rows
        texts = [*TRICKY, CONTROLS, CONTROLS[::-1] + "\x7f", "ab\x00cd" * 20, "y" * 64]
        for k, name in enumerate(DICTIONARY_TEXT_COLUMNS):
            values = {row: texts[(row * 7 + k) % len(texts)] for row in range(rows)}
            batch = with_values(batch, name, values)
        batch = rechained(batch, ZERO_HASH)
        forged = dictionary_encoded(batch)
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        writer_rows = batch.column("writer_id").to_pylist()
        assert flags == [
            ROW_OK if w == segments.writer_id else ROW_OK & ~WRITER_OK for w in writer_rows
        ]
        for start, length in ((3, 30), (8, 8), (60, 1)):
            part = forged.slice(start, length)
            reads_like_plain(part, start, segments.writer_id, previous_of(batch, start))
        # A one-byte change inside an escaped run is seen through the dictionary.
        tool = batch.column("tool").to_pylist()
        row = tool.index(TRICKY[3])
        changed = with_values(batch, "tool", {row: TRICKY[3].replace("\t", "\x0b")})
        flags = reads_like_plain(dictionary_encoded(changed), 0, segments.writer_id, ZERO_HASH)
        before = check_rows(forged, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        assert flags == [f & ~HASH_OK if i == row else f for i, f in enumerate(before)]

    @pytest.mark.parametrize(
        "kind",
        [
            pytest.param(pa.dictionary(pa.int8(), pa.string()), id="int8-codes"),
            pytest.param(pa.dictionary(pa.int64(), pa.string()), id="int64-codes"),
            pytest.param(pa.dictionary(pa.int32(), pa.large_string()), id="large-string"),
            pytest.param(pa.dictionary(pa.int32(), pa.string(), ordered=True), id="ordered"),
        ],
    )
    def test_other_dictionary_types_are_cast(self, segments: Segments, kind: pa.DataType) -> None:
        batch = segments.plain
        for name in DICTIONARY_TEXT_COLUMNS:
            batch = recoded(batch, name, batch.column(name).cast(kind))
        assert batch.schema.field("tool").type == kind
        flags = reads_like_plain(batch, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        edited = with_values(decoded(batch), "agent_id", {29: "agent-innocent"})
        forged = recoded(batch, "agent_id", edited.column("agent_id").cast(kind))
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        assert flags == failing_at(batch.num_rows, {29: HASH_OK})

    def test_non_text_columns_encoded_are_cast(self, segments: Segments) -> None:
        """attrs, seq, times, booleans and hashes dictionary-encoded: read as the schema's type."""
        names = ("attrs", "seq", "time", "external", "bytes", "prev_hash", "leaf_hash", "hash")
        batch = dictionary_encoded(segments.plain, (*names, *DICTIONARY_TEXT_COLUMNS))
        assert is_coded(batch, "attrs") and is_coded(batch, "hash")
        flags = reads_like_plain(batch, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        part = batch.slice(13, 21)
        flags = reads_like_plain(part, 13, segments.writer_id, previous_of(segments.plain, 13))
        assert flags == [ROW_OK] * 21

    def test_dictionaries_of_empty_strings(self, segments: Segments) -> None:
        """One entry, the empty string: the dictionary's data buffer is empty."""
        rows = segments.plain.num_rows
        for name, writer_id in (("error", segments.writer_id), ("writer_id", "")):
            blank = rechained(
                with_values(segments.plain, name, dict.fromkeys(range(rows), "")), ZERO_HASH
            )
            batch = dictionary_encoded(blank)
            assert batch.column(name).dictionary.to_pylist() == [""]
            assert reads_like_plain(batch, 0, writer_id, ZERO_HASH) == [ROW_OK] * rows
            flags = reads_like_plain(batch, 0, "someone", ZERO_HASH)
            assert flags == [ROW_OK & ~WRITER_OK] * rows

    def test_zero_rows(self, segments: Segments) -> None:
        batch = dictionary_encoded(segments.plain)
        empty = dictionary_encoded(pa.RecordBatch.from_pylist([], schema=SEGMENT_SCHEMA))
        for part in (*(batch.slice(start, 0) for start in (0, 5, 8, 61)), empty):
            assert is_coded(part, "agent_id")
            assert canonical_texts(part) == []
            checked = check_rows(part, 0, segments.writer_id, ZERO_HASH)
            assert (checked.flags.shape, checked.failing, checked.leaves.shape) == (
                (0,),
                0,
                (0, 32),
            )
            assert rebuild(part).leaves.shape == (0, 32)


# -- a property over generated rows ---------------------------------------------------------------

TEXT = st.sampled_from(TRICKY) | st.text(max_size=90)


@st.composite
def generated(draw: st.DrawFn) -> dict[str, Any]:
    rows = SEGMENT_SIZES[0]
    names = draw(
        st.lists(st.sampled_from(DICTIONARY_TEXT_COLUMNS), min_size=1, max_size=4, unique=True)
    )
    columns = {}
    for name in names:
        pool = draw(st.lists(TEXT, min_size=1, max_size=6, unique=True))
        choice: st.SearchStrategy[str | None] = st.sampled_from(pool)
        if name not in ALWAYS_PRESENT:
            choice = st.none() | choice
        columns[name] = {
            "values": draw(st.lists(choice, min_size=rows, max_size=rows)),
            "reverse": draw(st.booleans()),
            "before": draw(st.lists(TEXT, max_size=3)),
            "after": draw(st.lists(TEXT, max_size=3)),
            "shift": draw(st.integers(0, 12)),
            "hidden": draw(st.sets(st.integers(0, rows - 1), max_size=4)),
        }
    start = draw(st.integers(0, rows))
    return {
        "columns": columns,
        "rechain": draw(st.booleans()),
        "start": start,
        "length": draw(st.integers(0, rows - start)),
        "previous": draw(st.sampled_from(("right", "none", "wrong"))),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=generated())
def test_generated_rows_read_like_plain(segments: Segments, case: dict[str, Any]) -> None:
    plain = segments.plain
    for name, column in case["columns"].items():
        plain = with_values(plain, name, dict(enumerate(column["values"])))
    if case["rechain"]:
        plain = rechained(plain, ZERO_HASH)
    batch = plain
    for name, column in case["columns"].items():
        values = plain.column(name)
        size = len(set(values.drop_null().to_pylist()))
        array = coded(
            values,
            order=list(range(size))[::-1] if column["reverse"] else None,
            before=column["before"],
            after=column["after"],
            shift=column["shift"],
            hidden=column["hidden"],
        )
        batch = recoded(batch, name, array)
        plain = recoded(plain, name, array.cast(pa.string()))
    start, length = case["start"], case["length"]
    previous = {
        "right": previous_of(plain, start),
        "none": None,
        "wrong": b"\x07" * 32,
    }[case["previous"]]
    flags = reads_like_plain(batch.slice(start, length), start, segments.writer_id, previous)
    assert (
        flags
        == check_rows(
            plain.slice(start, length), start, segments.writer_id, previous
        ).flags.tolist()
    )
    untouched = case["rechain"] and not any(c["hidden"] for c in case["columns"].values())
    if untouched and "writer_id" not in case["columns"] and case["previous"] != "wrong":
        assert flags == [ROW_OK] * length


# -- 2. codes outside the dictionary --------------------------------------------------------------


def out_of_range(length: int, which: str) -> int:
    return {"negative": -1, "length": length, "far": 2**31 - 1, "lowest": -(2**31)}[which]


class TestCodesOutsideTheDictionary:
    @pytest.mark.parametrize("which", ["negative", "length"])
    @pytest.mark.parametrize("row", POSITIONS)
    @pytest.mark.parametrize("name", ["agent_id", "category", "tool", "error", "policy_id"])
    def test_a_text_column_fails_that_rows_hash_only(
        self, segments: Segments, name: str, row: int, which: str
    ) -> None:
        batch = segments.coded[0]
        rows = batch.num_rows
        code = out_of_range(len(batch.column(name).dictionary), which)
        forged = with_codes(batch, name, {row: code})
        assert forged.column(name).indices[row].as_py() == code
        checked = check_rows(forged, 0, segments.writer_id, ZERO_HASH)
        assert checked.flags.tolist() == failing_at(rows, {row: HASH_OK})
        assert checked.failing == 1
        assert checked.outside_dictionary == 1  # which verify reports as an unreadable file
        assert rebuild(forged).malformed.tolist() == [i == row for i in range(rows)]
        assert check_rows(segments.plain, 0, segments.writer_id, ZERO_HASH).outside_dictionary == 0
        plain_texts = canonical_texts(segments.plain)
        texts = canonical_texts(forged)
        assert texts[:row] + texts[row + 1 :] == plain_texts[:row] + plain_texts[row + 1 :]
        leaves = check_rows(segments.plain, 0, segments.writer_id, ZERO_HASH).leaves
        others = [i for i in range(rows) if i != row]
        assert checked.leaves[others].tobytes() == leaves[others].tobytes()
        # Sliced around it, with the codes at an offset.
        start = max(row - 3, 0)
        part = forged.slice(start, min(9, rows - start))
        flags = check_rows(
            part, start, segments.writer_id, previous_of(segments.plain, start)
        ).flags
        assert flags.tolist() == failing_at(part.num_rows, {row - start: HASH_OK})

    @pytest.mark.parametrize("which", ["negative", "length"])
    @pytest.mark.parametrize("row", POSITIONS)
    def test_writer_id_fails_the_writer_and_hash_checks(
        self, segments: Segments, row: int, which: str
    ) -> None:
        batch = segments.coded[0]
        rows = batch.num_rows
        assert len(batch.column("writer_id").dictionary) == 1
        forged = with_codes(batch, "writer_id", {row: out_of_range(1, which)})
        checked = check_rows(forged, 0, segments.writer_id, ZERO_HASH)
        assert checked.flags.tolist() == failing_at(rows, {row: WRITER_OK | HASH_OK})
        assert rebuild(forged).malformed.tolist() == [i == row for i in range(rows)]
        # Even checked against the empty writer id, which the empty text would match.
        assert check_rows(forged, 0, "", None).flags[row] & WRITER_OK == 0

    @pytest.mark.parametrize("name", ["tool", "writer_id"])
    def test_a_forger_who_rehashes_the_row_still_fails(self, segments: Segments, name: str) -> None:
        """The row's hashes recomputed with the value read as the empty string (what the rebuilt
        bytes hold where the code is out of range): the row must still fail, as malformed."""
        rows = segments.plain.num_rows
        empty = rechained(with_values(segments.plain, name, {29: ""}), ZERO_HASH)
        forged = dictionary_encoded(empty)
        assert forged.column(name).dictionary.to_pylist().count("") == 1
        # Before: the empty value is in the dictionary and the row passes (but for its writer).
        flags = check_rows(forged, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        bit = WRITER_OK if name == "writer_id" else 0
        assert flags == failing_at(rows, {29: bit})
        forged = with_codes(forged, name, {29: len(forged.column(name).dictionary)})
        flags = check_rows(forged, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        assert flags == failing_at(rows, {29: HASH_OK | bit})
        assert rebuild(forged).malformed[29]

    def test_codes_past_a_sliced_dictionary_point_at_real_entries(self, segments: Segments) -> None:
        """The dictionary is a slice of a bigger array: the code one before it and one past its
        end name entries that exist in the buffers (which hold the row's own value), yet lie
        outside the dictionary."""
        batch = segments.plain
        rows = batch.num_rows
        column = batch.column("tool")
        distinct = list(dict.fromkeys(column.to_pylist()))
        value = column[8].as_py()
        whole = pa.array([value, *distinct, value], pa.string())
        dictionary = whole.slice(1, len(distinct))
        codes = pa.array([distinct.index(v) for v in column.to_pylist()], pa.int32())
        array = pa.DictionaryArray.from_arrays(codes, dictionary)
        forged = recoded(batch, "tool", array)
        assert (
            check_rows(forged, 0, segments.writer_id, ZERO_HASH).flags.tolist() == [ROW_OK] * rows
        )
        for code in (-1, len(distinct)):
            bad = with_codes(forged, "tool", {8: code})
            flags = check_rows(bad, 0, segments.writer_id, ZERO_HASH).flags.tolist()
            assert flags == failing_at(rows, {8: HASH_OK})

    def test_an_empty_dictionary_has_no_code_in_range(self, segments: Segments) -> None:
        batch = segments.plain
        rows = batch.num_rows
        nulls = pa.array([None] * rows, pa.int32())
        empty = pa.DictionaryArray.from_arrays(nulls, pa.array([], pa.string()))
        forged = with_codes(recoded(batch, "error", empty), "error", {0: 0, 30: -1})
        had = {row for row, v in enumerate(batch.column("error").to_pylist()) if v is not None}
        flags = check_rows(forged, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        assert flags == failing_at(rows, dict.fromkeys(had | {0, 30}, HASH_OK))
        assert rebuild(forged).malformed.nonzero()[0].tolist() == [0, 30]

    @pytest.mark.parametrize("name", ["tool", "writer_id"])
    def test_a_code_out_of_range_under_a_null_reads_as_absent(
        self, segments: Segments, name: str
    ) -> None:
        batch = segments.coded[0]
        rows = batch.num_rows
        column = batch.column(name)
        stored = stored_codes(column)
        stored[[3, 9]] = [-5, 2**31 - 1]
        nulls = {3, 9}
        indices = masked(pa.array(stored, pa.int32()), nulls)
        forged = recoded(
            batch, name, pa.DictionaryArray.from_arrays(indices, column.dictionary, safe=False)
        )
        plain = with_values(segments.plain, name, dict.fromkeys(nulls))
        checked = check_rows(forged, 0, segments.writer_id, ZERO_HASH)
        assert (
            checked.flags.tolist()
            == check_rows(plain, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        )
        bit = HASH_OK | (WRITER_OK if name == "writer_id" else 0)
        assert checked.flags.tolist() == failing_at(rows, dict.fromkeys(nulls, bit))
        assert not rebuild(forged).malformed.any()
        assert canonical_texts(forged) == canonical_texts(plain)

    def test_wild_codes_in_a_child_process(self, segments: Segments) -> None:
        """Codes as far outside as int32 goes, in every dictionary column at once, in a fresh
        interpreter: a read through an unchecked code would crash it, not this test run."""
        done = run_python(_WILD_CODES, str(segments.stored.paths[0]), segments.writer_id)
        assert done.returncode == 0, f"child exited {done.returncode}: {done.stderr[-3000:]}"
        result = json.loads(done.stdout.splitlines()[-1])
        rows = segments.plain.num_rows
        for name, flags in result["columns"].items():
            bit = HASH_OK | (WRITER_OK if name == "writer_id" else 0)
            assert flags == failing_at(rows, dict.fromkeys(WILD_ROWS, bit)), name
        assert result["all"] == failing_at(rows, dict.fromkeys(WILD_ROWS, HASH_OK | WRITER_OK))
        assert result["malformed"] == sorted(WILD_ROWS)


WILD_ROWS = {0: "far", 7: "lowest", 8: "negative", 60: "length"}

_WILD_CODES = """
import json, sys
sys.path[:0] = ["tests", "."]
from tests.ledger.test_dictionary_read import WILD_ROWS, out_of_range, read_coded, with_codes
from ledger.rebuild import canonical_texts, check_rows, rebuild
from ledger.segments import DICTIONARY_TEXT_COLUMNS
path, writer_id = sys.argv[1], sys.argv[2]
batch = read_coded(path)
result = {"columns": {}}
everything = batch
for name in DICTIONARY_TEXT_COLUMNS:
    size = len(batch.column(name).dictionary)
    codes = {row: out_of_range(size, which) for row, which in WILD_ROWS.items()}
    forged = with_codes(batch, name, codes)
    canonical_texts(forged)
    result["columns"][name] = check_rows(forged, 0, writer_id, bytes(32)).flags.tolist()
    everything = with_codes(everything, name, codes)
result["all"] = check_rows(everything, 0, writer_id, bytes(32)).flags.tolist()
result["malformed"] = rebuild(everything).malformed.nonzero()[0].tolist()
print(json.dumps(result))
"""


# -- 3. a null entry in the dictionary ------------------------------------------------------------


class TestNullDictionaryEntries:
    @pytest.mark.parametrize("name", ["tool", "error", "agent_id", "writer_id", "category"])
    def test_a_null_entry_reads_as_absent(self, segments: Segments, name: str) -> None:
        batch = segments.plain
        rows = batch.num_rows
        column = batch.column(name)
        distinct = list(dict.fromkeys(v for v in column.to_pylist() if v is not None))
        dictionary = pa.array([*distinct[:1], None, *distinct[1:]], pa.string())
        referencing = {0, 8, 29, 60}
        codes = [
            1
            if row in referencing
            else (None if v is None else distinct.index(v) + (distinct.index(v) > 0))
            for row, v in enumerate(column.to_pylist())
        ]
        array = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary)
        assert array.dictionary.null_count == 1
        assert [array[row].as_py() for row in referencing] == [None] * 4
        forged = recoded(batch, name, array)
        plain = with_values(batch, name, dict.fromkeys(referencing))
        had = {row for row in referencing if column[row].is_valid}
        bit = HASH_OK | (WRITER_OK if name == "writer_id" else 0)
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        assert flags == failing_at(rows, dict.fromkeys(had, bit))
        assert flags == check_rows(plain, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        assert canonical_texts(forged) == canonical_texts(plain)
        reads_like_plain(forged.slice(7, 30), 7, segments.writer_id, previous_of(batch, 7))
        # Rehashed as absent by a forger: every row passes but for a null writer.
        rehashed = rechained(plain, ZERO_HASH)
        forged = recoded(rehashed, name, array)
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        assert flags == failing_at(
            rows, dict.fromkeys(had if name == "writer_id" else (), WRITER_OK)
        )

    def test_an_unreferenced_null_entry(self, segments: Segments) -> None:
        batch = segments.plain
        column = batch.column("tool")
        distinct = list(dict.fromkeys(column.to_pylist()))
        dictionary = pa.array([*distinct, None], pa.string())
        codes = pa.array([distinct.index(v) for v in column.to_pylist()], pa.int32())
        forged = recoded(batch, "tool", pa.DictionaryArray.from_arrays(codes, dictionary))
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows

    def test_a_null_entry_outside_the_dictionary_slice(self, segments: Segments) -> None:
        """A null in the array the dictionary is sliced from, but not in the slice."""
        batch = segments.plain
        column = batch.column("intent")
        distinct = list(dict.fromkeys(column.to_pylist()))
        whole = pa.array([None, *distinct, None], pa.string())
        dictionary = whole.slice(1, len(distinct))
        assert dictionary.null_count == 0
        codes = pa.array([distinct.index(v) for v in column.to_pylist()], pa.int32())
        forged = recoded(batch, "intent", pa.DictionaryArray.from_arrays(codes, dictionary))
        flags = reads_like_plain(forged, 0, segments.writer_id, ZERO_HASH)
        assert flags == [ROW_OK] * batch.num_rows
        bad = with_codes(forged, "intent", {30: -1})  # the null just before the slice
        flags = check_rows(bad, 0, segments.writer_id, ZERO_HASH).flags.tolist()
        assert flags == failing_at(batch.num_rows, {30: HASH_OK})


# -- 4. the output bound --------------------------------------------------------------------------

BOUND_CASES = (
    "huge-entry-one-row",
    "rows-times-longest-over-1mib",
    "rows-times-longest-at-1mib",
    "sliced-dictionary-longest-last",
    "huge-unused-entry",
    "huge-entry-under-nulls-and-bad-codes",
)


HIDDEN_HUGE = (1, 2, 3)  # rows nulled over a code of the huge entry
BAD_ROWS = (40, 41)  # rows whose code is outside the dictionary


def _escaped_entries(longest: int, count: int) -> list[str]:
    """``count`` distinct entries of ``longest`` bytes, nearly all a control character that
    JSON writes as six bytes (\\u0001)."""
    return ["\x01" * (longest - 1) + chr(0x41 + k) for k in range(count)]


def bound_case(plain: pa.RecordBatch, case: str) -> pa.RecordBatch:
    """The first segment's rows with dictionary columns that stress the output bound, rehashed
    so that every row passes (but where a code is out of range)."""
    rows = plain.num_rows
    if case == "huge-entry-one-row":
        plain = with_values(plain, "intent", {29: "\x01" * (MIB + 7)})
        batch = dictionary_encoded(rechained(plain, ZERO_HASH))
    elif case.startswith("rows-times-longest"):
        longest = -(-MIB // rows) if case.endswith("over-1mib") else MIB // rows
        assert (longest * rows > MIB) == case.endswith("over-1mib")
        entries = _escaped_entries(longest, 3)
        for name in ("tool", "intent", "error"):
            plain = with_values(plain, name, {row: entries[row % 3] for row in range(rows)})
        batch = dictionary_encoded(rechained(plain, ZERO_HASH))
    elif case == "sliced-dictionary-longest-last":
        # rows x longest within 1 MiB, so the bound is that product; the dictionary a slice that
        # starts past short entries no row uses, its long entries at the end of the buffers.
        entries = _escaped_entries(MIB // rows, 2)
        plain = with_values(plain, "intent", {row: entries[row % 2] for row in range(rows)})
        batch = rechained(plain, ZERO_HASH)
        array = coded(batch.column("intent"), before=["a", "b", "c"])
        batch = recoded(batch, "intent", array)
    elif case == "huge-unused-entry":
        batch = rechained(plain, ZERO_HASH)
        for name in ("intent", "tool"):
            array = coded(batch.column(name), before=["\x01" * (2 * MIB)], after=["\x1f" * MIB])
            batch = recoded(batch, name, array)
    else:  # the huge entry is referenced only by null rows and by rows whose code is bad
        plain = with_values(plain, "intent", {5: "\x02" * 300})
        batch = dictionary_encoded(rechained(plain, ZERO_HASH))
        column = batch.column("intent")
        dictionary = pa.array([*column.dictionary.to_pylist(), "\x01" * (MIB + 1)], pa.string())
        huge = len(dictionary) - 1
        stored = stored_codes(column)
        stored[list(HIDDEN_HUGE)] = huge
        indices = masked(pa.array(stored, pa.int32()), set(HIDDEN_HUGE))
        batch = recoded(batch, "intent", pa.DictionaryArray.from_arrays(indices, dictionary))
        batch = with_codes(batch, "intent", {row: huge + 1 if row % 2 else -1 for row in BAD_ROWS})
    return batch


def bound_expectation(case: str, rows: int) -> list[int]:
    if case == "huge-entry-under-nulls-and-bad-codes":
        return failing_at(rows, dict.fromkeys((*HIDDEN_HUGE, *BAD_ROWS), HASH_OK))
    return [ROW_OK] * rows


def bad_rows(case: str) -> set[int]:
    return set(BAD_ROWS) if case == "huge-entry-under-nulls-and-bad-codes" else set()


def reference_texts(batch: pa.RecordBatch, case: str) -> list[bytes]:
    """The reference's leaf inputs of a bound case's rows. Arrow cannot decode a code outside
    the dictionary: such a row is taken as holding the empty string there (there is no text)."""
    bad = bad_rows(case)
    if bad:
        readable = with_codes(batch, "intent", dict.fromkeys(bad, 0))
        rows = with_values(decoded(readable), "intent", dict.fromkeys(bad, "")).to_pylist()
    else:
        rows = batch.to_pylist()
    return [b"\x00" + reference_canonical(row) for row in rows]


def bound_result(plain: pa.RecordBatch, case: str, writer_id: str) -> dict[str, Any]:
    """What the rebuild writes for a bound case, next to the reference (run here or in a child)."""
    batch = bound_case(plain, case)
    reference = reference_texts(batch, case)
    texts = canonical_texts(batch)
    bad = bad_rows(case)
    return {
        "same": [i for i in range(batch.num_rows) if i not in bad and texts[i] == reference[i]],
        "written": sum(map(len, texts)),
        "flags": check_rows(batch, 0, writer_id, ZERO_HASH).flags.tolist(),
    }


class TestOutputBound:
    @pytest.mark.parametrize("case", BOUND_CASES)
    def test_canonical_texts_fit_their_bound(self, segments: Segments, case: str) -> None:
        plain = segments.plain
        rows = plain.num_rows
        batch = bound_case(plain, case)
        assert is_coded(batch, "intent")
        needed = sum(map(len, reference_texts(batch, case)))
        if case in ("huge-entry-one-row", "rows-times-longest-over-1mib"):
            assert needed > 6 * MIB, "the rows' text must go past the 1 MiB threshold"
        # The bound itself (a private function), checked before anything is written: at least
        # what the rows need, for the canonical layout and the row check's (with the hashes).
        for columns in (
            _CANONICAL_COLUMNS,
            (*_CANONICAL_COLUMNS, "prev_hash", "leaf_hash", "hash"),
        ):
            bound = _output_bound(_Layout.of(batch, columns))
            assert bound >= needed, (case, bound, needed)
        result = bound_result(plain, case, segments.writer_id)
        bad = bad_rows(case)
        assert result["same"] == [i for i in range(rows) if i not in bad]
        assert result["flags"] == bound_expectation(case, rows)
        assert result["written"] <= bound

    def test_the_bound_cases_in_a_child_process(self, segments: Segments) -> None:
        """Each case in a fresh interpreter, whose scratch buffer is sized by that case's bound
        alone (this process keeps the largest buffer any earlier test needed)."""
        for case in BOUND_CASES:
            done = run_python(_BOUND_CHILD, str(segments.stored.paths[0]), segments.writer_id, case)
            assert done.returncode == 0, (
                f"{case}: child exited {done.returncode}: {done.stderr[-3000:]}"
            )
            result = json.loads(done.stdout.splitlines()[-1])
            rows = segments.plain.num_rows
            bad = bad_rows(case)
            assert result["same"] == [i for i in range(rows) if i not in bad], case
            assert result["flags"] == bound_expectation(case, rows), case


_BOUND_CHILD = """
import json, sys
sys.path[:0] = ["tests", "."]
from tests.ledger.test_dictionary_read import bound_result
from tests.ledger.test_row_check import read_like_verify
path, writer_id, case = sys.argv[1:4]
print(json.dumps(bound_result(read_like_verify(path), case, writer_id)))
"""


# -- 5. on disk, end to end -----------------------------------------------------------------------

DISK_SIZES = (120, 100)  # one writer log, two segments: seqs 0..119, 120..219
ROW = 37
TARGET_SEQ = DISK_SIZES[0] + ROW


@dataclass(frozen=True)
class OnDisk:
    root: Path
    writer_id: str

    def segment(self, index: int) -> Path:
        return sorted((self.root / "writers" / self.writer_id / "segments").glob("*.parquet"))[
            index
        ]


@pytest.fixture(scope="module")
def appended(tmp_path_factory: pytest.TempPathFactory) -> OnDisk:
    root = tmp_path_factory.mktemp("dictionary-disk") / "ledger"
    with Ledger.init(root) as opened:
        writer_id = opened.append(realistic_events(DISK_SIZES[0], 0)).writer_id
    with Ledger.open(root) as opened:
        assert opened.append(realistic_events(DISK_SIZES[1], 1)).writer_id == writer_id
    return OnDisk(root, writer_id)


@pytest.fixture
def on_disk(appended: OnDisk, tmp_path: Path) -> OnDisk:
    copy = tmp_path / "ledger"
    shutil.copytree(appended.root, copy)
    return OnDisk(copy, appended.writer_id)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Segments read eight rows a batch: each batch has its own dictionaries and slices."""
    monkeypatch.setattr(verify_module, "_BATCH_ROWS", 8)
    yield 8


def encodings(path: Path, name: str, group: int = 0) -> set[str]:
    metadata = pq.ParquetFile(path).metadata.row_group(group)
    column = SEGMENT_SCHEMA.get_field_index(name)
    return set(metadata.column(column).encodings)


DICTIONARY_ENCODINGS = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}


def rewrite(path: Path, table: pa.Table, **options: Any) -> None:
    pq.write_table(table, path, compression="zstd", **options)


class TestOnDisk:
    def test_an_appended_ledger_verifies_clean(
        self, on_disk: OnDisk, small_batches: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # What the row check is handed: the dictionary columns as dictionaries, batch by batch.
        handed: list[set[pa.DataType]] = []
        check = rebuild_module.check_rows

        def spy(batch: pa.RecordBatch, *args: Any) -> Any:
            handed.append({batch.schema.field(n).type for n in DICTIONARY_TEXT_COLUMNS})
            return check(batch, *args)

        monkeypatch.setattr(rebuild_module, "check_rows", spy)
        report = Ledger.open(on_disk.root).verify()
        assert report.ok, report.problems
        assert report.events == sum(DISK_SIZES)
        assert len(handed) == sum(-(-size // small_batches) for size in DISK_SIZES)
        assert all(types == {DICTIONARY_TEXT} for types in handed)
        for index, first_seq in ((0, 0), (1, DISK_SIZES[0])):
            path = on_disk.segment(index)
            assert DICTIONARY_ENCODINGS & encodings(path, "agent_id")
            assert read_coded(path).schema.field("agent_id").type == DICTIONARY_TEXT
            checked = check_segment(str(path), first_seq, on_disk.writer_id)
            assert (checked.failing, checked.error_code, checked.statistics) == ((), "", "")
            assert checked.rows == DISK_SIZES[index]

    @pytest.mark.parametrize(
        ("column", "value", "codes"),
        [
            pytest.param("agent_id", "agent-innocent", ("content-changed",), id="agent_id-new"),
            pytest.param("agent_id", None, ("content-changed",), id="agent_id-other-entry"),
            pytest.param("tool", "curl", ("content-changed",), id="tool"),
            pytest.param("error", "timeout after 31s", ("content-changed",), id="error"),
            pytest.param("outcome", None, ("content-changed",), id="outcome-other-entry"),
            pytest.param(
                "writer_id",
                "vm-someone-else",
                ("writer-changed", "content-changed"),
                id="writer_id",
            ),
        ],
    )
    def test_an_edited_value_is_detected_at_its_seq(
        self,
        on_disk: OnDisk,
        small_batches: int,
        column: str,
        value: str | None,
        codes: tuple[str, ...],
    ) -> None:
        """One row's value edited, the file rewritten keeping dictionary encoding. ``None``: the
        row takes another value already in the dictionary, only its code changes."""
        path = on_disk.segment(1)
        table = pq.read_table(path)
        values = table.column(column).to_pylist()
        if value is None:
            value = next(v for v in sorted(set(values) - {None}) if v != values[ROW])
        assert values[ROW] != value
        values[ROW] = value
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
        rewrite(path, table, use_dictionary=list(DICTIONARY_TEXT_COLUMNS))
        assert DICTIONARY_ENCODINGS & encodings(path, column)
        report = Ledger.open(on_disk.root).verify()
        assert_localised(report, on_disk.writer_id, expect(*codes, file=path.name, seq=TARGET_SEQ))
        assert {p.seq for p in report.problems} == {TARGET_SEQ}

    def test_an_edited_dictionary_entry_fails_every_row_using_it(
        self, on_disk: OnDisk, small_batches: int
    ) -> None:
        """The attacker edits the dictionary itself (one entry's text): each row referencing it
        changes, and the first of them is named."""
        path = on_disk.segment(1)
        batch = read_coded(path)
        column = batch.column("agent_id")
        entry = column.indices[ROW].as_py()
        dictionary = column.dictionary.to_pylist()
        dictionary[entry] = "agent-innocent"
        edited = pa.DictionaryArray.from_arrays(column.indices, pa.array(dictionary, pa.string()))
        table = pa.Table.from_batches([decoded(recoded(batch, "agent_id", edited))])
        rewrite(path, table, use_dictionary=list(DICTIONARY_TEXT_COLUMNS))
        assert DICTIONARY_ENCODINGS & encodings(path, "agent_id")
        assert pq.read_schema(path).remove_metadata().equals(SEGMENT_SCHEMA)
        using = [row for row, code in enumerate(column.indices.to_pylist()) if code == entry]
        report = Ledger.open(on_disk.root).verify()
        first = DISK_SIZES[0] + using[0]
        assert_localised(
            report, on_disk.writer_id, expect("content-changed", file=path.name, seq=first)
        )
        named = sorted(p.seq or 0 for p in report.problems if p.code == "content-changed")
        assert named == [DISK_SIZES[0] + row for row in using]

    def test_true_statistics_on_dictionary_columns_verify_clean(
        self, on_disk: OnDisk, small_batches: int
    ) -> None:
        path = on_disk.segment(1)
        columns = [*STATISTICS_COLUMNS, *DICTIONARY_TEXT_COLUMNS]
        rewrite(path, pq.read_table(path), write_statistics=columns)
        statistics = _statistics(path, "agent_id")
        assert statistics is not None and statistics.has_min_max
        assert DICTIONARY_ENCODINGS & encodings(path, "agent_id")
        report = Ledger.open(on_disk.root).verify()
        assert report.ok, report.problems
        checked = check_segment(str(path), DISK_SIZES[0], on_disk.writer_id)
        assert (checked.failing, checked.statistics) == ((), "")

    @pytest.mark.parametrize("bound", ["max", "min"])
    def test_forged_statistics_on_a_dictionary_column(
        self, on_disk: OnDisk, small_batches: int, bound: str
    ) -> None:
        """agent_id's footer minimum raised or maximum lowered: a filtered query would skip the
        rows at the edge, and verify must report it."""
        path = on_disk.segment(1)
        rewrite(path, pq.read_table(path), write_statistics=[*STATISTICS_COLUMNS, "agent_id"])
        statistics = _statistics(path, "agent_id")
        assert statistics is not None
        true = str(getattr(statistics, bound))
        assert true[:-1] == "agent-"
        forged_value = true[:-1] + chr(ord(true[-1]) + (1 if bound == "min" else -1))
        data = path.read_bytes()
        footer = footer_start(path)
        assert data[footer:].count(true.encode()) == 1
        path.write_bytes(
            data[:footer] + data[footer:].replace(true.encode(), forged_value.encode())
        )
        assert str(getattr(_statistics(path, "agent_id"), bound)) == forged_value
        report = Ledger.open(on_disk.root).verify()
        assert_localised(report, on_disk.writer_id, expect("statistics-changed", file=path.name))
        assert len(report.problems) == 1
        assert "column agent_id" in str(report.problems[0])

    def test_row_groups_with_their_own_dictionaries_and_statistics(
        self, on_disk: OnDisk, small_batches: int
    ) -> None:
        """A segment rewritten as row groups of 30 rows, each with its own dictionaries and
        statistics on every dictionary column: clean, then an edit in the fourth group is found
        at its seq, then a forged maximum."""
        path = on_disk.segment(1)
        table = pq.read_table(path)
        columns = [*STATISTICS_COLUMNS, *DICTIONARY_TEXT_COLUMNS]
        options: dict[str, Any] = {"row_group_size": 30, "write_statistics": columns}
        rewrite(path, table, **options)
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_row_groups == 4
        assert all(DICTIONARY_ENCODINGS & encodings(path, "tool", group) for group in range(4))
        report = Ledger.open(on_disk.root).verify()
        assert report.ok, report.problems
        row = 95  # in the fourth row group
        values = table.column("agent_id").to_pylist()
        values[row] = "agent-innocent"
        index = table.schema.get_field_index("agent_id")
        edited = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
        rewrite(path, edited, **options)
        report = Ledger.open(on_disk.root).verify()
        seq = DISK_SIZES[0] + row
        assert_localised(
            report, on_disk.writer_id, expect("content-changed", file=path.name, seq=seq)
        )
        assert {p.seq for p in report.problems} == {seq}
        # The true table again, then the last group's agent_id maximum lowered in the footer.
        rewrite(path, table, **options)
        last = metadata.row_group(3).column(SEGMENT_SCHEMA.get_field_index("agent_id"))
        high = str(last.statistics.max)
        lowered = high[:-1] + chr(ord(high[-1]) - 1)
        assert lowered >= str(last.statistics.min)
        data = path.read_bytes()
        footer = footer_start(path)
        path.write_bytes(data[:footer] + data[footer:].replace(high.encode(), lowered.encode()))
        report = Ledger.open(on_disk.root).verify()
        assert_localised(report, on_disk.writer_id, expect("statistics-changed", file=path.name))

    def test_a_plain_encoded_segment_verifies_clean(
        self, on_disk: OnDisk, small_batches: int
    ) -> None:
        path = on_disk.segment(1)
        table = pq.read_table(path)
        rewrite(path, table, use_dictionary=False)
        for name in DICTIONARY_TEXT_COLUMNS:
            assert not DICTIONARY_ENCODINGS & encodings(path, name), name
        # Read with read_dictionary, the plain pages still arrive as dictionaries.
        assert read_coded(path).schema.field("agent_id").type == DICTIONARY_TEXT
        report = Ledger.open(on_disk.root).verify()
        assert report.ok, report.problems
        # And an edit there is still found.
        values = table.column("tool").to_pylist()
        values[ROW] = "curl"
        index = table.schema.get_field_index("tool")
        table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
        rewrite(path, table, use_dictionary=False)
        report = Ledger.open(on_disk.root).verify()
        assert_localised(
            report, on_disk.writer_id, expect("content-changed", file=path.name, seq=TARGET_SEQ)
        )


def _statistics(path: Path, name: str) -> pq.Statistics | None:
    metadata = pq.ParquetFile(path).metadata.row_group(0)
    statistics: pq.Statistics | None = metadata.column(
        SEGMENT_SCHEMA.get_field_index(name)
    ).statistics
    return statistics
