"""Canonical bytes (DESIGN.md §3): every fast path agrees with the ``rfc8785`` reference.

Three layers are held to the reference:

* ``canonical_json`` (orjson with a fallback) for arbitrary JSON values;
* the bytes the writer hashes and the typed Parquet columns it stores, for generated valid events
  appended to a real ledger (the chain hash is recomputed from the reference bytes);
* the canonical text rebuilt from the stored columns (``ledger.rebuild``), which is what
  ``verify`` hashes.

Plus a table of RFC 3339 timestamps, valid and invalid, and how they are normalised.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import rfc8785
from design_schema import BOOL_FIELDS, HEX_FIELDS, LIST_FIELDS, OPTIONAL_TEXT_FIELDS
from design_schema import ENUMS as ENUMS_IN_DESIGN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger, ValidationError
from ledger.canonical import MAX_SAFE_INTEGER, canonical_json, parse_timestamp
from ledger.events import validate_event
from ledger.layout import scan_wal_files
from ledger.rebuild import canonical_texts, fixed_hashes, rebuild
from ledger.schema import CLIENT_FIELDS, ENUMS

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies: text ------------------------------------------------------------------------

# Strings that stress JSON escaping and RFC 8785's UTF-16 member ordering.
TRICKY = (
    '"',
    "\\",
    "\\u001F",  # the literal six characters, not a control character
    "\\u00",
    "\u2028",
    "\u2029",
    "\x1f",
    "\x7f",
    "\x01",
    "\b\t\n\f\r",
    "\ue000",
    "\uffff",
    "\U0001f600",
    "\U0001f469\u200d\U0001f4bb",
    "\U0010ffff",
    "é",
    "/",
    "</script>",
)

ANY_CHAR = st.characters(exclude_categories=["Cs"])  # every plane, control characters included
HIGH_BMP = st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF)
ASTRAL = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)
CONTROL = st.characters(max_codepoint=0x1F)


def texts(*, nul: bool = True, max_pieces: int = 4) -> st.SearchStrategy[str]:
    """Strings from all planes, biased towards characters that escaping or ordering gets wrong."""
    piece = st.one_of(
        st.text(ANY_CHAR, max_size=6),
        st.text(st.one_of(HIGH_BMP, ASTRAL, CONTROL), max_size=4),
        st.sampled_from(TRICKY),
    )
    strategy = st.lists(piece, max_size=max_pieces).map("".join)
    if not nul:
        strategy = strategy.map(lambda s: s.replace("\x00", "\x01"))
    return strategy


SPECIAL_FLOATS = (1.0, 1e21, 1e-7, 5e-324, -0.0, 0.1, 2.0**53, 1.7976931348623157e308, -1.5e-300)
SAFE_INTS = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.sampled_from((0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**31, -(2**31) - 1)),
)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(SPECIAL_FLOATS)
)
SCALARS = st.one_of(st.none(), st.booleans(), SAFE_INTS, FLOATS, texts())


def _wal_safe(number: float) -> bool:
    """False for integral floats 2^53 <= |x| < 1e21: RFC 8785 writes them as integer literals,
    which WAL replay cannot re-read (see test_wal_replay_keeps_large_integral_floats)."""
    return not (number.is_integer() and 2**53 <= abs(number) < 1e21)


EVENT_SCALARS = st.one_of(st.none(), st.booleans(), SAFE_INTS, FLOATS.filter(_wal_safe), texts())


def json_values(
    keys: st.SearchStrategy[str] | None = None, scalars: st.SearchStrategy[Any] = SCALARS
) -> st.SearchStrategy[Any]:
    keys = keys if keys is not None else texts(max_pieces=2)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=24,
    )


# -- a) canonical_json == rfc8785.dumps ------------------------------------------------------


@PROPERTY
@given(json_values())
def test_canonical_json_matches_reference(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


# No floats and no member names at or above U+E000: the values canonical_json hands to orjson.
FAST_KEYS = st.text(st.characters(max_codepoint=0xDFFF, exclude_categories=["Cs"]), max_size=6)
FAST_SCALARS = st.one_of(st.none(), st.booleans(), SAFE_INTS, texts())


@PROPERTY
@given(json_values(st.one_of(FAST_KEYS, st.sampled_from(TRICKY[:10])), FAST_SCALARS))
def test_canonical_json_orjson_path_matches_reference(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


# Member names drawn only from the ranges where UTF-16 and code-point order disagree.
ORDERING_KEYS = st.text(
    st.one_of(HIGH_BMP, ASTRAL, st.sampled_from("aZ~\x7f\u00e9\ud7ff")), min_size=1, max_size=3
)


@PROPERTY
@given(st.dictionaries(ORDERING_KEYS, json_values(ORDERING_KEYS), min_size=2, max_size=8))
def test_canonical_json_orders_members_by_utf16(value: dict[str, Any]) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_member_order_is_utf16_not_code_point() -> None:
    # U+10000 is the surrogate pair D800 DC00 in UTF-16, which sorts before U+E000.
    value = {"\ue000": 1, "\U00010000": 2, "a": 3}
    expected = '{"a":3,"\U00010000":2,"\ue000":1}'.encode()
    assert canonical_json(value) == expected == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, b"1"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (5e-324, b"5e-324"),
        (-0.0, b"0"),
        (0.1, b"0.1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ("\x1f\u2028\x7f", b'"\\u001f\xe2\x80\xa8\x7f"'),
        ('"\\/', b'"\\"\\\\/"'),
        ({"b": [True, None], "a": {}}, b'{"a":{},"b":[true,null]}'),
    ],
)
def test_canonical_json_known_values(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected == rfc8785.dumps(value)


PATH_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)


@st.composite
def nested_at_path(draw: st.DrawFn, leaf: Any) -> tuple[Any, str]:
    """``leaf`` placed at a random path inside objects and arrays, and that path as text.

    The path format is the one the messages use: ``a.b[2].c``; a top-level scalar is ``value``.
    """
    steps = draw(st.lists(st.one_of(PATH_KEYS, st.integers(0, 3)), max_size=5))
    value = leaf
    for step in reversed(steps):
        if isinstance(step, int):
            siblings = draw(st.lists(SAFE_INTS, min_size=step, max_size=step))
            value = [*siblings, value]
        else:
            others: dict[str, Any] = draw(st.dictionaries(PATH_KEYS, st.booleans(), max_size=2))
            others.pop(step, None)
            value = {step: value, **others}
    path = ""
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else (f"{path}.{step}" if path else step)
    return value, path or "value"


BAD_NUMBERS = st.one_of(
    st.integers(min_value=MAX_SAFE_INTEGER + 1),
    st.integers(max_value=-MAX_SAFE_INTEGER - 1),
    st.sampled_from((float("nan"), float("inf"), float("-inf"), 2**64, -(2**53))),
)


@PROPERTY
@given(st.data())
def test_out_of_range_numbers_raise_with_path(data: st.DataObject) -> None:
    bad = data.draw(BAD_NUMBERS)
    value, path = data.draw(nested_at_path(bad))
    with pytest.raises(ValueError, match=r"safe range|not a JSON number") as raised:
        canonical_json(value)
    assert str(raised.value).startswith(f"{path}:"), (str(raised.value), path)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("\ud800", "value"),
        ({"k": "ok\udfff"}, "k"),
        ({"k": ["x", "a\ud83d"]}, "k[1]"),
        ([{"\udc00": 1}], "[0]"),
    ],
)
def test_lone_surrogates_raise(value: Any, path: str) -> None:
    with pytest.raises(ValueError, match="unpaired surrogate") as raised:
        canonical_json(value)
    assert path in str(raised.value).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


@pytest.mark.parametrize("value", [{1: "x"}, {"a": b"bytes"}, {"a": {1, 2}}, {"a": (1, 2)}])
def test_non_json_values_raise(value: Any) -> None:
    with pytest.raises(ValueError, match=r"not a string|not a JSON value"):
        canonical_json(value)


# -- b) what the writer hashes, stores, and verify rebuilds ----------------------------------

# DESIGN.md §2, written out independently of ledger/schema.py (a test below keeps them in step).
TEXT_FIELDS = OPTIONAL_TEXT_FIELDS
DESIGN_ENUMS = ENUMS_IN_DESIGN
DESIGN_FIELDS = {
    "event_id",
    "time",
    "agent_id",
    "action",
    "credential_expires_at",
    "bytes",
    "attrs",
    *TEXT_FIELDS,
    *HEX_FIELDS,
    *LIST_FIELDS,
    *BOOL_FIELDS,
    *DESIGN_ENUMS,
}


def test_strategy_covers_every_design_field() -> None:
    assert {f.name for f in CLIENT_FIELDS} == DESIGN_FIELDS
    assert {name: tuple(values) for name, values in ENUMS.items()} == DESIGN_ENUMS


ABSENT = object()
EVENT_TEXT = texts(nul=False)
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def canonical_utc(moment: datetime) -> str:
    """RFC 3339 UTC, 6 fractional digits, Z (written by hand: strftime does not pad years)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[object, str]:
    """A timestamp in one of the accepted forms, and its canonical UTC text."""
    moment = draw(MOMENTS)  # naive, meaning UTC
    form = draw(st.sampled_from(("canonical", "text", "datetime")))
    if form == "canonical":
        return canonical_utc(moment), canonical_utc(moment)
    offset = timedelta(minutes=draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59)))
    if form == "datetime":
        aware = moment.replace(tzinfo=UTC).astimezone(timezone(offset))
        return aware, canonical_utc(moment)
    local = moment + offset
    digits = draw(st.integers(0, 9))
    fraction = f"{moment.microsecond:06d}" + draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    fraction = fraction[:digits]
    expected = moment.replace(microsecond=int(fraction.ljust(6, "0")[:6]))
    separator = draw(st.sampled_from("Tt "))
    if offset or draw(st.booleans()):
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(int(offset.total_seconds())) // 60
        zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    else:
        zone = draw(st.sampled_from("Zz"))
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}{separator}{local.hour:02d}:"
        f"{local.minute:02d}:{local.second:02d}{'.' if digits else ''}{fraction}{zone}"
    )
    return text, canonical_utc(expected)


