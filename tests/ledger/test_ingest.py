"""The compiled batch parser (``ledger.ingest``) held to the per-record validator and RFC 8785.

``parse_batch`` reads orjson's sorted-key text of a batch and accepts it only when every record is
valid *and* already canonical; ``check_batch`` falls back to ``normalise`` (the per-record
validator, which is the definition) for anything else. The safety property tested here:

* the fast path never accepts a batch the validator rejects, and when it accepts, its columns are
  the ones ``normalise`` builds (and the ones the validated events imply, built without Arrow);
* ``ParsedBatch.chain`` splices the ledger's members into each record's text to make bytes equal,
  byte for byte, to ``rfc8785.dumps`` of the validated event plus writer_id, seq and
  observed_time, with leaf and chained SHA-256 hashes as hashlib computes them, and equal to what
  ``rebuild.canonical_texts`` rebuilds from the stored columns;
* hand-written text that is not canonical (whitespace, key order, escapes, number forms, UTF-8)
  is refused whatever it means.

Refusing a valid batch is allowed (it only costs the slower path); accepting an invalid one is not.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import rfc8785
from design_schema import (
    BOOL_FIELDS,
    ENUMS,
    HEX_FIELDS,
    LIST_FIELDS,
    OPTIONAL_TEXT_FIELDS,
    REQUIRED,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import FULL_EVENT as FULL
from ledger_helpers import VALID_EVENT, expected_columns, outcome, tool_event

from ledger.batch import CheckedBatch, check_batch, normalise
from ledger.canonical import format_micros
from ledger.errors import ValidationError
from ledger.events import SERIALISE_OPTIONS, json_view, validate_batch
from ledger.ingest import ParsedBatch, parse_batch
from ledger.rebuild import canonical_texts
from ledger.schema import CLIENT_FIELDS
from ledger.writer import _assigned

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Limits of DESIGN.md §2, written out here rather than imported.
MAX_ID = 128
MAX_TEXT = 65536
MAX_ITEMS = 1024
MAX_ATTRS = 64 * 1024
SAFE = 2**53 - 1

NOW = "2026-01-31T12:00:00.000000Z"
BASE: dict[str, Any] = {**VALID_EVENT, "event_id": "evt-1", "time": NOW}  # as RAW spells it
# attrs {"k":"<pad>"} is exactly MAX_ATTRS bytes of canonical JSON.
ATTRS_PAD = MAX_ATTRS - len('{"k":""}')


def nested_objects(depth: int, leaf: Any) -> Any:
    """``depth`` objects {"a": ...} around ``leaf``: the leaf sits at depth ``depth``."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_lists(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def dumps(records: Sequence[Any]) -> bytes | None:
    """orjson's text of a batch as ``check_batch`` makes it, or None where orjson has no form."""
    try:
        return orjson.dumps(list(records), option=SERIALISE_OPTIONS)
    except TypeError:
        return None


def _json_int(text: str) -> int | float:
    value = int(text)
    return value if abs(value) <= SAFE else float(text)


def reference_bytes(event: dict[str, Any], writer_id: str, seq: int, observed: int) -> bytes:
    """RFC 8785 bytes of a validated event (attrs parsed back) plus the ledger's members."""
    plain = dict(event)
    if "attrs" in plain:
        # Integers beyond 2^53 in canonical attrs text can only have come from floats (the
        # validator rejects such integers), and rfc8785 writes those floats the same way.
        plain["attrs"] = json.loads(plain["attrs"], parse_int=_json_int)
    plain.update(writer_id=writer_id, seq=seq, observed_time=format_micros(observed))
    return bytes(rfc8785.dumps(plain))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def assert_agree(records: list[Any]) -> None:
    """The safety property for one batch (see the module docstring)."""
    events, reference = outcome(lambda: validate_batch(records))
    text = dumps(records)
    # check_batch parses only batches of plain dicts (a Fragment may stand for several records).
    plain = all(type(r) is dict for r in records)
    parsed = parse_batch(text, len(records)) if text is not None and plain else None
    if parsed is not None:
        assert reference is None, f"fast path accepted a batch the validator rejects: {reference}"
    checked, got = outcome(lambda: check_batch(records))
    assert (got is None) == (reference is None), (got, reference)
    if reference is not None:
        assert got is not None
        assert got.problems == reference.problems
        return
    assert events is not None and checked is not None
    normalised = normalise(records)
    assert normalised.columns.num_rows == len(records)
    assert normalised.columns.to_pydict() == expected_columns(events)
    assert checked.columns.equals(normalised.columns)
    if parsed is not None:
        assert parsed.columns.equals(normalised.columns)
        assert parsed.columns.schema.equals(normalised.columns.schema)


def assert_chain(
    checked: CheckedBatch,
    events: list[dict[str, Any]],
    positions: list[int],
    writer_id: str,
    first_seq: int,
    observed: int,
    prev: bytes,
) -> None:
    """chain() at ``positions`` against the reference bytes, hashlib and the rebuilt columns."""
    chosen = [events[p] for p in positions]
    expected = [
        reference_bytes(e, writer_id, first_seq + i, observed) for i, e in enumerate(chosen)
    ]
    chained = checked.parsed.chain(
        np.asarray(positions, np.int64), writer_id, first_seq, observed, prev
    )
    lines = bytes(chained.lines)
    assert lines == b"\n".join(expected)
    assert lines.split(b"\n") == expected
    assert chained.leaves.shape == chained.hashes.shape == (len(positions), 32)
    last = prev
    for i, line in enumerate(expected):
        leaf = sha256(b"\x00" + line)
        assert chained.leaves[i].tobytes() == leaf
        last = sha256(last + leaf)
        assert chained.hashes[i].tobytes() == last
    # verify's way to the same bytes: rebuilt from the stored columns, as the writer stores them.
    columns = checked.columns.take(pa.array(positions, pa.int64()))
    stored = _assigned(columns, writer_id, first_seq, observed)
    rebuilt = canonical_texts(stored.combine_chunks().to_batches()[0])
    assert rebuilt == [b"\x00" + line for line in expected]


# -- strategies: valid records ---------------------------------------------------------------

SPECIAL_CHARS = (
    '"',
    "\\",
    "/",
    "\x7f",
    "\x1f",
    "\x01",
    "\b",
    "\t",
    "\n",
    "\f",
    "\r",
    "\x80",
    "\u2028",
    "é",
    "\ue000",
    "\uffff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
)
ID_CHARS = st.one_of(
    st.sampled_from([c for c in SPECIAL_CHARS if c >= " " and c != "\x7f"]),
    st.characters(exclude_categories=("Cs", "Cc")),
)
TEXT_CHARS = st.one_of(
    st.sampled_from(SPECIAL_CHARS),
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
)
IDS = st.text(ID_CHARS, min_size=1, max_size=12)
TEXTS = st.text(TEXT_CHARS, max_size=12)
KEYS = st.text(
    st.one_of(st.sampled_from((*SPECIAL_CHARS, "\x00")), st.characters(exclude_categories=["Cs"])),
    max_size=4,
)
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
ACTIONS = st.from_regex(r"[A-Za-z0-9_\-]{1,6}(\.[A-Za-z0-9_\-]{1,6}){0,3}", fullmatch=True)


