"""Times and integers as the compiled loops write them, held to the Python reference.

``put_time`` remembers the last day it wrote (the date is most of its work), and ``put_int`` writes
two digits at a time: rows whose times jump between days, back and forth, and integers at every
digit count must still rebuild to exactly the reference's text, in verify and in the writer.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import tool_event

from ledger import Ledger
from ledger.hashing import ZERO_HASH
from ledger.rebuild import ROW_OK, canonical_texts
from tests.ledger.test_row_check import (
    Stored,
    checked_like_reference,
    rechained,
    reference_canonical,
    stored,
    with_values,
)

__all__ = ["stored"]  # the fixture, imported for pytest

EDGE_TIMES = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 0, 5, tzinfo=UTC),
    datetime(2000, 2, 29, 0, 0, 0, 10, tzinfo=UTC),
    datetime(2100, 3, 1, 23, 59, 59, 99, tzinfo=UTC),
    datetime(1900, 2, 28, 1, 2, 3, 456789, tzinfo=UTC),
    datetime(2026, 11, 26, 9, 9, 9, 90909, tzinfo=UTC),
]

EDGE_INTS = [
    0,
    1,
    9,
    10,
    99,
    100,
    101,
    999,
    1000,
    12345,
    10**9,
    10**18 - 1,
    10**18,
    2**63 - 1,
    -1,
    -10,
    -(10**18),
    -(2**63) + 1,
    -(2**63),
]


def _rows_match_reference(batch_rows: list[dict[str, object]], texts: list[bytes]) -> None:
    for index, (row, text) in enumerate(zip(batch_rows, texts, strict=True)):
        assert text == b"\x00" + reference_canonical(row), f"row {index}"


def test_times_that_jump_between_days_rebuild_exactly(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    shuffled = random.Random(7)
    # The same days again and again, in changing order, with same-day runs in between.
    times = [EDGE_TIMES[shuffled.randrange(len(EDGE_TIMES))] for _ in range(rows)]
    latest = EDGE_TIMES[3]
    later = [timedelta(microseconds=shuffled.randrange(10**11)) for _ in times]
    observed = [
        t + step if latest - t > step else latest for t, step in zip(times, later, strict=True)
    ]
    forged = with_values(batch, "time", dict(enumerate(times)))
    forged = with_values(forged, "observed_time", dict(enumerate(observed)))
    _rows_match_reference(forged.to_pylist(), canonical_texts(forged))


def test_integers_of_every_width_rebuild_exactly(stored: Stored) -> None:
    batch = stored.first
    values = [EDGE_INTS[i % len(EDGE_INTS)] for i in range(batch.num_rows)]
    forged = with_values(batch, "bytes", dict(enumerate(values)))
    _rows_match_reference(forged.to_pylist(), canonical_texts(forged))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(
                min_value=datetime(1, 1, 1),
                max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                timezones=st.just(UTC),
            ),
            st.integers(-(2**63), 2**63 - 1),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_times_and_integers_rebuild_exactly(
    stored: Stored, values: list[tuple[datetime, int]]
) -> None:
    batch = stored.first.slice(0, len(values))
    forged = with_values(batch, "time", {i: t for i, (t, _) in enumerate(values)})
    forged = with_values(forged, "bytes", {i: n for i, (_, n) in enumerate(values)})
    _rows_match_reference(forged.to_pylist(), canonical_texts(forged))


@pytest.mark.parametrize("first_seq", [0, 8, 98, 990])
def test_appended_rows_across_digit_counts_verify(tmp_path: Path, first_seq: int) -> None:
    """The writer's own text (seq written by ``put_int``, observed_time by ``put_time``) hashes
    to what verify rebuilds, across seqs that gain a digit within a batch."""
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as opened:
        if first_seq:
            opened.append([tool_event(i) for i in range(first_seq)])
        receipts = opened.append([tool_event(first_seq + i) for i in range(15)])
        assert [r.seq for r in receipts] == list(range(first_seq, first_seq + 15))
        opened.flush()
    report = Ledger.open(root).verify()
    assert report.ok, report.problems[:3]


def test_rows_from_every_edge_time_check_whole(stored: Stored) -> None:
    """Rows rehashed after their times are set to the edge times check whole (the rebuilt text
    is byte for byte the one hashed)."""
    batch = stored.first.slice(0, len(EDGE_TIMES) * 2)
    times = dict(enumerate(EDGE_TIMES * 2))
    forged = rechained(with_values(batch, "time", times), ZERO_HASH)
    flags = checked_like_reference(forged, 0, stored.writer_id, ZERO_HASH)
    assert flags == [ROW_OK] * forged.num_rows
