"""Reading event files: format detection, chunking, locations and unreadable records.

``read_chunks`` is what ``chainsight ingest`` reads files with. It must say where every record came
from (``line N`` for JSON Lines and CSV, ``item N`` for a JSON array, ``row N`` for Parquet), report
records it cannot read at their place instead of dropping them, and turn unreadable files into an
``InputFormatError`` (the CLI's exit 2), never a stray ``OSError`` or ``ValueError``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import tool_event

from ledger import InputFormatError
from ledger.batch import check_batch
from ledger.inputs import FORMATS, Chunk, detect_format, read_chunks, spool_stdin


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_all(path: Path, fmt: str | None = None, chunk_size: int = 10_000) -> list[Chunk]:
    return list(read_chunks(path, fmt, chunk_size))


def flatten(chunks: list[Chunk]) -> tuple[list[Any], list[str]]:
    records: list[Any] = [r for c in chunks for r in c.records]
    locations = [loc for c in chunks for loc in c.locations]
    return records, locations


# -- detect_format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("events.jsonl", "jsonl"),
        ("events.ndjson", "jsonl"),
        ("events.json", "json"),
        ("events.parquet", "parquet"),
        ("events.pq", "parquet"),
        ("events.csv", "csv"),
        ("events.jsonl.gz", "jsonl"),
        ("events.json.gz", "json"),
        ("events.csv.gz", "csv"),
        ("EVENTS.JSONL", "jsonl"),
        ("audit.2026-03.jsonl", "jsonl"),
    ],
)
def test_detect_format_by_suffix(name: str, expected: str) -> None:
    # Known suffixes decide without opening the file (it does not exist here).
    assert detect_format(Path("/nonexistent") / name) == expected


def test_detect_format_sniffs_files_without_a_known_suffix(tmp_path: Path) -> None:
    array = tmp_path / "dump.txt"
    array.write_text('  \n [{"event_id": "a"}]', encoding="utf-8")
    lines = tmp_path / "dump.log"
    write_lines(lines, [json.dumps(tool_event(1))])
    bare = tmp_path / "events"
    write_lines(bare, [json.dumps(tool_event(1))])
    zipped = tmp_path / "events.gz"
    with gzip.open(zipped, "wt", encoding="utf-8") as out:
        out.write(json.dumps([tool_event(1), tool_event(2)]))
    assert detect_format(array) == "json"
    assert detect_format(lines) == "jsonl"
    assert detect_format(bare) == "jsonl"
    assert detect_format(zipped) == "json"
    records, locations = flatten(read_all(zipped))
    assert records == [tool_event(1), tool_event(2)]
    assert locations == ["item 0", "item 1"]


def test_formats_are_the_documented_four() -> None:
    assert set(FORMATS) == {"jsonl", "json", "parquet", "csv"}


def test_unknown_format_is_an_input_format_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", [json.dumps(tool_event(1))])
    with pytest.raises(InputFormatError, match="unknown input format 'xml'") as caught:
        read_all(path, "xml")
    for name in FORMATS:
        assert name in str(caught.value)


def test_explicit_format_overrides_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text(json.dumps([tool_event(1)]), encoding="utf-8")
    records, locations = flatten(read_all(path, "json"))
    assert records == [tool_event(1)]
    assert locations == ["item 0"]


# -- JSON Lines -----------------------------------------------------------------------------------


def test_jsonl_chunks_with_line_locations(tmp_path: Path) -> None:
    events = [tool_event(i) for i in range(25)]
    path = write_lines(tmp_path / "events.jsonl", [json.dumps(e) for e in events])
    chunks = read_all(path, chunk_size=10)
    assert [len(c.records) for c in chunks] == [10, 10, 5]
    assert [c.first_index for c in chunks] == [0, 10, 20]
    assert all(c.unreadable == () for c in chunks)
    assert chunks[1].locations[0] == "line 11"
    records, locations = flatten(chunks)
    assert records == events
    assert locations == [f"line {n}" for n in range(1, 26)]


def test_jsonl_exact_multiple_of_chunk_size_has_no_empty_chunk(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", [json.dumps(tool_event(i)) for i in range(20)])
    chunks = read_all(path, chunk_size=10)
    assert [len(c.records) for c in chunks] == [10, 10]


def test_jsonl_blank_lines_are_skipped_but_line_numbers_kept(tmp_path: Path) -> None:
    lines = ["", json.dumps(tool_event(1)), "   ", "\t", json.dumps(tool_event(2)), ""]
    path = write_lines(tmp_path / "events.jsonl", lines)
    records, locations = flatten(read_all(path))
    assert records == [tool_event(1), tool_event(2)]
    assert locations == ["line 2", "line 5"]


def test_jsonl_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(f"{json.dumps(tool_event(1))}\r\n\r\n{json.dumps(tool_event(2))}\r\n".encode())
    records, locations = flatten(read_all(path))
    assert records == [tool_event(1), tool_event(2)]
    assert locations == ["line 1", "line 3"]


def test_jsonl_empty_file_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    assert read_all(path) == []


def test_jsonl_unreadable_lines_are_reported_in_place_not_skipped(tmp_path: Path) -> None:
    lines = [
        json.dumps(tool_event(0)),
        "{not json",
        json.dumps(tool_event(2)),
        "",
        '{"event_id": "x", "time": ',  # truncated
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    (chunk,) = read_all(path)
    assert chunk.records == [tool_event(0), None, tool_event(2), None]
    assert chunk.locations == ["line 1", "line 2", "line 3", "line 5"]
    assert [(p.index, p.location) for p in chunk.unreadable] == [(1, "line 2"), (3, "line 5")]
    for problem in chunk.unreadable:
        assert "not valid JSON" in problem.reason
        assert str(problem).startswith(problem.location)


def test_jsonl_unreadable_line_in_a_later_chunk_keeps_its_global_index(tmp_path: Path) -> None:
    lines = [json.dumps(tool_event(i)) for i in range(7)]
    lines[5] = "][ nope"
    path = write_lines(tmp_path / "events.jsonl", lines)
    chunks = read_all(path, chunk_size=3)
    assert [len(c.records) for c in chunks] == [3, 3, 1]
    assert chunks[0].unreadable == () and chunks[2].unreadable == ()
    (problem,) = chunks[1].unreadable
    assert problem.index == 5
    assert problem.location == "line 6"
    assert chunks[1].records[problem.index - chunks[1].first_index] is None


def test_jsonl_invalid_utf8_is_an_unreadable_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = json.dumps(tool_event(1)).encode()
    path.write_bytes(good + b"\n" + b'{"event_id": "\xff\xfe"}\n')
    (chunk,) = read_all(path)
    assert chunk.records == [tool_event(1), None]
    assert [p.location for p in chunk.unreadable] == ["line 2"]


def test_jsonl_gz(tmp_path: Path) -> None:
    events = [tool_event(i, attrs={"model": "m", "n": i}) for i in range(5)]
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(json.dumps(e) for e in events) + "\n")
    records, locations = flatten(read_all(path, chunk_size=2))
    assert records == events
    assert locations == [f"line {n}" for n in range(1, 6)]


def test_corrupt_gz_is_an_input_format_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(InputFormatError, match=r"events\.jsonl\.gz"):
        read_all(path)


def test_missing_file_is_an_input_format_error(tmp_path: Path) -> None:
    for name in ("missing.jsonl", "missing.json", "missing.csv", "missing.parquet"):
        with pytest.raises(InputFormatError, match="missing"):
            read_all(tmp_path / name)


@pytest.mark.parametrize("name", ["missing", "missing.gz", "missing.txt", "a-directory"])
def test_missing_file_without_known_suffix_is_an_input_format_error(
    tmp_path: Path, name: str
) -> None:
    if name == "a-directory":
        (tmp_path / name).mkdir()
    with pytest.raises(InputFormatError):
        read_all(tmp_path / name)


# -- JSON array -----------------------------------------------------------------------------------


def test_json_array_chunks_with_item_locations(tmp_path: Path) -> None:
    events = [tool_event(i) for i in range(7)]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events, indent=2), encoding="utf-8")
    chunks = read_all(path, chunk_size=3)
    assert [len(c.records) for c in chunks] == [3, 3, 1]
    assert [c.first_index for c in chunks] == [0, 3, 6]
    records, locations = flatten(chunks)
    assert records == events
    assert locations == [f"item {i}" for i in range(7)]


def test_json_single_object_is_one_item(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(tool_event(1)), encoding="utf-8")
    records, locations = flatten(read_all(path))
    assert records == [tool_event(1)]
    assert locations == ["item 0"]


def test_json_array_items_that_are_not_objects_reach_the_validator(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps([tool_event(0), 5, "text"]), encoding="utf-8")
    (chunk,) = read_all(path)
    assert chunk.records == [tool_event(0), 5, "text"]
    assert chunk.locations == ["item 0", "item 1", "item 2"]


def test_invalid_json_document_is_an_input_format_error(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text('[{"event_id": "a"},', encoding="utf-8")
    with pytest.raises(InputFormatError, match="not valid JSON"):
        read_all(path)


# -- CSV ------------------------------------------------------------------------------------------

CSV_HEADER = [
    "event_id",
    "time",
    "agent_id",
    "category",
    "action",
    "credential_scopes",
    "attrs",
    "external",
    "privileged",
    "bytes",
    "session_id",
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = CSV_HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_typed_cells(tmp_path: Path) -> None:
    base = ["c1", "2026-03-01T10:00:00Z", "a", "network", "email.send"]
    rows = [
        [*base, '["read","write"]', '{"model":"m","k":[1,2]}', "true", "FALSE", "42", "s-1"],
        ["c2", *base[1:], "", "", "", "", "", ""],
        ["c3", *base[1:], "", "", " True ", "false", "0", ""],
    ]
    path = write_csv(tmp_path / "events.csv", rows)
    records, locations = flatten(read_all(path))
    assert locations == ["line 2", "line 3", "line 4"]
    assert records[0] == {
        "event_id": "c1",
        "time": "2026-03-01T10:00:00Z",
        "agent_id": "a",
        "category": "network",
        "action": "email.send",
        "credential_scopes": ["read", "write"],
        "attrs": {"model": "m", "k": [1, 2]},
        "external": True,
        "privileged": False,
        "bytes": 42,
        "session_id": "s-1",
    }
    # Empty cells are absent fields, not empty strings.
    assert records[1] == {
        "event_id": "c2",
        "time": "2026-03-01T10:00:00Z",
        "agent_id": "a",
        "category": "network",
        "action": "email.send",
    }
    assert records[2]["external"] is True
    assert records[2]["privileged"] is False
    assert records[2]["bytes"] == 0
    assert "session_id" not in records[2]
    check_batch(records, locations)  # all three are valid events


def test_csv_malformed_typed_cells_are_left_for_the_validator(tmp_path: Path) -> None:
    base = ["c1", "2026-03-01T10:00:00Z", "a", "network", "email.send"]
    path = write_csv(tmp_path / "events.csv", [[*base, "read", "{oops", "yes", "", "12kB", ""]])
    ((record,), _) = flatten(read_all(path))
    assert record["credential_scopes"] == "read"
    assert record["attrs"] == "{oops"
    assert record["external"] == "yes"
    assert record["bytes"] == "12kB"


def test_csv_quoted_newline_and_commas(tmp_path: Path) -> None:
    base = ["c1", "2026-03-01T10:00:00Z", "a", "tool", "tool.call"]
    rows = [[*base, "", '{"note":"a, b\\nc"}', "", "", "", "s,1"], ["c2", *base[1:]]]
    path = write_csv(tmp_path / "events.csv", rows)
    records, _ = flatten(read_all(path))
    assert records[0]["attrs"] == {"note": "a, b\nc"}
    assert records[0]["session_id"] == "s,1"
    assert records[1]["event_id"] == "c2"


def test_csv_row_with_more_cells_than_headers_is_unreadable(tmp_path: Path) -> None:
    header = ["event_id", "time", "agent_id", "category", "action"]
    good = ["c1", "2026-03-01T10:00:00Z", "a", "tool", "tool.call"]
    rows = [good, ["c2", "2026-03-01T10:00:00Z", "a", "tool", "tool.call", "extra"], good]
    path = write_csv(tmp_path / "events.csv", rows, header)
    (chunk,) = read_all(path)
    assert chunk.records[1] is None
    assert chunk.records[0] == chunk.records[2] == dict(zip(header, good, strict=True))
    assert chunk.locations == ["line 2", "line 3", "line 4"]
    (problem,) = chunk.unreadable
    assert problem.index == 1
    assert problem.location == "line 3"
    assert "more cells than header columns" in problem.reason


def test_csv_row_with_fewer_cells_has_those_fields_absent(tmp_path: Path) -> None:
    header = ["event_id", "time", "agent_id", "category", "action", "session_id"]
    path = write_csv(tmp_path / "events.csv", [["c1", "2026-03-01T10:00:00Z", "a"]], header)
    ((record,), _) = flatten(read_all(path))
    assert record == {"event_id": "c1", "time": "2026-03-01T10:00:00Z", "agent_id": "a"}


def test_csv_chunks(tmp_path: Path) -> None:
    header = ["event_id", "time", "agent_id", "category", "action"]
    rows = [[f"c{i}", "2026-03-01T10:00:00Z", "a", "tool", "tool.call"] for i in range(5)]
    path = write_csv(tmp_path / "events.csv", rows, header)
    chunks = read_all(path, chunk_size=2)
    assert [len(c.records) for c in chunks] == [2, 2, 1]
    assert [c.first_index for c in chunks] == [0, 2, 4]
    assert chunks[2].locations == ["line 6"]


def test_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as out:
        out.write("event_id,time,agent_id,category,action,bytes\n")
        out.write("g1,2026-03-01T10:00:00Z,a,data,data.read,7\n")
    records, locations = flatten(read_all(path))
    assert records == [
        {
            "event_id": "g1",
            "time": "2026-03-01T10:00:00Z",
            "agent_id": "a",
            "category": "data",
            "action": "data.read",
            "bytes": 7,
        }
    ]
    assert locations == ["line 2"]


def test_csv_not_utf8_is_an_input_format_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    text = "event_id,time,agent_id,category,action\nc1,2026-03-01T10:00:00Z,Jürgen,tool,tool.call\n"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InputFormatError, match="not UTF-8"):
        read_all(path)


def test_csv_with_utf8_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    text = "event_id,time,agent_id,category,action\nb1,2026-03-01T10:00:00Z,a,tool,tool.call\n"
    path.write_bytes(text.encode("utf-8-sig"))
    ((record,), _) = flatten(read_all(path))
    assert record["event_id"] == "b1"


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_nulls_are_absent_fields_and_naive_times_are_utc(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p0", "p1", "p2"],
            "time": pa.array(
                [datetime(2026, 3, 1, 10, 0, 0, 123456), datetime(2026, 3, 1, 11), None],
                pa.timestamp("us"),
            ),
            "agent_id": ["a", "b", "c"],
            "category": ["tool", "network", "tool"],
            "action": ["tool.call", "email.send", "tool.call"],
            "credential_scopes": pa.array([["s1", "s2"], None, []], pa.list_(pa.string())),
            "attrs": ['{"model":"m1","n":2}', None, "not json"],
            "external": pa.array([None, True, False]),
            "bytes": pa.array([None, 10, 0], pa.int64()),
            "session_id": [None, None, "s"],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    records, locations = flatten(read_all(path))
    assert locations == ["row 0", "row 1", "row 2"]
    assert records[0] == {
        "event_id": "p0",
        "time": datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        "agent_id": "a",
        "category": "tool",
        "action": "tool.call",
        "credential_scopes": ["s1", "s2"],
        "attrs": {"model": "m1", "n": 2},
    }
    assert records[1] == {
        "event_id": "p1",
        "time": datetime(2026, 3, 1, 11, tzinfo=UTC),
        "agent_id": "b",
        "category": "network",
        "action": "email.send",
        "external": True,
        "bytes": 10,
    }
    # A null required field is absent (the validator names it); falsy values are kept.
    assert "time" not in records[2]
    assert records[2]["credential_scopes"] == []
    assert records[2]["external"] is False
    assert records[2]["bytes"] == 0
    assert records[2]["attrs"] == "not json"  # left as text for the validator to reject
    check_batch(records[:2], locations[:2])


def test_parquet_tz_aware_times_are_kept(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p0"],
            "time": pa.array([datetime(2026, 3, 1, 10, tzinfo=UTC)], pa.timestamp("us", "UTC")),
            "agent_id": ["a"],
            "category": ["tool"],
            "action": ["tool.call"],
            "attrs": pa.array([{"model": "m"}], pa.struct([("model", pa.string())])),
        }
    )
    path = tmp_path / "events.pq"
    pq.write_table(table, path)
    ((record,), _) = flatten(read_all(path))
    assert record["time"] == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert record["attrs"] == {"model": "m"}


def test_parquet_chunks_with_row_locations(tmp_path: Path) -> None:
    count = 23
    table = pa.table(
        {
            "event_id": [f"p{i}" for i in range(count)],
            "time": ["2026-03-01T10:00:00Z"] * count,
            "agent_id": ["a"] * count,
            "category": ["tool"] * count,
            "action": ["tool.call"] * count,
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=7)
    chunks = read_all(path, chunk_size=10)
    assert sum(len(c.records) for c in chunks) == count
    assert all(len(c.records) <= 10 for c in chunks)
    records, locations = flatten(chunks)
    assert locations == [f"row {i}" for i in range(count)]
    assert [r["event_id"] for r in records] == [f"p{i}" for i in range(count)]
    for chunk in chunks:
        assert chunk.locations[0] == f"row {chunk.first_index}"


def test_not_a_parquet_file_is_an_input_format_error(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    path.write_text(json.dumps(tool_event(1)), encoding="utf-8")
    with pytest.raises(InputFormatError, match="Parquet"):
        read_all(path)


def test_parquet_nanosecond_times_are_read_or_refused_cleanly(tmp_path: Path) -> None:
    nanos = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()) * 10**9 + 123_456_789
    table = pa.table(
        {
            "event_id": ["n1"],
            "time": pa.array([nanos], pa.timestamp("ns")),
            "agent_id": ["a"],
            "category": ["tool"],
            "action": ["tool.call"],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    try:
        records, _ = flatten(read_all(path))
    except InputFormatError:
        return  # refusing the file with a clear message is acceptable too
    assert records[0]["time"] == datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)


# -- standard input -------------------------------------------------------------------------------


def test_spool_stdin_copies_bytes_to_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = (json.dumps(tool_event(1)) + "\n" + json.dumps(tool_event(2)) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    path = spool_stdin()
    try:
        assert path.read_bytes() == payload
        records, locations = flatten(read_all(path))
        assert records == [tool_event(1), tool_event(2)]
        assert locations == ["line 1", "line 2"]
    finally:
        path.unlink()