def canonical_utc(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


@st.composite
def times(draw: st.DrawFn) -> Any:
    """A valid timestamp, canonical or in a form the validator normalises."""
    moment = draw(MOMENTS)
    form = draw(st.sampled_from(["canonical", "canonical", "short", "offset", "datetime"]))
    if form == "canonical":
        return canonical_utc(moment)
    if form == "short":
        return f"{moment:%Y-%m-%d}T{moment:%H:%M:%S}Z" if moment.year >= 1000 else NOW
    offset = timedelta(minutes=draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59)))
    aware = moment.replace(tzinfo=UTC).astimezone(timezone(offset))
    if form == "datetime":
        return aware
    return aware.isoformat() if aware.year >= 1000 else NOW


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-SAFE, SAFE),
    st.sampled_from([0, -1, SAFE, -SAFE, 10**15]),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXTS,
)
ATTRS_VALUES = st.dictionaries(
    KEYS,
    st.recursive(
        JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)
# Integer-and-string attrs only: these stay on the fast path (no floats or nulls).
FAST_ATTRS = st.dictionaries(
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=4),
    st.recursive(
        st.one_of(st.booleans(), st.integers(-SAFE, SAFE), st.text(max_size=6)),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text("abcxyz", max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    max_size=4,
)


def _hex(length: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text("0123456789abcdef", min_size=length, max_size=length),
        st.text("0123456789abcdefABCDEF", min_size=length, max_size=length),
    )


OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(OPTIONAL_TEXT_FIELDS, TEXTS),
    **{name: _hex(length) for name, length in HEX_FIELDS.items()},
    **{
        name: st.lists(TEXTS, max_size=4) | st.lists(TEXTS, max_size=3).map(tuple)
        for name in LIST_FIELDS
    },
    **dict.fromkeys(BOOL_FIELDS, st.booleans()),
    **{name: st.sampled_from(ENUMS[name]) for name in ENUMS if name != "category"},
    "credential_expires_at": times(),
    "bytes": st.integers(0, SAFE) | st.sampled_from([0, 9, 10, SAFE]),
    "attrs": st.one_of(FAST_ATTRS, ATTRS_VALUES),
}


@st.composite
def valid_records(draw: st.DrawFn, index: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": draw(IDS) + f"-{index}",
        "time": draw(times()),
        "agent_id": draw(TEXTS.filter(bool)),
        "category": draw(st.sampled_from(ENUMS["category"])),
        "action": draw(ACTIONS),
    }
    for name in draw(st.lists(st.sampled_from(sorted(OPTIONAL)), unique=True, max_size=12)):
        record[name] = None if draw(st.integers(0, 12)) == 0 else draw(OPTIONAL[name])
    return record


@st.composite
def valid_batches(draw: st.DrawFn, min_size: int = 1, max_size: int = 5) -> list[dict[str, Any]]:
    size = draw(st.integers(min_size, max_size))
    return [draw(valid_records(i)) for i in range(size)]


# -- strategies: mutations -------------------------------------------------------------------

TIME_POOL: list[Any] = [
    NOW,
    "2000-02-29T00:00:00.000000Z",  # a leap day (2000 is divisible by 400)
    "2024-02-29T23:59:59.999999Z",
    "1900-02-29T00:00:00.000000Z",  # 1900 is not a leap year
    "2026-02-29T00:00:00.000000Z",
    "2026-04-31T00:00:00.000000Z",
    "2026-13-01T00:00:00.000000Z",
    "2026-00-10T00:00:00.000000Z",
    "2026-01-00T00:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "0001-01-01T00:00:00.000000Z",
    "9999-12-31T23:59:59.999999Z",
    "2026-01-31T24:00:00.000000Z",
    "2026-01-31T23:60:00.000000Z",
    "2016-12-31T23:59:60.000000Z",
    "２０２６-01-31T12:00:00.000000Z",  # full-width digits
    "٢٠٢٦-01-31T12:00:00.000000Z",  # Arabic-Indic digits
    "2026-01-31T12:00:00.00000０Z",
    "2026-01-31T12:00:00Z",  # valid, not canonical
    "2026-01-31t12:00:00.123456789z",
    "2026-01-31 12:00:00.5+05:30",
    "2026-01-31T12:00:00.000000-00:00",
    "9999-12-31T23:59:59.999999-01:00",  # year 10000 in UTC
    "0001-01-01T00:00:00.000000+01:00",  # year 0 in UTC
    "2026-01-31T12:00:00.000000",
    "2026-01-31T12:00:00.000000Z\n",
    " 2026-01-31T12:00:00.000000Z",
    "",
    "garbage",
    datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=-3))),
    datetime(2026, 1, 31, 12),
    1_700_000_000,
    None,
]
ID_POOL: list[Any] = [
    "e",
    "x" * MAX_ID,
    "x" * (MAX_ID + 1),
    "é" * MAX_ID,  # 256 bytes, 128 characters: valid
    "é" * (MAX_ID + 1),
    "\U0001f600" * MAX_ID,  # 512 bytes, valid
    "\U0001f600" * (MAX_ID + 1),
    '"\\' * (MAX_ID // 2),  # escaped: 256 bytes of text, 128 characters
    '"\\' * (MAX_ID // 2) + "x",
    "",
    "a\x00",
    "a\x01",
    "a\x1f",
    "a\t",
    "a\x7f",
    "a\x80",  # a C1 control is not one of the validator's controls
    "\ue000\uffff",
    "\ud800",
    3,
    True,
    1.5,
    [],
    None,
]
TEXT_POOL: list[Any] = [
    "",
    "s",
    "x" * MAX_TEXT,
    "x" * (MAX_TEXT + 1),
    "é" * MAX_TEXT,
    "é" * (MAX_TEXT + 1),
    "\U0001f600" * MAX_TEXT,
    "\U0001f600" * (MAX_TEXT - 1) + "\n",
    "\U0001f600" * MAX_TEXT + "\n",
    "\n" * MAX_TEXT,  # 2 bytes of text a character
    "\x01" * (MAX_TEXT + 1),  # 6 bytes a character
    "\x00",
    "a\x00b",
    '\x01\x1f\x7f\b\t\n\f\r"\\/',
    "\\u001F",
    "\ud800",
    "a\udc00b",
    1.5,
    0,
    False,
    {"a": 1},
    None,
]
HEX32_POOL: list[Any] = [
    "0" * 32,
    "A" * 32,
    "aB" * 16,
    "0" * 31,
    "0" * 33,
    "g" * 32,
    "０" * 32,
    "é" * 16,
    "",
    5,
    None,
]
HEX16_POOL: list[Any] = [
    "0123456789abcdef",
    "0123456789ABCDEF",
    "0" * 15,
    "0" * 17,
    "z" * 16,
    "0123456789abcde\x00",
    "",
    None,
]
LIST_POOL: list[Any] = [
    [],
    ["a", "b"],
    ("a", "\U0001f600"),
    ["x"] * MAX_ITEMS,
    ["x"] * (MAX_ITEMS + 1),
    tuple(["y"] * (MAX_ITEMS + 1)),
    ["é" * MAX_TEXT],
    ["x" * (MAX_TEXT + 1)],
    ["", '\x01"\\'],
    "ab",
    [1],
    [None],
    ["a", None],
    [["a"]],
    ["a\x00"],
    ["\ud800"],
    {"a": 1},
    None,
]
ATTRS_POOL: list[Any] = [
    {},
    {"k": "v", "n": [1, {"a": True}]},
    {"b": 1, "a": 2},  # orjson sorts
    {"k": 1.5},
    {"k": 1.0},
    {"k": -0.0},
    {"k": 1e17},
    {"k": 5e-324},
    {"k": None},
    {"k": [None]},
    {"k": SAFE},
    {"k": -SAFE},
    {"k": SAFE + 1},
    {"k": -SAFE - 1},
    {"k": 2**64 - 1},
    {"k": 2**64},
    {"k": -(2**63)},
    {"k": 2**70},
    {"\ue000": 1, "\U00010000": 2},
    {"\U00010000": 1},
    {"\uffff": 1, "\U0010ffff": 2},
    {"a\ue000": 1, "a": 2},
    {"": 1},
    {"a\x00": 1},
    {'"': 1, "\\": 2, "\x01": 3},
    {"k": '\x00\x1f\x7f"\\/\u2028'},
    {"k": ("a", 1, ("b",))},
    {"k": "a" * ATTRS_PAD},
    {"k": "a" * (ATTRS_PAD + 1)},
    {"k": "é" * (ATTRS_PAD // 2)},
    {"k": "é" * (ATTRS_PAD // 2 + 1)},
    nested_objects(64, {}),
    nested_objects(65, {}),
    nested_objects(63, 1),
    nested_objects(64, 1),  # a scalar 64 levels down
    nested_objects(65, 1),  # a scalar 65 levels down: too deep
    {"k": nested_lists(63, "s")},
    {"k": nested_lists(64, "s")},  # too deep
    {"k": nested_lists(64, [])},
    {"k": math.nan},
    {"k": math.inf},
    {1: "x"},
    {"k": "\ud800"},
    {"k\udc00": 1},
    {"k": b"x"},
    {"k": {1, 2}},
    "x",
    [],
    [("k", 1)],
    5,
    None,
]

POOLS: dict[str, list[Any]] = {
    "event_id": ID_POOL,
    "time": TIME_POOL,
    "credential_expires_at": TIME_POOL,
    "agent_id": TEXT_POOL,
    "session_id": TEXT_POOL,
    "error": TEXT_POOL,
    "tool": TEXT_POOL,
    "category": ["secret", "ledger", "Secret", "secret ", "", 3, True, None],
    "sensitivity": ["public", "restricted", "secret", "", 1, None],
    "input_trust": ["trusted", "untrusted", "maybe"],
    "outcome": ["success", "denied", "ok", None],
    "action": [
        "a.b",
        "A-b_c.d",
        "a",
        "a..b",
        ".a",
        "a.",
        ".",
        "a b",
        "a\n",
        "é.b",
        "a\\.b",
        "",
        "a" * MAX_TEXT,
        "a" * (MAX_TEXT + 1),  # longer than any text may be
        "a." * (MAX_TEXT // 2) + "a",
        1,
        None,
    ],
    "trace_id": HEX32_POOL,
    "span_id": HEX16_POOL,
    "parent_span_id": HEX16_POOL,
    "credential_scopes": LIST_POOL,
    "intent_scopes": LIST_POOL,
    "external": [True, False, 0, 1, "true", None],
    "privileged": [True, False, 1.0, None],
    "bytes": [
        0,
        5,
        9,
        10,
        SAFE,
        SAFE + 1,
        -1,
        -0.0,
        2**63,
        2**64,
        2**65,
        1.5,
        1.0,
        True,
        False,
        "1",
        None,
    ],
    "attrs": ATTRS_POOL,
    # fields the schema does not have
    "colour": ["red"],
    "seq": [1],
    "writer_id": ["w"],
    "hash": ["00"],
    "Event_ID": ["x"],
    "attrs.model": ["m"],
    "événement": [1],
}
ODD_RECORDS: list[Any] = [
    "not a record",
    None,
    7,
    [BASE],
    (("event_id", "e"),),
    {},
    *({k: v for k, v in BASE.items() if k != name} for name in REQUIRED),
]


@st.composite
def mixed_records(draw: st.DrawFn, index: int) -> Any:
    kind = draw(st.sampled_from(["valid", "full", "mutated", "mutated", "mutated", "odd"]))
    if kind == "odd":
        return draw(st.sampled_from(ODD_RECORDS))
    if kind == "full":
        record: dict[str, Any] = {**FULL, "event_id": f"evt-{index}"}
    else:
        record = draw(valid_records(index))
    if kind == "mutated":
        for field in draw(st.lists(st.sampled_from(sorted(POOLS)), min_size=1, max_size=3)):
            record[field] = draw(st.sampled_from(POOLS[field]))
    return record


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[Any]:
    size = draw(st.integers(1, 5))
    return [draw(mixed_records(i)) for i in range(size)]


# -- 1. differential: the compiled parser against the per-record validator ------------------


def test_full_record_takes_the_fast_path() -> None:
    """The mutation tests start from records the fast path accepts."""
    for records in ([FULL], [BASE], [FULL, BASE, {**FULL, "event_id": "x"}]):
        text = dumps(records)
        assert text is not None
        parsed = parse_batch(text, len(records))
        assert parsed is not None
        assert check_batch(records).records is records  # not the validator's normalised copies
    assert_agree([FULL, BASE])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, value, id=f"{field}-{i}")
        for field, values in POOLS.items()
        for i, value in enumerate(values)
    ],
)
def test_each_value_agrees(field: str, value: Any) -> None:
    """Every pool value alone, in a batch whose other record the fast path accepts."""
    assert_agree([{**FULL, "event_id": "first"}, {**FULL, field: value}])
    assert_agree([{**BASE, field: value}])


@pytest.mark.parametrize("record", ODD_RECORDS, ids=repr)
def test_odd_records_agree(record: Any) -> None:
    assert_agree([record])
    assert_agree([FULL, record])


@PROPERTY
@given(mixed_batches())
def test_parser_agrees_with_validator(records: list[Any]) -> None:
    assert_agree(records)


@PROPERTY
@given(valid_batches())
def test_valid_batches_are_accepted(records: list[dict[str, Any]]) -> None:
    events = validate_batch(records)
    checked = check_batch(records)
    assert checked.columns.to_pydict() == expected_columns(events)
    assert checked.columns.equals(normalise(records).columns)


# -- 2. canonical bytes and the hash chain ---------------------------------------------------

WRITER_IDS = st.one_of(
    st.sampled_from(["writer-1", 'w"\\\x01\x1f\x7f/é\u2028\ue000\U0001f600', ""]),
    st.text(TEXT_CHARS, max_size=8),
)
FIRST_SEQS = st.one_of(st.sampled_from([0, 1, 9, 10, 99, 2**40]), st.integers(0, 2**40))
OBSERVED = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            1_700_000_000_123_456,
            -62135596800000000,  # 0001-01-01T00:00:00Z
            253402300799999999,  # 9999-12-31T23:59:59.999999Z
            951782400000000,  # 2000-02-29
        ]
    ),
    st.integers(-62135596800000000, 253402300799999999),
)


@PROPERTY
@given(
    valid_batches(),
    WRITER_IDS,
    FIRST_SEQS,
    OBSERVED,
    st.binary(min_size=32, max_size=32),
)
def test_chain_matches_reference_bytes(
    records: list[dict[str, Any]], writer_id: str, first_seq: int, observed: int, prev: bytes
) -> None:
    events = validate_batch(records)
    positions = list(range(len(records)))
    assert_chain(check_batch(records), events, positions, writer_id, first_seq, observed, prev)
    # The normalised batch (attrs trusted) makes the same bytes.
    assert_chain(normalise(records), events, positions, writer_id, first_seq, observed, prev)


@pytest.mark.parametrize("first_seq", [0, 9, 10, 99, 100, 2**40, 2**53 - 10])
@pytest.mark.parametrize(
    "observed", [0, -1, 999_999, 1_000_000, 1_700_000_000_123_456, 253402300799999999]
)
def test_chain_seq_and_observed_time_forms(first_seq: int, observed: int) -> None:
    """Seqs crossing a power of ten within the batch, and observed times at the edges."""
    records = [
        {**FULL, "event_id": f"e-{i}", "attrs": {"i": i, "\ue000": [1.5, None]}} for i in range(3)
    ]
    records.append({**BASE, "event_id": "plain"})
    events = validate_batch(records)
    for checked in (check_batch(records), normalise(records)):
        assert_chain(checked, events, [0, 1, 2, 3], "writer-1", first_seq, observed, bytes(32))


def test_chain_of_the_fast_path_equals_the_normalised_one() -> None:
    records = [{**FULL, "event_id": f"e-{i}"} for i in range(4)]
    text = dumps(records)
    assert text is not None
    fast = parse_batch(text, len(records))
    assert fast is not None
    slow = normalise(records).parsed
    positions = np.arange(4, dtype=np.int64)
    a = fast.chain(positions, "w", 5, 1_700_000_000_000_000, b"\x01" * 32)
    a_lines, a_hashes = bytes(a.lines), a.hashes.copy()  # the scratch buffer is reused
    b = slow.chain(positions, "w", 5, 1_700_000_000_000_000, b"\x01" * 32)
    assert a_lines == bytes(b.lines)
    assert np.array_equal(a_hashes, b.hashes)


# -- 3. a subset of positions ----------------------------------------------------------------


@pytest.mark.parametrize("positions", [[0, 2], [1], [2], [0, 1, 2], [3, 1], [2, 0]])
def test_chain_positions_subset(positions: list[int]) -> None:
    records = [
        {**FULL, "event_id": "zero"},
        tool_event(1, attrs={"x": 1.25}),  # not canonical: the slow path
        {**BASE, "event_id": "two", "tool": 'a"\n'},
        {**FULL, "event_id": "three", "credential_scopes": []},
    ]
    events = validate_batch(records)
    for checked in (check_batch(records), normalise(records)):
        assert_chain(checked, events, positions, "writer-9", 41, 1_234_567, b"\xff" * 32)


@PROPERTY
@given(valid_batches(min_size=3), st.data())
def test_chain_positions_subset_generated(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    positions = data.draw(
        st.lists(st.integers(0, len(records) - 1), min_size=1, unique=True).map(sorted)
    )
    events = validate_batch(records)
    assert_chain(check_batch(records), events, positions, "w", 10, 0, bytes(32))


# -- 4. values orjson serialises natively ----------------------------------------------------


class Category(enum.StrEnum):
    SECRET = "secret"
    BOGUS = "bogus"


class PlainCategory(enum.Enum):
    TOOL = "tool"
    NUMBER = 3


class Size(enum.IntEnum):
    SMALL = 10
    HUGE = 2**53


class Flags(enum.IntFlag):
    FOUR = 4


class Odd(enum.Enum):
    FLOAT = 1.5
    TRUE = True
    LIST = ("a", "b")
    DICT = {"b": 1, "a": [1, 2]}  # noqa: RUF012


NATIVE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("uuid event_id", {"event_id": uuid.UUID(int=0x1234)}),
    ("uuid in text", {"tool": uuid.uuid5(uuid.NAMESPACE_DNS, "x")}),
    ("uuid in attrs", {"attrs": {"u": uuid.UUID(int=1)}}),
    ("StrEnum category", {"category": Category.SECRET}),
    ("StrEnum invalid category", {"category": Category.BOGUS}),
    ("StrEnum event_id", {"event_id": Category.SECRET}),
    ("Enum category", {"category": PlainCategory.TOOL}),
    ("Enum number category", {"category": PlainCategory.NUMBER}),
    ("IntEnum bytes", {"bytes": Size.SMALL}),
    ("IntEnum too big", {"bytes": Size.HUGE}),
    ("IntFlag bytes", {"bytes": Flags.FOUR}),
    ("Enum float bytes", {"bytes": Odd.FLOAT}),
    ("Enum bool bytes", {"bytes": Odd.TRUE}),
    ("Enum bool external", {"external": Odd.TRUE}),
    ("Enum tuple list", {"credential_scopes": Odd.LIST}),
    ("Enum dict attrs", {"attrs": Odd.DICT}),
    ("enums in attrs", {"attrs": {"c": Category.SECRET, "s": Size.SMALL, "o": Odd.LIST}}),
    ("tuple list", {"intent_scopes": ("a", "b")}),
    ("tuple with None", {"intent_scopes": ("a", None)}),
    ("tuples in attrs", {"attrs": {"t": ("a", (1, 2)), "u": ()}}),
    ("fragment action", {"action": orjson.Fragment(b'"a.b"')}),
    ("fragment str action", {"action": orjson.Fragment('"a.b"')}),
    ("fragment invalid action", {"action": orjson.Fragment(b'"a..b"')}),
    ("fragment not json", {"action": orjson.Fragment(b"a.b")}),
    ("fragment empty", {"action": orjson.Fragment(b"")}),
    ("fragment escaped", {"tool": orjson.Fragment(b'"\\u0041"')}),
    ("fragment bytes", {"bytes": orjson.Fragment(b"10")}),
    ("fragment float bytes", {"bytes": orjson.Fragment(b"1.0")}),
    ("fragment attrs", {"attrs": orjson.Fragment(b'{"a":1,"b":[true]}')}),
    ("fragment attrs unsorted", {"attrs": orjson.Fragment(b'{"b":1,"a":2}')}),
    ("fragment attrs duplicate", {"attrs": orjson.Fragment(b'{"a":1,"a":2}')}),
    ("fragment inside attrs", {"attrs": {"k": orjson.Fragment(b"[1,2]")}}),
    (
        "fragment injects a member into attrs",
        {"attrs": {"k": orjson.Fragment(b'1,"z":2')}},
    ),
    (
        "fragment injects agent_id",
        {"action": orjson.Fragment(b'"a.b","agent_id":"x"'), "agent_id": None},
    ),
    (
        "fragment injects a second agent_id",
        {"action": orjson.Fragment(b'"a.b","agent_id":"x"')},
    ),
    (
        "fragment injects an optional field",
        {"time": orjson.Fragment(b'"2026-01-31T12:00:00.000000Z","tool":"injected"')},
    ),
]


@pytest.mark.parametrize("fields", [c[1] for c in NATIVE_CASES], ids=[c[0] for c in NATIVE_CASES])
def test_native_values_agree(fields: dict[str, Any]) -> None:
    """check_batch and validate_batch both accept (with the same columns) or both reject."""
    record = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    assert_agree([record])
    assert_agree([{**FULL, "event_id": "other"}, {**FULL, **fields}])


@pytest.mark.parametrize(
    "fields",
    [c[1] for c in NATIVE_CASES if "injects" not in c[0]],
    ids=[c[0] for c in NATIVE_CASES if "injects" not in c[0]],
)
def test_json_view_reads_values_as_orjson_writes_them(fields: dict[str, Any]) -> None:
    """Where orjson writes a value as valid JSON, json_view is that JSON, parsed.

    (Not for Fragments that inject members: those are not one value, and must be rejected.)
    """
    for value in fields.values():
        try:
            text = orjson.dumps(value, option=SERIALISE_OPTIONS)
            written = orjson.loads(text)
        except (TypeError, orjson.JSONDecodeError):
            continue  # orjson has no form for it, or its form is not JSON on its own
        assert json_view(value) == written


_BASE_TEXT = orjson.dumps(BASE, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([orjson.Fragment(_BASE_TEXT)], id="one-record"),
        pytest.param([orjson.Fragment(_BASE_TEXT + b"," + _BASE_TEXT)], id="two-records-in-one"),
        # Neither Fragment is a record alone, but their text is two valid records.
        pytest.param(
            [
                orjson.Fragment(_BASE_TEXT + b"," + _BASE_TEXT[:-1]),
                orjson.Fragment(b'"tool":"t"}'),
            ],
            id="records-split-across-fragments",
        ),
    ],
)
def test_fragment_records(records: list[Any]) -> None:
    """Whole records as Fragments of canonical text."""
    assert_agree(records)