def _same(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return strategy.map(lambda v: (v, v))


def _hex(length: int) -> st.SearchStrategy[tuple[str, str]]:
    return st.text("0123456789abcdefABCDEF", min_size=length, max_size=length).map(
        lambda v: (v, v.lower())
    )


def _attrs() -> st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]:
    keys = texts(max_pieces=2)
    return _same(st.dictionaries(keys, json_values(keys, EVENT_SCALARS), max_size=5))


OPTIONAL: dict[str, st.SearchStrategy[tuple[Any, Any]]] = {
    **{name: _same(EVENT_TEXT) for name in TEXT_FIELDS},
    **{name: _hex(length) for name, length in HEX_FIELDS.items()},
    **{name: _same(st.lists(EVENT_TEXT, max_size=4)) for name in LIST_FIELDS},
    **{name: _same(st.booleans()) for name in BOOL_FIELDS},
    **{name: _same(st.sampled_from(DESIGN_ENUMS[name])) for name in DESIGN_ENUMS},
    "credential_expires_at": timestamps(),
    "bytes": _same(st.integers(0, MAX_SAFE_INTEGER)),
    "attrs": _attrs(),
}
OPTIONAL.pop("category")


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid client record and the canonical field values the ledger must hash for it."""
    event_id = draw(st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=100))
    time_in, time_out = draw(timestamps())
    record: dict[str, Any] = {
        "event_id": event_id,
        "time": time_in,
        "agent_id": draw(EVENT_TEXT.filter(bool)),
        "category": draw(st.sampled_from(DESIGN_ENUMS["category"])),
        "action": draw(st.from_regex(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){0,3}", fullmatch=True)),
    }
    expected = {**record, "time": time_out}
    chosen = draw(st.lists(st.sampled_from(sorted(OPTIONAL)), unique=True, max_size=len(OPTIONAL)))
    for name in chosen:
        if draw(st.integers(0, 9)) == 0:
            record[name] = None  # an explicit null is the same as an absent field
            continue
        record[name], expected[name] = draw(OPTIONAL[name])
    return record, expected


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _rebuild_stored(path: Path) -> list[bytes]:
    """0x00 || canonical bytes of each stored row, rebuilt from its columns as ``verify`` does.

    The leaf and chained hashes ``rebuild`` computes (through OpenSSL where it loads) are held
    to hashlib's over the same bytes.
    """
    texts: list[bytes] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=97):  # several batches
        rebuilt_texts = canonical_texts(batch)
        hashes = rebuild(batch)
        prevs = fixed_hashes(batch.column("prev_hash"))
        for row, text in enumerate(rebuilt_texts):
            leaf = _sha256(text)
            assert hashes.leaves[row].tobytes() == leaf
            assert hashes.chained[row].tobytes() == _sha256(prevs[row].tobytes() + leaf)
        texts.extend(rebuilt_texts)
    return texts


def _reference_bytes(fields: dict[str, Any], writer_id: str, seq: int, observed: datetime) -> bytes:
    """What DESIGN.md §3 says is hashed: the event plus writer_id, seq and observed_time."""
    assigned = {"writer_id": writer_id, "seq": seq, "observed_time": canonical_utc(observed)}
    payload: dict[str, Any] = {**fields, **assigned}
    return bytes(rfc8785.dumps(payload))


def _check_stored(ledger: Ledger, expected: list[dict[str, Any]]) -> None:
    """Every stored row's chain hash, typed columns and rebuilt bytes match the reference."""
    ledger.flush()
    [segment] = ledger.segment_files()
    rows = pq.read_table(segment.path).to_pylist()
    assert [row["seq"] for row in rows] == list(range(len(expected)))
    rebuilt = _rebuild_stored(segment.path)
    prev = bytes(32)
    for seq, (row, fields) in enumerate(zip(rows, expected, strict=True)):
        reference = _reference_bytes(fields, row["writer_id"], seq, row["observed_time"])
        digest = _sha256(prev + _sha256(b"\x00" + reference))
        assert row["prev_hash"] == prev, seq
        assert row["hash"] == digest, (seq, reference)
        assert rebuilt[seq] == b"\x00" + reference, (fields, reference)
        _assert_typed_columns(row, fields)
        prev = digest


