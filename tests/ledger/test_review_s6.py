"""Review of 0842485..HEAD: dictionary-encoded reads in verify, two-digit number text, day cache.

1. ``put_time`` with its one-day cache, for times whose year is outside 0001..9999 (written by
   ``put_int``, untested elsewhere: the other tests stay within years 1..9999), at the int64
   extremes, and with three time columns per row on different days (the cache changes every
   member), held to an independent reference (the 400-year Gregorian cycle over ``datetime``).
2. A dictionary page that falls back to PLAIN mid-chunk: read with ``read_dictionary``, every
   later batch carries the dictionary grown so far; verify stays clean and finds an edit there.
3. A corrupt dictionary page (its entry count lowered, codes now past its end): read as text,
   pyarrow refuses it ("Index not in dictionary bounds"); read as dictionaries it passes the codes
   on unchecked, so verify checks their range and reports the segment ``unreadable-segment``, as
   before the change, whether or not the column carries footer statistics (at first review the
   rows were each reported ``content-changed``, or the segment unreadable when the statistics
   check's cast happened to refuse the codes).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ledger.verify as verify_module
from ledger import Ledger
from ledger.rebuild import canonical_texts
from ledger.segments import DICTIONARY_TEXT_COLUMNS, STATISTICS_COLUMNS
from ledger.verify import check_segment
from tests.ledger.test_row_check import Stored, replaced, stored
from tests.ledger.test_tamper import realistic_events

__all__ = ["stored"]  # the fixture, imported for pytest

I64 = 2**63
DAY = 86_400_000_000
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
CYCLE_DAYS = 146_097  # days in 400 Gregorian years


def reference_time(micros: int) -> str:
    """The rebuild's text of a time, by Python's own calendar shifted by whole 400-year cycles
    (the Gregorian calendar repeats every 146097 days)."""
    days, of_day = divmod(micros, DAY)
    ordinal = days + EPOCH_ORDINAL
    inside = (ordinal - 1) % CYCLE_DAYS + 1  # a day of years 1..400
    cycles = (ordinal - inside) // CYCLE_DAYS
    day = date.fromordinal(inside)
    year = day.year + 400 * cycles
    seconds, fraction = divmod(of_day, 1_000_000)
    year_text = f"{year:04d}" if 0 <= year <= 9999 else str(year)
    return (
        f"{year_text}-{day.month:02d}-{day.day:02d}T{seconds // 3600:02d}:"
        f"{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}Z"
    )


def _epoch_micros(year: int, month: int = 1, day: int = 1) -> int:
    return (date(year, month, day).toordinal() - EPOCH_ORDINAL) * DAY


FAR_TIMES = [
    -I64,
    -I64 + 1,
    I64 - 1,
    I64 - 2,
    _epoch_micros(1) - 1,  # 0000-12-31T23:59:59.999999
    _epoch_micros(1) - 366 * DAY,  # 0000-01-01 (year 0 is a leap year)
    _epoch_micros(1) - 366 * DAY - 1,  # year -1, written by put_int
    _epoch_micros(1) - 366 * DAY - 400 * 365 * DAY,
    _epoch_micros(9999, 12, 31) + DAY - 1,
    _epoch_micros(9999, 12, 31) + DAY,  # 10000-01-01, written by put_int
    _epoch_micros(9999, 12, 31) + DAY + 59 * DAY,  # 10000-02-29
    _epoch_micros(2000, 2, 29) + 123_456,
    -1,
    0,
    DAY - 1,
    -DAY,
    -DAY - 1,
]


def test_reference_time_agrees_with_datetime_within_its_range() -> None:
    assert reference_time(0) == "1970-01-01T00:00:00.000000Z"
    assert reference_time(-1) == "1969-12-31T23:59:59.999999Z"
    assert reference_time(_epoch_micros(1) - 1) == "0000-12-31T23:59:59.999999Z"
    assert reference_time(_epoch_micros(9999, 12, 31) + DAY) == "10000-01-01T00:00:00.000000Z"


def test_far_times_in_three_columns_rebuild_like_the_reference(stored: Stored) -> None:
    batch = stored.first
    rows = batch.num_rows
    n = len(FAR_TIMES)
    columns = {
        "time": [FAR_TIMES[i % n] for i in range(rows)],
        "credential_expires_at": [FAR_TIMES[(3 * i + 1) % n] for i in range(rows)],
        "observed_time": [FAR_TIMES[(5 * i + 2) % n] for i in range(rows)],
    }
    for name, values in columns.items():
        batch = replaced(batch, name, pa.array(values, pa.int64()).cast(pa.timestamp("us", "UTC")))
    texts = canonical_texts(batch)
    for row, text in enumerate(texts):
        for name, values in columns.items():
            member = f'"{name}":"{reference_time(values[row])}"'.encode()
            assert member in text, (row, name, text)


# -- 2. a dictionary page that falls back to PLAIN -------------------------------------------------


def _ledger(tmp: Path, events: list[dict[str, object]]) -> tuple[Path, str, Path]:
    root = tmp / "ledger"
    with Ledger.init(root) as opened:
        writer_id = opened.append(events).writer_id
    [path] = sorted((root / "writers" / writer_id / "segments").glob("*.parquet"))
    return root, writer_id, path


FALLBACK_ROWS = 3000
DICTIONARY_PAGE_LIMIT = 2000  # bytes: far fewer than agent_id's 3000 distinct values need


def _fallback_rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        use_dictionary=list(DICTIONARY_TEXT_COLUMNS),
        dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT,
        data_page_size=4000,
        write_statistics=list(STATISTICS_COLUMNS),
    )


def test_a_dictionary_that_falls_back_to_plain_mid_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = realistic_events(FALLBACK_ROWS, 0)
    for i, event in enumerate(events):
        event["agent_id"] = f"agent-{i}"
    root, writer_id, path = _ledger(tmp_path, events)
    table = pq.read_table(path)
    _fallback_rewrite(path, table)
    monkeypatch.setattr(verify_module, "_BATCH_ROWS", 257)
    parquet = pq.ParquetFile(path, read_dictionary=DICTIONARY_TEXT_COLUMNS)
    sizes = [len(b.column("agent_id").dictionary) for b in parquet.iter_batches(257)]
    # The entries cannot all be in the dictionary page: the rest were PLAIN pages, which the
    # reader folds into the batch's dictionary as it goes.
    assert sum(len(v) for v in table.column("agent_id").to_pylist()) > DICTIONARY_PAGE_LIMIT
    assert sizes == sorted(sizes) and sizes[-1] == FALLBACK_ROWS and sizes[0] < FALLBACK_ROWS
    checked = check_segment(str(path), 0, writer_id)
    assert (checked.failing, checked.error_code, checked.statistics) == ((), "", "")
    assert Ledger.open(root).verify().ok
    values = table.column("agent_id").to_pylist()
    values[2900] = "agent-innocent"  # in the PLAIN part
    index = table.schema.get_field_index("agent_id")
    _fallback_rewrite(
        path, table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
    )
    checked = check_segment(str(path), 0, writer_id)
    assert [f[0] for f in checked.failing] == [2900]


# -- 3. codes past the dictionary's end in a corrupt file -----------------------------------------


def _zigzag(value: int) -> bytes:
    number = (value << 1) ^ (value >> 31)
    out = b""
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _short_dictionary(tmp: Path, statistics: list[str]) -> tuple[Path, str]:
    """A segment whose tool dictionary page claims 2 of its 5 entries: codes 2..4 are past it."""
    events = realistic_events(40, 0)
    for i, event in enumerate(events):
        event["tool"] = f"tool-{i % 5}"
    root, writer_id, path = _ledger(tmp, events)
    table = pq.read_table(path)
    pq.write_table(
        table,
        path,
        compression="none",
        use_dictionary=list(DICTIONARY_TEXT_COLUMNS),
        write_statistics=statistics,
    )
    column = pq.ParquetFile(path).metadata.row_group(0).column(table.schema.get_field_index("tool"))
    start = column.dictionary_page_offset
    data = bytearray(path.read_bytes())
    # PageHeader field 7 (dictionary_page_header, a struct) then its field 1, num_values (i32).
    claim = b"\x4c\x15" + _zigzag(5)
    at = data.find(claim, start, start + 64)
    assert at >= 0
    data[at : at + len(claim)] = b"\x4c\x15" + _zigzag(2)
    path.write_bytes(bytes(data))
    with pytest.raises(pa.ArrowInvalid, match="Index not in dictionary bounds"):
        pq.read_table(path)  # read as plain text (as verify did before): unreadable
    return root, writer_id


def test_codes_past_a_corrupt_dictionary_make_the_segment_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = _short_dictionary(tmp_path, list(STATISTICS_COLUMNS))  # the ledger's own statistics
    report = Ledger.open(root).verify()
    assert [p.code for p in report.problems] == ["unreadable-segment"], report.problems
    assert "columns tool: codes outside the dictionary" in str(report.problems[0])
    # The same file read as text, as verify read it before reading dictionaries: the same code.
    monkeypatch.setattr(verify_module, "DICTIONARY_TEXT_COLUMNS", ())
    before = Ledger.open(root).verify()
    assert [p.code for p in before.problems] == ["unreadable-segment"]


def test_the_same_corruption_with_statistics_on_the_column_is_unreadable(tmp_path: Path) -> None:
    """Footer statistics on tool (as pq.write_table writes by default) change nothing."""
    root, _ = _short_dictionary(tmp_path, [*STATISTICS_COLUMNS, "tool"])
    report = Ledger.open(root).verify()
    assert [p.code for p in report.problems] == ["unreadable-segment"], report.problems
    assert "columns tool: codes outside the dictionary" in str(report.problems[0])