# -- 5. text that is not canonical -----------------------------------------------------------

# A record as raw JSON value texts by member name; ``record_text`` writes its members sorted.
RAW: dict[str, bytes] = {
    "action": b'"secret.read"',
    "agent_id": b'"agent-7"',
    "attrs": b'{"a":1,"b":[1,"x"],"c":{"d":true}}',
    "bytes": b"7",
    "category": b'"secret"',
    "event_id": b'"evt-1"',
    "time": b'"' + NOW.encode() + b'"',
    "tool": b'"t"',
}


def record_text(**values: bytes | None) -> bytes:
    """RAW with ``values`` replacing (or, for None, removing) members, in sorted order."""
    merged = {**RAW, **values}
    members = [b'"' + k.encode() + b'":' + v for k, v in sorted(merged.items()) if v is not None]
    return b"{" + b",".join(members) + b"}"


def batch(**values: bytes | None) -> bytes:
    return b"[" + record_text(**values) + b"]"


RECORD = record_text()
BATCH = batch()


def _swap(old: bytes, new: bytes, text: bytes = BATCH) -> bytes:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _attrs(old: bytes, new: bytes) -> tuple[bytes, bytes]:
    """A change inside the baseline attrs text: (baseline batch, changed batch)."""
    return BATCH, batch(attrs=_swap(old, new, RAW["attrs"]))


