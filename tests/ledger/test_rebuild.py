"""The compiled rebuild of canonical bytes and hashes that ``verify`` relies on (ledger.rebuild)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785

from ledger import Ledger, rebuild
from ledger.rebuild import canonical_texts, fixed_hashes
from ledger.schema import HASH_COLUMNS, SEGMENT_SCHEMA

# Far from the epoch on both sides, leap days, century rules, the last microsecond of a day.
EDGE_TIMES = (
    "0001-01-01T00:00:00.000000Z",
    "0999-12-31T23:59:59.999999Z",
    "1600-02-29T12:00:00.000001Z",
    "1900-03-01T00:00:00.000000Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00.000000Z",
    "2000-02-29T23:59:59.999999Z",
    "2100-02-28T00:00:00.500000Z",
    "9999-12-31T23:59:59.999999Z",
)


TRICKY_ITEMS = ["a", 'q"uote', "back\\slash", "\x01\x08\t\n\x0c\r\x1f\x7f", "ünï"]


def _stored_segment(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    ledger = Ledger.init(tmp_path / "ledger")
    try:
        ledger.append(records)
        ledger.flush()
        [segment] = ledger.segment_files()
        return segment.path
    finally:
        ledger.close()


def _utc_text(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _reference(row: dict[str, Any]) -> bytes:
    """0x00 || RFC 8785 bytes of a stored row as DESIGN.md §3 defines them (nulls absent)."""
    payload: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or name in HASH_COLUMNS:
            continue
        if isinstance(value, datetime):
            payload[name] = _utc_text(value)
        elif name == "attrs":  # stored as its canonical text
            payload[name] = orjson.loads(value)
        else:
            payload[name] = value
    return b"\x00" + bytes(rfc8785.dumps(payload))


def test_edge_times_rebuild_to_the_reference_bytes(tmp_path: Path) -> None:
    records = [
        {
            "event_id": f"evt-{i}",
            "time": moment,
            "credential_expires_at": moment,
            "agent_id": "agent",
            "category": "tool",
            "action": "tool.call",
            "bytes": i * 10**i,
            "external": i % 2 == 0,
            "intent_scopes": ["a", 'q"uote', "back\\slash", "\x01\x08\t\n\x0c\r\x1f\x7f", "ünï"][
                : i % 6
            ],
            "attrs": {"n": i},
        }
        for i, moment in enumerate(EDGE_TIMES)
    ]
    path = _stored_segment(tmp_path, records)
    table = pq.read_table(path)
    rows = table.to_pylist()
    texts = canonical_texts(table.to_batches()[0])
    assert texts == [_reference(row) for row in rows]
    leaves = [hashlib.sha256(text).digest() for text in texts]
    assert leaves == table.column("leaf_hash").to_pylist()


def test_hashlib_stands_in_when_openssl_cannot_be_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"event_id": f"e{i}", "time": EDGE_TIMES[i % 9], "agent_id": "a", "category": "llm"}
        | {"action": "llm.chat", "error": "x" * i}
        for i in range(50)
    ]
    batch = pq.read_table(_stored_segment(tmp_path, records)).to_batches()[0]
    through_openssl = rebuild.rebuild(batch)
    monkeypatch.setattr(rebuild, "_openssl", lambda: None)
    through_hashlib = rebuild.rebuild(batch)
    assert (through_openssl.leaves == through_hashlib.leaves).all()
    assert (through_openssl.chained == through_hashlib.chained).all()
    assert through_hashlib.leaves.tobytes() == b"".join(batch.column("leaf_hash").to_pylist())
    assert through_hashlib.chained.tobytes() == b"".join(batch.column("hash").to_pylist())


def test_nulls_in_hash_columns_read_as_zero_bytes() -> None:
    column = pa.array([b"\x01" * 32, None], pa.binary(32))
    assert fixed_hashes(column).tolist() == [[1] * 32, [0] * 32]
    assert fixed_hashes(column.slice(1)).tolist() == [[0] * 32]


def test_a_sliced_batch_rebuilds_like_the_whole(tmp_path: Path) -> None:
    records = [
        {"event_id": f"e{i}", "time": EDGE_TIMES[i % 9], "agent_id": f"agent-{i}"}
        | {"category": "data", "action": "data.read", "credential_scopes": ["s"] * (i % 3)}
        for i in range(40)
    ]
    table = pq.read_table(_stored_segment(tmp_path, records)).cast(SEGMENT_SCHEMA)
    batch = table.to_batches()[0]
    whole = canonical_texts(batch)
    assert canonical_texts(batch.slice(7, 20)) == whole[7:27]
    assert canonical_texts(batch.slice(0, 0)) == []


def test_compiles_without_a_cache_where_nothing_is_writable(tmp_path: Path) -> None:
    """numba refuses cache=True when no cache directory is writable: compile uncached instead."""
    records = [{"event_id": "e1", "time": EDGE_TIMES[3], "agent_id": "a", "category": "llm"}]
    records[0]["action"] = "llm.chat"
    path = _stored_segment(tmp_path, records)
    script = textwrap.dedent(
        f"""
        import numba
        original = numba.njit

        def refusing(*args, **options):
            if options.get("cache"):
                raise RuntimeError("cannot cache function: no locator available")
            return original(*args, **options)

        numba.njit = refusing
        import pyarrow.parquet as pq
        from ledger.rebuild import rebuild
        batch = pq.read_table({str(path)!r}).to_batches()[0]
        rebuilt = rebuild(batch)
        assert rebuilt.leaves.tobytes() == batch.column("leaf_hash")[0].as_py()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _one_stored_batch(tmp_path: Path) -> pa.RecordBatch:
    record = {"event_id": "e1", "time": "2026-11-26T00:00:00Z", "agent_id": "a", "category": "llm"}
    record |= {"action": "llm.chat", "attrs": {"k": 1}}
    return pq.read_table(_stored_segment(tmp_path, [record])).to_batches()[0]


@pytest.mark.parametrize(
    ("attrs", "malformed"),
    [
        ('{"k":1}', False),
        ("{}", False),
        ('{"a":"}{","b":[1,{"c":"\\"}"}]}', False),  # braces and quotes inside strings
        ('{"k":1},"bytes":5', True),  # closes early: the rest would read as event members
        ('{"k":1}}', True),
        ('{"k":1', True),
        ("[1]", True),
        ('"text"', True),
        ("", True),
    ],
)
def test_attrs_must_be_exactly_one_json_object(tmp_path: Path, attrs: str, malformed: bool) -> None:
    batch = _one_stored_batch(tmp_path)
    index = batch.schema.get_field_index("attrs")
    forged = batch.set_column(index, batch.schema.field(index), pa.array([attrs]))
    assert rebuild.rebuild(forged).malformed.tolist() == [malformed]


def test_times_outside_years_1_to_9999_are_written_in_full(tmp_path: Path) -> None:
    batch = _one_stored_batch(tmp_path)
    index = batch.schema.get_field_index("time")
    ten_thousand_years = 3_652_425 * 86_400 * 10**6
    for shift, year in ((ten_thousand_years, b"12026"), (-3 * ten_thousand_years, b"-27974")):
        micros = batch.column("time").cast(pa.int64()).to_numpy() + shift
        shifted = pa.array(micros).cast(batch.schema.field(index).type)
        forged = batch.set_column(index, batch.schema.field(index), shifted)
        [text] = canonical_texts(forged)
        assert b'"time":"' + year + b"-11-26T00:00:00.000000Z" in text