def test_writer_hashes_and_verify_rebuilds_reference_bytes(tmp_path: Path) -> None:
    """Generated valid events, appended batch by batch to one real ledger.

    Each append is checked at once (so Hypothesis can shrink a failure): its WAL lines, the bytes
    the writer hashed, equal the rfc8785 reference, and the receipts carry the reference chain.
    The stored Parquet rows, and the canonical bytes rebuilt from them, are checked once for all
    batches at the end, as ``verify`` reads a whole segment.
    """
    ledger = Ledger.init(tmp_path / "ledger")
    expected: list[dict[str, Any]] = []
    chain = [bytes(32)]
    batches = []

    @PROPERTY
    @given(st.lists(valid_events(), min_size=1, max_size=4))
    def append_batch(events: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        records: list[dict[str, Any]] = []
        fields: list[dict[str, Any]] = []
        for record, canonical in events:
            unique = f"{len(expected) + len(records)}-{record['event_id']}"  # no idempotent repeats
            records.append({**record, "event_id": unique})
            fields.append({**canonical, "event_id": unique})
        first = ledger.writer.next_seq
        assert first == len(expected)
        receipts = ledger.append(records)
        batches.append(len(records))
        expected.extend(fields)  # stored now, whatever the checks below find
        chain.append(bytes.fromhex(receipts[-1].hash))
        # The WAL frame of this append holds the exact bytes the writer hashed.
        [frame] = [
            frame
            for _, scan in scan_wal_files(ledger.writer.layout)
            for frame in scan.frames
            if frame.first_seq == first
        ]
        assert len(frame.lines) == len(records)
        prev = chain[-2]
        for offset, (receipt, line) in enumerate(zip(receipts, frame.lines, strict=True)):
            assert receipt.seq == first + offset
            assert not receipt.duplicate
            observed = datetime.fromisoformat(orjson.loads(line)["observed_time"])
            reference = _reference_bytes(fields[offset], receipts.writer_id, receipt.seq, observed)
            assert line == reference, records[offset]
            digest = _sha256(prev + _sha256(b"\x00" + reference))
            assert receipt.hash == digest.hex()
            prev = digest

    try:
        append_batch()
        _check_stored(ledger, expected)
    finally:
        ledger.close()
    assert len(batches) >= 300


def _assert_typed_columns(row: dict[str, Any], fields: dict[str, Any]) -> None:
    """The typed Parquet columns hold exactly the canonical values (queries read these)."""
    for name in DESIGN_FIELDS:
        stored = row[name]
        if name not in fields:
            assert stored is None, name
        elif name in ("time", "credential_expires_at"):
            assert canonical_utc(stored) == fields[name]
            assert stored.utcoffset() == timedelta(0)
        elif name == "attrs":
            assert stored == rfc8785.dumps(fields[name]).decode("utf-8")
        else:
            assert stored == fields[name], name


# Hand-picked strings and times that hit every escaping and normalisation branch.
EXAMPLE_STRINGS = (
    'quote " and backslash \\',
    "\\u001F",
    "ctl \x01\x08\t\n\x0b\x0c\r\x1b\x1f\x7f end",
    "line\u2028sep\u2029",
    "emoji \U0001f600 \U0001f469\u200d\U0001f4bb",
    "private \ue000\uffff",
)
EXAMPLE_TIMES = (
    ("2024-01-01T05:29:59.123456789+05:30", "2023-12-31T23:59:59.123456Z"),
    ("2023-12-31t23:30:00z", "2023-12-31T23:30:00.000000Z"),
    ("2023-12-31T22:00:00.5-02:00", "2024-01-01T00:00:00.500000Z"),
    ("0999-03-01T00:00:00+01:00", "0999-02-28T23:00:00.000000Z"),
    ("2024-01-31T12:00:00.000001Z", "2024-01-31T12:00:00.000001Z"),
    (
        datetime(2024, 3, 1, 0, 30, 0, 7, tzinfo=timezone(timedelta(hours=1))),
        "2024-02-29T23:30:00.000007Z",
    ),
)


def test_tricky_strings_and_times_are_stored_canonically(tmp_path: Path) -> None:
    records, expected = [], []
    for i, (time_in, time_out) in enumerate(EXAMPLE_TIMES):
        record: dict[str, Any] = {
            "event_id": f"evt-{i}",
            "time": time_in,
            "credential_expires_at": time_in,
            "agent_id": EXAMPLE_STRINGS[0],
            "category": "secret",
            "action": "secret.read",
            "tool": EXAMPLE_STRINGS[1],
            "error": EXAMPLE_STRINGS[2],
            "intent": EXAMPLE_STRINGS[3],
            "resource": EXAMPLE_STRINGS[4],
            "policy_id": EXAMPLE_STRINGS[5],
            "credential_scopes": list(EXAMPLE_STRINGS),
            "trace_id": "0AF7651916CD43DD8448EB211C80319C",
            "span_id": "00F067AA0BA902B7",
            "attrs": {s: s for s in EXAMPLE_STRINGS} | {"n": [1.5, -0.0, 1e21, 5e-324, None]},
        }
        records.append(record)
        expected.append(
            {
                **record,
                "time": time_out,
                "credential_expires_at": time_out,
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "span_id": "00f067aa0ba902b7",
            }
        )
    ledger = Ledger.init(tmp_path / "ledger")
    try:
        ledger.append(records)
        _check_stored(ledger, expected)
    finally:
        ledger.close()


def test_wal_replay_keeps_large_integral_floats(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    child = textwrap.dedent(
        f"""
        import os
        from ledger import Ledger
        ledger = Ledger.open({str(root)!r})
        ledger.append([{{"event_id": "e1", "time": "2024-01-01T00:00:00Z", "agent_id": "a",
                         "category": "data", "action": "data.read", "attrs": {{"x": 1e17}}}}])
        os._exit(0)  # crash: acknowledged, still only in the WAL
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    ledger = Ledger.open(root)
    try:
        assert ledger.unflushed_table().column("attrs").to_pylist() == ['{"x":100000000000000000}']
        receipt = ledger.append([{**BASE_EVENT, "event_id": "e2"}])[0]
        assert receipt.seq == 1
        ledger.flush()
        assert ledger.verify().ok
    finally:
        ledger.close()


BASE_EVENT = {
    "event_id": "e",
    "time": "2024-01-01T00:00:00.000000Z",
    "agent_id": "a",
    "category": "data",
    "action": "data.read",
}


# -- c) RFC 3339 parsing ---------------------------------------------------------------------

VALID_TIMESTAMPS = [
    ("2024-01-31T12:00:00Z", "2024-01-31T12:00:00.000000Z"),
    ("2024-01-31T12:00:00.000000Z", "2024-01-31T12:00:00.000000Z"),
    # offsets across midnight, month, year and leap-day boundaries
    ("2024-01-01T00:30:00+05:30", "2023-12-31T19:00:00.000000Z"),
    ("2023-12-31T23:30:00-01:00", "2024-01-01T00:30:00.000000Z"),
    ("2024-02-28T23:00:00-02:00", "2024-02-29T01:00:00.000000Z"),
    ("2023-02-28T23:00:00-02:00", "2023-03-01T01:00:00.000000Z"),
    ("2024-03-01T01:00:00+02:00", "2024-02-29T23:00:00.000000Z"),
    ("2024-06-15T10:00:00+23:59", "2024-06-14T10:01:00.000000Z"),
    ("2024-06-15T10:00:00-23:59", "2024-06-16T09:59:00.000000Z"),
    ("2024-06-15T10:00:00-00:00", "2024-06-15T10:00:00.000000Z"),
    ("2024-06-15T10:00:00+00:00", "2024-06-15T10:00:00.000000Z"),
    # lower case separators, and the space RFC 3339 §5.6 allows
    ("2024-06-15t10:00:00z", "2024-06-15T10:00:00.000000Z"),
    ("2024-06-15 10:00:00Z", "2024-06-15T10:00:00.000000Z"),
    # 1..9 fractional digits, truncated (never rounded) to microseconds
    ("2024-06-15T10:00:00.1Z", "2024-06-15T10:00:00.100000Z"),
    ("2024-06-15T10:00:00.12Z", "2024-06-15T10:00:00.120000Z"),
    ("2024-06-15T10:00:00.123Z", "2024-06-15T10:00:00.123000Z"),
    ("2024-06-15T10:00:00.1234Z", "2024-06-15T10:00:00.123400Z"),
    ("2024-06-15T10:00:00.12345Z", "2024-06-15T10:00:00.123450Z"),
    ("2024-06-15T10:00:00.123456Z", "2024-06-15T10:00:00.123456Z"),
    ("2024-06-15T10:00:00.1234567Z", "2024-06-15T10:00:00.123456Z"),
    ("2024-06-15T10:00:00.12345678Z", "2024-06-15T10:00:00.123456Z"),
    ("2024-06-15T10:00:00.123456789Z", "2024-06-15T10:00:00.123456Z"),
    ("2024-12-31T23:59:59.999999999Z", "2024-12-31T23:59:59.999999Z"),
    ("2024-12-31T23:59:59.999999999-00:01", "2025-01-01T00:00:59.999999Z"),
    # the ends of the range
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
    ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    ("0001-01-01T00:30:00+00:30", "0001-01-01T00:00:00.000000Z"),
    ("2000-02-29T00:00:00Z", "2000-02-29T00:00:00.000000Z"),
    # aware datetimes
    (
        datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "2023-12-31T19:00:00.000000Z",
    ),
    (datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC), "2024-01-01T12:00:00.000001Z"),
    (
        datetime(2023, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2))),
        "2024-01-01T01:00:00.000000Z",
    ),
]


@pytest.mark.parametrize(("given_time", "canonical"), VALID_TIMESTAMPS)
def test_valid_timestamps_normalise(given_time: object, canonical: str) -> None:
    assert parse_timestamp(given_time) == canonical
    assert parse_timestamp(canonical) == canonical  # idempotent


INVALID_TIMESTAMPS = [
    ("2024-01-01T00:00:00", "not an RFC 3339 timestamp with a UTC offset"),
    ("2024-01-01T00:00:00.123456", "not an RFC 3339 timestamp with a UTC offset"),
    ("2024-01-01", "not an RFC 3339 timestamp"),
    ("20240101T000000Z", "not an RFC 3339 timestamp"),
    ("2024-1-01T00:00:00Z", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00Z", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00.Z", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00.1234567890Z", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00+0530", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00 Z", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00Z\n", "not an RFC 3339 timestamp"),
    ("2024-01-01T00:00:00.000000Z\n", "not an RFC 3339 timestamp"),
    (" 2024-01-01T00:00:00Z", "not an RFC 3339 timestamp"),
    ("+2024-01-01T00:00:00Z", "not an RFC 3339 timestamp"),
    ("garbage", "not an RFC 3339 timestamp"),
    ("", "not an RFC 3339 timestamp"),
    ("2024-13-01T00:00:00Z", "not a valid date and time"),
    ("2024-00-10T00:00:00Z", "not a valid date and time"),
    ("2024-02-30T00:00:00Z", "not a valid date and time"),
    ("2023-02-29T00:00:00Z", "not a valid date and time"),
    ("2024-04-31T00:00:00Z", "not a valid date and time"),
    ("2016-12-31T23:59:60Z", "not a valid date and time"),
    ("0000-01-01T00:00:00Z", "not a valid date and time"),
    ("2024-01-01T24:00:00Z", "not a valid date and time"),
    ("2024-01-01T23:60:00Z", "not a valid date and time"),
    # the same, already in canonical shape (a separate code path)
    ("2024-13-01T00:00:00.000000Z", "not a valid date and time"),
    ("2024-02-30T00:00:00.000000Z", "not a valid date and time"),
    ("2016-12-31T23:59:60.000000Z", "not a valid date and time"),
    ("0000-01-01T00:00:00.000000Z", "not a valid date and time"),
    ("2024-01-01T24:00:00.000000Z", "not a valid date and time"),
    # offsets
    ("2024-01-01T00:00:00+24:00", "invalid UTC offset"),
    ("2024-01-01T00:00:00+05:60", "invalid UTC offset"),
    ("0001-01-01T00:00:00+00:01", "out of range"),
    ("9999-12-31T23:59:59-00:01", "out of range"),
    # not text at all
    (datetime(2024, 1, 1), "has no timezone"),
    (date(2024, 1, 1), "expected an RFC 3339 timestamp string"),
    (1_700_000_000, "expected an RFC 3339 timestamp string"),
    (1.7e9, "expected an RFC 3339 timestamp string"),
    (b"2024-01-01T00:00:00Z", "expected an RFC 3339 timestamp string"),
]


@pytest.mark.parametrize(("given_time", "message"), INVALID_TIMESTAMPS)
def test_invalid_timestamps_raise(given_time: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_timestamp(given_time)
    with pytest.raises(ValidationError, match=f"field 'time': .*{message}"):
        validate_event(
            {"event_id": "e", "time": given_time, "agent_id": "a", "category": "llm", "action": "x"}
        )


@pytest.mark.parametrize(
    "given_time",
    [
        "２０２４-01-01T00:00:00Z",  # fullwidth digits
        "٢٠٢٤-01-01T00:00:00.000000Z",  # Arabic-Indic digits, canonical shape
    ],
)
def test_non_ascii_digits_are_rejected(given_time: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
        parse_timestamp(given_time)


@PROPERTY
@given(timestamps())
def test_generated_timestamps_normalise(pair: tuple[object, str]) -> None:
    given_time, canonical = pair
    assert parse_timestamp(given_time) == canonical