def _field(name: str, canonical: bytes, variant: bytes) -> tuple[bytes, bytes]:
    return batch(**{name: canonical}), batch(**{name: variant})


def _time(variant: bytes) -> tuple[bytes, bytes]:
    return _field("time", RAW["time"], b'"' + variant + b'"')


def test_the_base_text_is_accepted() -> None:
    record = {**BASE, "tool": "t", "bytes": 7, "attrs": {"a": 1, "b": [1, "x"], "c": {"d": True}}}
    assert orjson.dumps([record], option=orjson.OPT_SORT_KEYS) == BATCH
    for trusted in (False, True):
        parsed = parse_batch(BATCH, 1, trusted_attrs=trusted)
        assert parsed is not None
        assert parsed.columns.column("attrs").to_pylist() == [RAW["attrs"].decode()]
        twice = parse_batch(b"[" + RECORD + b"," + RECORD + b"]", 2, trusted_attrs=trusted)
        assert twice is not None
        assert twice.columns.num_rows == 2


def test_canonical_escapes_are_accepted_and_undone() -> None:
    parsed = parse_batch(batch(tool=b'"\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f/\xc3\xa9"'), 1)
    assert parsed is not None
    assert parsed.columns.column("tool").to_pylist() == ['"\\\b\f\n\r\t\x01\x1f\x7f/é']
    parsed = parse_batch(batch(intent_scopes=b'["a\\\\n","\\u0002",""]'), 1)
    assert parsed is not None
    assert parsed.columns.column("intent_scopes").to_pylist() == [["a\\n", "\x02", ""]]


# Each case: (canonical text, which the parser accepts; a variant of it, which it must refuse).
NOT_CANONICAL: dict[str, tuple[bytes, bytes]] = {
    # whitespace
    "space after [": (BATCH, b"[ " + RECORD + b"]"),
    "space before ]": (BATCH, b"[" + RECORD + b" ]"),
    "newline after ]": (BATCH, BATCH + b"\n"),
    "space after {": (BATCH, b"[{ " + RECORD[1:] + b"]"),
    "space after colon": (BATCH, _swap(b'"tool":"t"', b'"tool": "t"')),
    "space before colon": (BATCH, _swap(b'"tool":"t"', b'"tool" :"t"')),
    "space after comma": (BATCH, _swap(b',"tool"', b', "tool"')),
    "space in attrs": _attrs(b'{"a":1,', b'{"a": 1,'),
    "tab in attrs": _attrs(b'{"a":1,', b'{"a":1,\t'),
    "newline in attrs": _attrs(b"[1,", b"[1,\n"),
    "BOM": (BATCH, b"\xef\xbb\xbf" + BATCH),
    # member order and repeats
    "unsorted keys": (
        BATCH,
        _swap(
            b'"action":"secret.read","agent_id":"agent-7"',
            b'"agent_id":"agent-7","action":"secret.read"',
        ),
    ),
    "duplicate key": (BATCH, _swap(b'"tool":"t"', b'"tool":"t","tool":"t"')),
    "duplicate key differing": (BATCH, _swap(b'"tool":"t"', b'"tool":"t","tool":"u"')),
    "unknown key": (BATCH, _swap(b'"tool":"t"', b'"tool":"t","zzz":"t"')),
    "prefix of a key": (BATCH, _swap(b'"tool":"t"', b'"too":"t"')),
    "escaped key": (BATCH, _swap(b'"tool":"t"', b'"too\\u006c":"t"')),
    "upper-case key": (BATCH, _swap(b'"tool":"t"', b'"Tool":"t"')),
    # escapes RFC 8785 does not write
    "escaped slash": _field("tool", b'"a/b"', b'"a\\/b"'),
    "escaped letter": _field("tool", b'"A"', b'"\\u0041"'),
    "upper-case hex escape": _field("tool", b'"\\u001f"', b'"\\u001F"'),
    "long form of newline": _field("tool", b'"\\n"', b'"\\u000a"'),
    "long form of tab": _field("tool", b'"\\t"', b'"\\u0009"'),
    "long form of backspace": _field("tool", b'"\\b"', b'"\\u0008"'),
    "long form of quote": _field("tool", b'"\\""', b'"\\u0022"'),
    "escaped DEL": _field("tool", b'"\x7f"', b'"\\u007f"'),
    "escaped non-ASCII": _field("tool", b'"\xc3\xa9"', b'"\\u00e9"'),
    "escaped surrogate pair": _field("tool", b'"\xf0\x9f\x98\x80"', b'"\\ud83d\\ude00"'),
    "unknown escape": _field("tool", b'"A"', b'"\\x41"'),
    "escaped single quote": _field("tool", b'"\'"', b'"\\\'"'),
    "truncated escape": _field("tool", b'"\\u0001"', b'"\\u00"'),
    "escaped slash in attrs": _attrs(b'"x"]', b'"\\/"]'),
    "escaped letter in attrs": _attrs(b'"x"]', b'"\\u0078"]'),
    "escaped letter in attrs name": _attrs(b'{"a":1,', b'{"\\u0061":1,'),
    "escaped letter in list": _field("intent_scopes", b'["A"]', b'["\\u0041"]'),
    "escaped letter in event_id": _field("event_id", b'"A"', b'"\\u0041"'),
    # raw control bytes
    "raw newline": _field("tool", b'"a\\nb"', b'"a\nb"'),
    "raw tab": _field("tool", b'"a\\tb"', b'"a\tb"'),
    "raw 0x01": _field("tool", b'"a\\u0001b"', b'"a\x01b"'),
    "raw NUL": _field("tool", b'"ab"', b'"a\x00b"'),
    "raw control in attrs": _attrs(b'"x"]', b'"\x01"]'),
    "raw control in attrs name": _attrs(b'{"a":1,', b'{"\x01":1,'),
    "raw control in list": _field("intent_scopes", b'["\\u001f"]', b'["\x1f"]'),
    # invalid UTF-8
    "invalid byte": _field("tool", b'"t"', b'"\xff"'),
    "lone continuation": _field("tool", b'"t"', b'"\x80"'),
    "truncated sequence": _field("tool", b'"\xc3\xa9"', b'"\xc3"'),
    "truncated 4-byte": _field("tool", b'"\xf0\x9f\x98\x80"', b'"\xf0\x9f\x98"'),
    "overlong 2-byte": _field("tool", b'"/"', b'"\xc0\xaf"'),
    "overlong 2-byte C1": _field("tool", b'"\x7f"', b'"\xc1\xbf"'),
    "overlong 3-byte": _field("tool", b'"/"', b'"\xe0\x80\xaf"'),
    "overlong 4-byte": _field("tool", b'"/"', b'"\xf0\x80\x80\xaf"'),
    "surrogate": _field("tool", b'"\xed\x9f\xbf"', b'"\xed\xa0\x80"'),
    "beyond U+10FFFF": _field("tool", b'"\xf4\x8f\xbf\xbf"', b'"\xf4\x90\x80\x80"'),
    "F5 lead": _field("tool", b'"t"', b'"\xf5\x80\x80\x80"'),
    "invalid UTF-8 in event_id": _field("event_id", b'"evt-1"', b'"evt-\xff"'),
    "invalid UTF-8 in attrs name": _attrs(b'{"a":1,', b'{"\xed\xa0\x80":1,'),
    "invalid UTF-8 in attrs value": _attrs(b'"x"]', b'"\xc0\xaf"]'),
    "invalid UTF-8 in list": _field("intent_scopes", b'["\xc3\xa9"]', b'["\xff"]'),
    # numbers
    "leading zero in attrs": _attrs(b'{"a":1,', b'{"a":01,'),
    "negative zero in attrs": _attrs(b'{"a":1,', b'{"a":-0,'),
    "fraction in attrs": _attrs(b'{"a":1,', b'{"a":1.0,'),
    "exponent in attrs": _attrs(b'{"a":1,', b'{"a":1e3,'),
    "upper-case exponent in attrs": _attrs(b'{"a":1,', b'{"a":1E3,'),
    "plus sign in attrs": _attrs(b'{"a":1,', b'{"a":+1,'),
    "bare minus in attrs": _attrs(b'{"a":1,', b'{"a":-,'),
    "unsafe integer in attrs": (
        batch(attrs=b'{"a":9007199254740991}'),
        batch(attrs=b'{"a":9007199254740992}'),
    ),
    "unsafe negative in attrs": (
        batch(attrs=b'{"a":-9007199254740991}'),
        batch(attrs=b'{"a":-9007199254740992}'),
    ),
    "20-digit integer in attrs": _attrs(b'{"a":1,', b'{"a":18446744073709551616,'),
    "leading zero in bytes": _field("bytes", b"7", b"07"),
    "zero with leading zero in bytes": _field("bytes", b"0", b"00"),
    "negative zero in bytes": _field("bytes", b"0", b"-0"),
    "negative bytes": _field("bytes", b"7", b"-7"),
    "fraction in bytes": _field("bytes", b"7", b"7.0"),
    "exponent in bytes": _field("bytes", b"7", b"7e0"),
    "unsafe bytes": _field("bytes", b"9007199254740991", b"9007199254740992"),
    "20-digit bytes": _field("bytes", b"7", b"18446744073709551617"),
    "bytes as string": _field("bytes", b"7", b'"7"'),
    "bytes as true": _field("bytes", b"7", b"true"),
    "bytes as null": _field("bytes", b"7", b"null"),
    # literals
    "null text field": _field("tool", b'"t"', b"null"),
    "null list field": _field("intent_scopes", b"[]", b"null"),
    "null attrs": _field("attrs", b"{}", b"null"),
    "True": _field("external", b"true", b"True"),
    "truncated true": _field("external", b"true", b"tru"),
    "truex": _field("external", b"true", b"truex"),
    "falsy": _field("external", b"false", b"falsy"),
    "bool as string": _field("external", b"true", b'"true"'),
    "bool as 1": _field("external", b"true", b"1"),
    "Null in attrs": _attrs(b'"d":true', b'"d":Null'),
    "nul in attrs": _attrs(b'"d":true', b'"d":nul'),
    "truex in attrs": _attrs(b'"d":true', b'"d":truex'),
    "fals in attrs": _attrs(b'"d":true', b'"d":fals'),
    # structure
    "trailing comma in attrs object": _attrs(b'"d":true}', b'"d":true,}'),
    "trailing comma in attrs array": _attrs(b'"x"]', b'"x",]'),
    "leading comma in attrs array": _attrs(b'[1,"x"]', b'[,1,"x"]'),
    "double comma in attrs": _attrs(b'{"a":1,', b'{"a":1,,'),
    "missing comma in attrs": _attrs(b'{"a":1,"b"', b'{"a":1"b"'),
    "missing colon in attrs": _attrs(b'{"a":1,', b'{"a"1,'),
    "missing value in attrs": _attrs(b'{"a":1,', b'{"a":,'),
    "trailing comma in record": (BATCH, b"[" + RECORD[:-1] + b",}]"),
    "trailing comma in batch": (BATCH, b"[" + RECORD + b",]"),
    "trailing comma in list": _field("intent_scopes", b'["a"]', b'["a",]'),
    "leading comma in list": _field("intent_scopes", b'["a"]', b'[,"a"]'),
    "missing comma in list": _field("intent_scopes", b'["a","b"]', b'["a""b"]'),
    "number in list": _field("intent_scopes", b'["1"]', b"[1]"),
    "null in list": _field("intent_scopes", b'["a"]', b'["a",null]'),
    "list in list": _field("intent_scopes", b'["a"]', b'[["a"]]'),
    "unclosed list": _field("intent_scopes", b'["a"]', b'["a"'),
    "list as object": _field("intent_scopes", b'["a"]', b'{"a":1}'),
    "attrs missing close": _attrs(b'"d":true}}', b'"d":true}'),
    "attrs extra close": (BATCH, _swap(b'"d":true}}', b'"d":true}}}')),
    "attrs bracket mismatch": _attrs(b'[1,"x"]', b'[1,"x"}'),
    "attrs brace mismatch": _attrs(b'"d":true}}', b'"d":true]}'),
    "attrs an array": _field("attrs", b"{}", b"[1]"),
    "attrs a string": _field("attrs", b"{}", b'"x"'),
    "attrs a number": _field("attrs", b"{}", b"1"),
    "attrs names unsorted": _attrs(b'{"a":1,"b":', b'{"b":1,"a":'),
    "attrs names duplicated": _attrs(b'{"a":1,"b":', b'{"a":1,"a":'),
    "attrs nested names unsorted": _attrs(b'{"d":true}', b'{"d":true,"c":1}'),
    "attrs nested names duplicated": _attrs(b'{"d":true}', b'{"d":true,"d":true}'),
    "attrs name prefix after longer": _attrs(b'{"d":true}', b'{"dd":1,"d":true}'),
    # U+FFFF then U+10000: code point order (orjson's), not RFC 8785's UTF-16 order.
    "attrs names in code point order": (
        batch(attrs=b'{"\xf0\x90\x80\x80":1}'),
        batch(attrs=b'{"\xef\xbf\xbf":1,"\xf0\x90\x80\x80":2}'),
    ),
    "attrs object in array unsorted": _attrs(b'[1,"x"]', b'[{"b":1,"a":2}]'),
    "attrs nested 65 deep": (
        batch(attrs=b'{"a":' + b"[" * 64 + b"]" * 64 + b"}"),
        batch(attrs=b'{"a":' + b"[" * 65 + b"]" * 65 + b"}"),
    ),
    "attrs over 64 KiB": (
        batch(attrs=b'{"k":"' + b"a" * ATTRS_PAD + b'"}'),
        batch(attrs=b'{"k":"' + b"a" * (ATTRS_PAD + 1) + b'"}'),
    ),
    "unterminated string": (BATCH, b'[{"action":"secret.read'),
    "unterminated record": (BATCH, BATCH[:-2]),
    "unterminated batch": (BATCH, BATCH[:-1]),
    "text after ]": (BATCH, BATCH + b"x"),
    "second array": (BATCH, BATCH + b"[]"),
    "record not an object": (BATCH, b"[1]"),
    "record a string": (BATCH, b'["x"]'),
    "record null": (BATCH, b"[null]"),
    "record an array": (BATCH, b"[[" + RECORD + b"]]"),
    "empty record": (BATCH, b"[{}]"),
    "not an array": (BATCH, RECORD),
    "empty text": (BATCH, b""),
    "just [": (BATCH, b"["),
    # required members
    **{f"missing {name}": (BATCH, batch(**{name: None})) for name in REQUIRED},
    "empty event_id": _field("event_id", b'"e"', b'""'),
    "empty agent_id": _field("agent_id", b'"a"', b'""'),
    "empty action": _field("action", b'"a"', b'""'),
    "empty category": _field("category", b'"tool"', b'""'),
    # values the fast path must see in canonical form
    "upper-case hex": _field("trace_id", b'"' + b"0a" * 16 + b'"', b'"' + b"0A" * 16 + b'"'),
    "short hex": _field("span_id", b'"' + b"0" * 16 + b'"', b'"' + b"0" * 15 + b'"'),
    "non-hex": _field("span_id", b'"' + b"f" * 16 + b'"', b'"' + b"g" * 16 + b'"'),
    "enum upper-case": _field("category", b'"tool"', b'"Tool"'),
    "enum prefix": _field("category", b'"tool"', b'"too"'),
    "enum of another field": _field("category", b'"tool"', b'"public"'),
    "enum escaped": _field("category", b'"secret"', b'"secr\\u0065t"'),
    "action escaped": _field("action", b'"a.b"', b'"a\\u002eb"'),
    "action a..b": _field("action", b'"a.b"', b'"a..b"'),
    "action .a": _field("action", b'"a"', b'".a"'),
    "action a.": _field("action", b'"a"', b'"a."'),
    "action non-ASCII": _field("action", b'"e.b"', b'"\xc3\xa9.b"'),
    "event_id with DEL": _field("event_id", b'"evt-"', b'"evt-\x7f"'),
    "event_id with escaped control": _field("event_id", b'"evt-"', b'"evt-\\n"'),
    "event_id with escaped NUL": _field("event_id", b'"evt-"', b'"evt-\\u0000"'),
    "event_id 129 characters": _field(
        "event_id", b'"' + "é".encode() * 128 + b'"', b'"' + "é".encode() * 129 + b'"'
    ),
    "event_id 129 escaped characters": _field(
        "event_id", b'"' + b'\\"' * 128 + b'"', b'"' + b'\\"' * 129 + b'"'
    ),
    "text with escaped NUL": _field("tool", b'"\\u0001"', b'"\\u0000"'),
    "text over 65536 characters": _field(
        "tool",
        b'"' + "\U0001f600".encode() * MAX_TEXT + b'"',
        b'"' + "\U0001f600".encode() * (MAX_TEXT + 1) + b'"',
    ),
    "text over 65536 escaped characters": _field(
        "tool", b'"' + b"\\n" * MAX_TEXT + b'"', b'"' + b"\\n" * (MAX_TEXT + 1) + b'"'
    ),
    "list with escaped NUL": _field("intent_scopes", b'["\\u0001"]', b'["\\u0000"]'),
    "list of 1025 items": _field(
        "intent_scopes",
        b"[" + b",".join([b'"x"'] * MAX_ITEMS) + b"]",
        b"[" + b",".join([b'"x"'] * (MAX_ITEMS + 1)) + b"]",
    ),
    "time without fraction": _time(b"2026-01-31T12:00:00Z"),
    "time lower-case z": _time(NOW.lower().encode()),
    "time lower-case t": _time(NOW.replace("T", "t").encode()),
    "time space separator": _time(NOW.replace("T", " ").encode()),
    "time with offset": _time(b"2026-01-31T12:00:00.000000+00:00"),
    "time with 9 digits": _time(b"2026-01-31T12:00:00.000000000Z"),
    "time escaped": _time(NOW.replace("T", "\\u0054").encode()),
    "time Feb 29 non-leap": _time(b"2026-02-29T12:00:00.000000Z"),
    "time Feb 29 1900": _time(b"1900-02-29T12:00:00.000000Z"),
    "time Feb 30 2000": _time(b"2000-02-30T12:00:00.000000Z"),
    "time Apr 31": _time(b"2026-04-31T12:00:00.000000Z"),
    "time month 13": _time(b"2026-13-01T12:00:00.000000Z"),
    "time month 0": _time(b"2026-00-01T12:00:00.000000Z"),
    "time day 0": _time(b"2026-01-00T12:00:00.000000Z"),
    "time year 0": _time(b"0000-01-31T12:00:00.000000Z"),
    "time hour 24": _time(b"2026-01-31T24:00:00.000000Z"),
    "time minute 60": _time(b"2026-01-31T12:60:00.000000Z"),
    "time second 60": _time(b"2026-01-31T12:00:60.000000Z"),
    "time full-width digit": _time("2026-01-31T12:00:00.00000０Z".encode()),
    "time Arabic-Indic digit": _time("٢026-01-31T12:00:00.000000Z".encode()),
    "time sign in digits": _time(b"2026-01-31T12:00:-1.000000Z"),
    "time space in digits": _time(b"2026-01-31T12:00: 1.000000Z"),
    "time as number": _field("time", RAW["time"], b"1769860800"),
}
# The leap days that exist are accepted (the canonical side of a few cases above).
LEAP_DAYS = ("2000-02-29T12:00:00.000000Z", "2024-02-29T00:00:00.000000Z")


@pytest.mark.parametrize(("canonical", "variant"), NOT_CANONICAL.values(), ids=NOT_CANONICAL.keys())
def test_not_canonical_text_is_refused(canonical: bytes, variant: bytes) -> None:
    assert parse_batch(canonical, 1) is not None, "the canonical side of the case must parse"
    assert parse_batch(variant, 1) is None


@pytest.mark.parametrize("leap_day", LEAP_DAYS)
def test_leap_days_are_accepted(leap_day: str) -> None:
    parsed = parse_batch(batch(time=b'"' + leap_day.encode() + b'"'), 1)
    assert parsed is not None
    assert parsed.columns.column("time").to_pylist() == [
        datetime.fromisoformat(leap_day.replace("Z", "+00:00"))
    ]


@pytest.mark.parametrize(
    "name",
    [
        "space in attrs",
        "newline in attrs",
        "trailing comma in attrs object",
        "trailing comma in attrs array",
        "double comma in attrs",
        "missing value in attrs",
        "attrs missing close",
        "attrs extra close",
        "attrs bracket mismatch",
        "attrs nested 65 deep",
        "attrs over 64 KiB",
        "invalid UTF-8 in attrs value",
        "raw control in attrs",
        "bare minus in attrs",
        "Null in attrs",
        "truex in attrs",
        "attrs an array",
        "text after ]",
    ],
)
def test_trusted_attrs_still_checks_grammar(name: str) -> None:
    canonical, variant = NOT_CANONICAL[name]
    assert parse_batch(canonical, 1, trusted_attrs=True) is not None
    assert parse_batch(variant, 1, trusted_attrs=True) is None


@pytest.mark.parametrize("number", [b"1.5e+300", b"-0.5", b"1e-7", b"9007199254740993", b"0"])
def test_trusted_attrs_accepts_any_json_number(number: bytes) -> None:
    assert parse_batch(batch(attrs=b'{"a":' + number + b"}"), 1, trusted_attrs=True) is not None


@pytest.mark.parametrize("number", [b"1.", b"1e", b"1e+", b"1-2", b"1ee", b"1.2.3", b"01", b"-01"])
def test_trusted_attrs_checks_number_grammar(number: bytes) -> None:
    """``trusted_attrs`` skips the canonical checks, not the grammar (parse_batch's docstring)."""
    assert parse_batch(batch(attrs=b'{"a":' + number + b"}"), 1, trusted_attrs=True) is None


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        (BATCH, 0),
        (BATCH, 2),
        (b"[" + RECORD + b"," + RECORD + b"]", 1),
        (b"[" + RECORD + b"," + RECORD + b"," + RECORD + b"]", 2),
        (b"[]", 1),
        (b"[ ]", 0),
        (b"[]\n", 0),
        (b"", 0),
        (b"[", 0),
        (b"{}", 0),
    ],
)
def test_row_count_must_match(text: bytes, rows: int) -> None:
    assert parse_batch(text, rows) is None


def test_empty_batch() -> None:
    parsed = parse_batch(b"[]", 0)
    assert isinstance(parsed, ParsedBatch)
    assert parsed.columns.num_rows == 0
    assert parsed.columns.column_names == [f.name for f in CLIENT_FIELDS]
    assert parsed.columns.equals(normalise([]).columns)
    assert check_batch([]).columns.num_rows == 0


def test_a_refusal_does_not_poison_the_next_parse() -> None:
    """The parse keeps per-call state (item buffers, escape flags): a refusal leaves none."""
    assert parse_batch(batch(intent_scopes=b'["a\\n","\xff"]'), 1) is None
    parsed = parse_batch(batch(intent_scopes=b'["a\\\\n"]'), 1)
    assert parsed is not None
    assert parsed.columns.column("intent_scopes").to_pylist() == [["a\\n"]]


def canonical_batch_text(records: list[Any]) -> bytes:
    """The RFC 8785 text of a batch of valid records, from the reference serialiser."""
    parts = []
    for event in validate_batch(records):
        plain = dict(event)
        if "attrs" in plain:
            plain["attrs"] = json.loads(plain["attrs"], parse_int=_json_int)
        parts.append(bytes(rfc8785.dumps(plain)))
    return b"[" + b",".join(parts) + b"]"


SEEDS = (
    BATCH,
    b"[" + RECORD + b"," + RECORD + b"]",
    orjson.dumps([FULL], option=orjson.OPT_SORT_KEYS),
    batch(tool=b'"\\"\\\\\\n\\u0001\x7f\xc3\xa9\xf0\x9f\x98\x80"', intent_scopes=b'["a","\\t"]'),
)
FUZZ_BYTES = (
    b' \t\n",:{}[]\\/0123456789-+.eEaftnrul'
    b"\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xa9\xe0\xed\xee\xef\xf0\xf4\xff"
)


@st.composite
def mutated_texts(draw: st.DrawFn) -> bytes:
    text = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "replace", "copy"]))
        piece = bytes(draw(st.lists(st.sampled_from(FUZZ_BYTES), min_size=1, max_size=3)))
        if how == "insert":
            text[at:at] = piece
        elif how == "delete":
            del text[at : at + draw(st.integers(1, 4))]
        elif how == "replace":
            text[at : at + len(piece)] = piece
        else:  # a slice of the text repeated or moved: members, escapes, UTF-8 sequences
            start = draw(st.integers(0, len(text)))
            text[at:at] = text[start : start + draw(st.integers(1, 40))]
    return bytes(text)


@PROPERTY
@given(mutated_texts())
def test_mutated_text_is_accepted_only_when_canonical(text: bytes) -> None:
    """Whatever bytes the parser accepts are a valid batch's RFC 8785 text, and nothing else."""
    rows = text.count(b'{"action"')  # the records' first member (the seeds' attrs have none)
    parsed = parse_batch(text, rows)
    if parsed is None:
        return
    records = orjson.loads(text)  # accepted text is JSON ...
    assert isinstance(records, list) and len(records) == rows
    assert canonical_batch_text(records) == text  # ... of valid records, in canonical form
    assert parsed.columns.equals(normalise(records).columns)


# -- 6. lists larger than the parser's first guess -------------------------------------------


@pytest.mark.parametrize("rows", [1, 3, 20])
def test_many_list_items(rows: int) -> None:
    records: list[dict[str, Any]] = []
    for r in range(rows):
        scopes = [f"scope-{r}-{i}" for i in range(1000)]
        scopes[r % 1000] = f'esc"\\\n{r}'  # an escape in one item of each row
        records.append(
            {
                **FULL,
                "event_id": f"e-{r}",
                "credential_scopes": scopes,
                "intent_scopes": ["x"] * (MAX_ITEMS - r % 2),
            }
        )
    records.append({**BASE, "event_id": "no-lists"})  # a row without lists between others
    records.append({**FULL, "event_id": "last", "credential_scopes": [], "intent_scopes": ["y"]})
    text = dumps(records)
    assert text is not None
    parsed = parse_batch(text, len(records))
    assert parsed is not None
    events = validate_batch(records)
    assert parsed.columns.to_pydict() == expected_columns(events)
    assert parsed.columns.equals(normalise(records).columns)
    assert (
        parsed.columns.column("credential_scopes").to_pylist()[0] == records[0]["credential_scopes"]
    )
    assert_chain(check_batch(records), events, [0, rows, rows + 1], "w", 0, 0, bytes(32))


def test_list_items_over_the_limit_after_growing() -> None:
    """The item buffer grows, and the 1024-item limit still holds per list."""
    records = [{**FULL, "event_id": f"e-{i}", "credential_scopes": ["a"] * 1000} for i in range(2)]
    records.append({**FULL, "event_id": "big", "credential_scopes": ["a"] * (MAX_ITEMS + 1)})
    text = dumps(records)
    assert text is not None
    assert parse_batch(text, len(records)) is None
    with pytest.raises(ValidationError) as raised:
        check_batch(records)
    assert [(p.index, p.field) for p in raised.value.problems] == [(2, "credential_scopes")]


# -- regressions: minimal reproducers of disagreements found -------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"action": "a" * (MAX_TEXT + 1)}, id="action-longer-than-text-limit"),
        pytest.param({"attrs": nested_objects(65, 1)}, id="attrs-scalar-65-deep"),
        pytest.param({"attrs": {"k": nested_lists(64, "s")}}, id="attrs-string-65-deep"),
    ],
)
def test_fast_path_never_accepts_what_the_validator_rejects(fields: dict[str, Any]) -> None:
    records = [{**BASE, **fields}]
    with pytest.raises(ValidationError):
        validate_batch(records)
    text = dumps(records)
    assert text is not None
    assert parse_batch(text, 1) is None
    with pytest.raises(ValidationError):
        check_batch(records)
