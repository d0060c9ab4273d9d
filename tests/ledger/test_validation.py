"""Validation of client events (DESIGN.md §2, ledger/events.py), table-driven, on a real ledger.

Every rule gets a rejected batch through ``Ledger.append``: the ``ValidationError`` names the
record index and field with a clear reason, nothing on disk changes (every file is hashed before
and after), and the next valid append continues the writer log's seq. A differential property
test then holds the vectorised fast path (``ledger.batch.check_batch``) to the per-record
validator, which is the definition.
"""

from __future__ import annotations

import enum
import hashlib
import math
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from design_schema import (
    BOOL_FIELDS,
    ENUMS,
    HEX_FIELDS,
    LIST_FIELDS,
    OPTIONAL_TEXT_FIELDS,
    REQUIRED,
    TIME_FIELDS,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import FULL_EVENT as FULL
from ledger_helpers import VALID_EVENT as VALID
from ledger_helpers import expected_columns, outcome

from ledger import Ledger, Problem, ValidationError
from ledger.batch import check_batch, normalise
from ledger.events import validate_batch, validate_event
from ledger.rebuild import canonical_texts
from ledger.schema import CLIENT_FIELDS
from ledger.writer import _assigned

# -- the schema of DESIGN.md §2, written out independently of ledger/schema.py ---------------

TEXT_FIELDS = ("agent_id", *OPTIONAL_TEXT_FIELDS)  # agent_id is the required one
ASSIGNED = ("writer_id", "seq", "observed_time", "prev_hash", "leaf_hash", "hash")


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels below attrs: {"a": {"a": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _sha256_tree(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``, files with the SHA-256 of their bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


@dataclass
class Live:
    """A real ledger with events in both a Parquet segment and the WAL."""

    ledger: Ledger
    root: Path

    def next_seq(self) -> int:
        return self.ledger.writer.next_seq

    def valid(self, n: int = 1) -> list[dict[str, Any]]:
        start = self.next_seq()
        return [{**FULL, "event_id": f"ok-{start + i}"} for i in range(n)]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ledger holding events both in a Parquet segment and in its WAL, kept open."""
    root = tmp_path_factory.mktemp("template") / "ledger"
    ledger = Ledger.init(root)
    ledger.append([{**FULL, "event_id": f"seed-{i}"} for i in range(3)])
    ledger.flush()
    ledger.append([{**FULL, "event_id": f"wal-{i}"} for i in range(2)])
    yield root
    ledger.close()


@pytest.fixture
def live(template: Path, tmp_path: Path) -> Iterator[Live]:
    """A private copy of the template, with its writer log taken (recovered from the WAL)."""
    root = tmp_path / "ledger"
    shutil.copytree(template, root)
    ledger = Ledger.open(root)
    state = Live(ledger, root)
    assert state.next_seq() == 5
    assert len(ledger.segment_files()) == 1
    yield state
    ledger.close()


Expected = tuple[int, str, str]  # record index, field ("" for the record), fragment of the reason


def assert_rejected(
    live: Live,
    records: list[Any],
    expected: list[Expected],
    locations: list[str] | None = None,
) -> ValidationError:
    """Append must fail naming exactly ``expected``; disk unchanged; the log still appends."""
    before = _sha256_tree(live.root)
    seq = live.next_seq()
    with pytest.raises(ValidationError) as raised:
        live.ledger.append(records, locations)
    error = raised.value
    assert _sha256_tree(live.root) == before, "a rejected batch changed the ledger on disk"
    assert live.next_seq() == seq
    assert error.status == 400
    message = str(error)
    assert message.startswith("batch rejected, nothing stored: ")
    for shown, (index, field, fragment) in enumerate(expected):
        matching = [p for p in error.problems if p.index == index and p.field == field]
        assert matching, f"no problem for record {index} field {field!r} in {error.problems}"
        assert any(fragment in p.reason for p in matching), (fragment, matching)
        where = locations[index] if locations else f"record {index}"
        target = f"field '{field}'" if field else "record"
        if shown < ValidationError.max_listed:
            assert f"{where}: {target}: " in message
    assert {(p.index, p.field) for p in error.problems} == {(i, f) for i, f, _ in expected}
    receipts = live.ledger.append([{**FULL, "event_id": f"after-{seq}"}])
    assert [r.seq for r in receipts] == [seq]
    assert receipts.appended == 1
    return error


def reject_one(live: Live, field: str, value: Any, fragment: str) -> ValidationError:
    """A single record: FULL with ``field`` set to ``value`` (or removed, for ``MISSING``)."""
    record = {**FULL, "event_id": "bad-1"}
    if value is MISSING:
        del record[field]
    else:
        record[field] = value
    return assert_rejected(live, [record], [(0, field, fragment)])


MISSING = object()


def _stored_rows(ledger: Ledger) -> list[dict[str, Any]]:
    ledger.flush()
    tables = [pq.read_table(s.path) for s in ledger.segment_files()]
    rows: list[dict[str, Any]] = pa.concat_tables(tables).to_pylist()
    return rows


# -- unknown, ledger-assigned, required ------------------------------------------------------


@pytest.mark.parametrize("name", ["colour", "Event_ID", "attrs.model", "eventId", "time "])
def test_unknown_field(live: Live, name: str) -> None:
    error = reject_one(live, name, "red", "unknown field (put extra data under 'attrs')")
    assert "attrs" in str(error)


@pytest.mark.parametrize("name", ASSIGNED)
def test_ledger_assigned_field(live: Live, name: str) -> None:
    reject_one(live, name, "x", "is assigned by the ledger and must not be supplied")


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("how", ["missing", "null"])
def test_required_field_missing_or_null(live: Live, name: str, how: str) -> None:
    reject_one(live, name, MISSING if how == "missing" else None, "required field is missing")


def test_every_problem_of_one_record_is_listed(live: Live) -> None:
    record = {"colour": "red", "seq": 3, "category": "nope", "bytes": -1, "attrs": []}
    assert_rejected(
        live,
        [record],
        [
            (0, "colour", "unknown field"),
            (0, "seq", "assigned by the ledger"),
            (0, "category", "is not one of"),
            (0, "bytes", "must be between 0 and 2^53-1"),
            (0, "attrs", "expected a JSON object, got an array"),
            (0, "event_id", "required field is missing"),
            (0, "time", "required field is missing"),
            (0, "agent_id", "required field is missing"),
            (0, "action", "required field is missing"),
        ],
    )


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        ("evt", "a string"),
        (5, "a number"),
        (None, "null"),
        (["a", "b"], "an array"),
        (True, "a boolean"),
        (b"{}", "bytes"),
    ],
)
def test_record_not_an_object(live: Live, record: object, shown: str) -> None:
    error = assert_rejected(live, [FULL, record], [(1, "", f"expected a JSON object, got {shown}")])
    assert "record 1: record: expected a JSON object" in str(error)


def test_explicit_null_is_absent_for_optional_fields(live: Live) -> None:
    record = {**VALID, "event_id": "nulls", **{name: None for name in FULL if name not in VALID}}
    seq = live.next_seq()
    assert live.ledger.append([record])[0].seq == seq
    [row] = [r for r in _stored_rows(live.ledger) if r["event_id"] == "nulls"]
    assert all(row[name] is None for name in FULL if name not in VALID)


# -- wrong types, field by field and kind by kind --------------------------------------------

# One wrong-typed value for every client field: each field is validated, not only some.
WRONG_TYPE_PER_FIELD = [
    *[(name, 7, "expected a string, got a number") for name in TEXT_FIELDS],
    ("event_id", 7, "expected a string, got a number"),
    ("action", 7, "expected a string, got a number"),
    *[(name, 7, "expected a string, got a number") for name in HEX_FIELDS],
    *[(name, 7, "expected a list of strings, got a number") for name in LIST_FIELDS],
    *[(name, "yes", "expected true or false, got a string") for name in BOOL_FIELDS],
    *[(name, 7, "a number is not one of") for name in ENUMS],
    *[(name, 7, "expected an RFC 3339 timestamp string, got int") for name in TIME_FIELDS],
    ("bytes", "7", "expected an integer, got a string"),
    ("attrs", "x", "expected a JSON object, got a string"),
]


def test_wrong_type_table_covers_every_field() -> None:
    assert {f for f, _, _ in WRONG_TYPE_PER_FIELD} == {f.name for f in CLIENT_FIELDS}


@pytest.mark.parametrize(("field", "value", "fragment"), WRONG_TYPE_PER_FIELD)
def test_wrong_type_for_every_field(live: Live, field: str, value: Any, fragment: str) -> None:
    reject_one(live, field, value, fragment)


# Every wrong JSON type for one representative field of each kind.
WRONG_TYPES_PER_KIND = [
    # string given number / bool / object / list / bytes
    ("tool", 1, "expected a string, got a number"),
    ("tool", 1.5, "expected a string, got a number"),
    ("tool", True, "expected a string, got a boolean"),
    ("tool", {"a": 1}, "expected a string, got an object"),
    ("tool", ["a"], "expected a string, got an array"),
    ("tool", b"vault", "expected a string, got bytes"),
    ("agent_id", b"agent", "expected a string, got bytes"),
    ("event_id", False, "expected a string, got a boolean"),
    ("action", ["secret.read"], "expected a string, got an array"),
    ("trace_id", {"hex": "00"}, "expected a string, got an object"),
    # bool given 0 / 1 / "true"
    ("external", 0, "expected true or false, got a number"),
    ("external", 1, "expected true or false, got a number"),
    ("privileged", "true", "expected true or false, got a string"),
    ("privileged", "false", "expected true or false, got a string"),
    ("external", [True], "expected true or false, got an array"),
    # int given 1.5 / True / "1" / -1 / 2**53
    ("bytes", 1.5, "expected an integer, got a number"),
    ("bytes", 1.0, "expected an integer, got a number"),
    ("bytes", math.nan, "expected an integer, got a number"),
    ("bytes", True, "expected an integer, got a boolean"),
    ("bytes", "1", "expected an integer, got a string"),
    ("bytes", -1, "must be between 0 and 2^53-1, got -1"),
    ("bytes", 2**53, "must be between 0 and 2^53-1, got 9007199254740992"),
    ("bytes", 2**64, "must be between 0 and 2^53-1"),
    ("bytes", -(2**70), "must be between 0 and 2^53-1"),
    # list given "ab" / [1]
    ("credential_scopes", "ab", "expected a list of strings, got a string"),
    ("credential_scopes", [1], "item 0: expected a string, got a number"),
    ("intent_scopes", ["a", ["b"]], "item 1: expected a string, got an array"),
    ("intent_scopes", {"a": "b"}, "expected a list of strings, got an object"),
    ("intent_scopes", True, "expected a list of strings, got a boolean"),
    # enum given a non-string
    ("category", True, "a boolean is not one of"),
    ("outcome", 0, "a number is not one of"),
    # time given a non-string
    ("time", 1_700_000_000, "expected an RFC 3339 timestamp string, got int"),
    ("time", 1.7e9, "expected an RFC 3339 timestamp string, got float"),
    ("credential_expires_at", ["2026-01-31T12:00:00Z"], "expected an RFC 3339 timestamp string"),
    # attrs given a non-object
    ("attrs", ["a"], "expected a JSON object, got an array"),
    ("attrs", 5, "expected a JSON object, got a number"),
    ("attrs", '{"a": 1}', "expected a JSON object, got a string"),
]


@pytest.mark.parametrize(("field", "value", "fragment"), WRONG_TYPES_PER_KIND)
def test_wrong_types_per_kind(live: Live, field: str, value: Any, fragment: str) -> None:
    reject_one(live, field, value, fragment)


# -- enums, identifiers, actions, hex ids ----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("category", "Secret"),
        ("category", "secrets"),
        ("category", ""),
        ("category", " secret"),
        ("sensitivity", "top-secret"),
        ("input_trust", "unknown"),
        ("outcome", "ok"),
        ("outcome", "SUCCESS"),
    ],
)
def test_bad_enum_lists_allowed_values(live: Live, field: str, value: str) -> None:
    allowed = ", ".join(ENUMS[field])
    error = reject_one(live, field, value, f"{value!r} is not one of: {allowed}")
    assert allowed in str(error)


@pytest.mark.parametrize("field", list(ENUMS))
def test_every_enum_value_is_accepted(live: Live, field: str) -> None:
    records = [{**FULL, "event_id": f"{field}-{v}", field: v} for v in ENUMS[field]]
    seq = live.next_seq()
    receipts = live.ledger.append(records)
    assert [r.seq for r in receipts] == list(range(seq, seq + len(records)))


@pytest.mark.parametrize(("field", "value"), [("category", ["secret"]), ("outcome", {})])
def test_enum_given_list_or_object(live: Live, field: str, value: Any) -> None:
    reject_one(live, field, value, "is not one of")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "must not be empty"),
        ("x" * 129, "longer than 128 characters"),
        ("é" * 129, "longer than 128 characters"),
        ("evt\x01", "contains a control character"),
        ("evt\n1", "contains a control character"),
        ("evt\x1f", "contains a control character"),
        ("evt\x7f", "contains a control character"),
        ("evt\x00", "contains a NUL character"),
        ("evt\ud800", "unpaired surrogate"),
    ],
)
def test_bad_event_id(live: Live, value: str, fragment: str) -> None:
    reject_one(live, "event_id", value, fragment)


def test_event_id_limits_accepted(live: Live) -> None:
    records = [
        {**FULL, "event_id": "x" * 128},
        {**FULL, "event_id": "\U0001f600" * 128},
        {**FULL, "event_id": "0190c5a0-7b1e-7c3d-8e4f-123456789abc"},
    ]
    assert live.ledger.append(records).appended == 3


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a b", "not a dotted verb such as 'secret.read': 'a b'"),
        ("", "must not be empty"),
        (".read", "not a dotted verb"),
        ("secret.", "not a dotted verb"),
        ("secret..read", "not a dotted verb"),
        ("secret/read", "not a dotted verb"),
        ("secret.read\n", "not a dotted verb"),
        ("sécret.read", "not a dotted verb"),
        ("secret:read", "not a dotted verb"),
    ],
)
def test_bad_action(live: Live, value: str, fragment: str) -> None:
    reject_one(live, "action", value, fragment)


def test_good_actions_accepted(live: Live) -> None:
    actions = ["secret.read", "a", "Job.Trigger", "x-y_z.9", "agent.delegate.v2"]
    records = [{**FULL, "event_id": f"a-{i}", "action": a} for i, a in enumerate(actions)]
    assert live.ledger.append(records).appended == len(actions)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_id", "0af7651916cd43dd8448eb211c80319"),  # 31
        ("trace_id", "0af7651916cd43dd8448eb211c80319c0"),  # 33
        ("trace_id", "g" * 32),
        ("trace_id", "0x" + "0" * 30),
        ("trace_id", ""),
        ("trace_id", " " + "0" * 31),
        ("span_id", "b7ad6b716920333"),  # 15
        ("span_id", "b7ad6b71692033310"),  # 17
        ("span_id", "b7ad6b71-9203331"),
        ("parent_span_id", "zzzzzzzzzzzzzzzz"),
        ("parent_span_id", "00f067aa0ba902b"),
        ("parent_span_id", "٠" * 16),  # Arabic-Indic zeros are digits, not hex
    ],
)
def test_bad_hex_ids(live: Live, field: str, value: str) -> None:
    reject_one(live, field, value, f"expected {HEX_FIELDS[field]} hex digits")


def test_upper_case_hex_ids_are_accepted_and_lower_cased(live: Live) -> None:
    record = {
        **FULL,
        "event_id": "upper",
        "trace_id": "0AF7651916CD43DD8448EB211C80319C",
        "span_id": "B7AD6B7169203331",
        "parent_span_id": "00F067aa0BA902b7",
    }
    assert live.ledger.append([record]).appended == 1
    [row] = [r for r in _stored_rows(live.ledger) if r["event_id"] == "upper"]
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert row["span_id"] == "b7ad6b7169203331"
    assert row["parent_span_id"] == "00f067aa0ba902b7"
    assert live.ledger.verify().ok


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2026-01-31T12:00:00", "not an RFC 3339 timestamp with a UTC offset"),
        ("2026-13-01T00:00:00Z", "not a valid date and time"),
        ("2026-02-30T00:00:00Z", "not a valid date and time"),
        ("2026-02-30T00:00:00.000000Z", "not a valid date and time"),
        ("2016-12-31T23:59:60Z", "not a valid date and time"),
        ("2016-12-31T23:59:60.000000Z", "not a valid date and time"),
        ("2026-01-31T24:00:00Z", "not a valid date and time"),
        ("2026-01-31T24:00:00.000000Z", "not a valid date and time"),
        ("0000-01-01T00:00:00Z", "not a valid date and time"),
        ("yesterday", "not an RFC 3339 timestamp"),
        ("", "not an RFC 3339 timestamp"),
        ("2026-01-31T12:00:00+24:00", "invalid UTC offset"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        (datetime(2026, 1, 31, 12), "datetime has no timezone"),
    ],
)
def test_bad_timestamps(live: Live, field: str, value: object, fragment: str) -> None:
    reject_one(live, field, value, fragment)


def test_year_zero_in_canonical_form_is_rejected(live: Live) -> None:
    reject_one(live, "time", "0000-01-01T00:00:00.000000Z", "not a valid date and time")


def test_fullwidth_digits_in_time_are_rejected(live: Live) -> None:
    reject_one(live, "time", "２０２６-01-31T12:00:00.000000Z", "not an RFC 3339 timestamp")


def test_timestamps_are_normalised_to_canonical_utc(live: Live) -> None:
    forms = {
        "offset": "2026-01-01T05:29:59.123456789+05:30",
        "lower": "2025-12-31t23:59:59.123456z",
        "datetime": datetime(
            2025, 12, 31, 22, 59, 59, 123456, tzinfo=timezone(-timedelta(hours=1))
        ),
        "utc": datetime(2025, 12, 31, 23, 59, 59, 123456, tzinfo=UTC),
    }
    records = [
        {**FULL, "event_id": f"ts-{k}", "time": v, "credential_expires_at": v}
        for k, v in forms.items()
    ]
    assert live.ledger.append(records).appended == len(forms)
    want = datetime(2025, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)
    rows = [r for r in _stored_rows(live.ledger) if r["event_id"].startswith("ts-")]
    assert len(rows) == len(forms)
    assert all(r["time"] == want and r["credential_expires_at"] == want for r in rows)


# -- text, lists, attrs ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["agent_id", "tool", "error", "intent"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a\x00b", "contains a NUL character"),
        ("x" * (64 * 1024 + 1), "longer than 65536 characters"),
        ("ok\ud800", "invalid UTF-8 (unpaired surrogate at 2)"),
        ("\udfff", "invalid UTF-8 (unpaired surrogate at 0)"),
    ],
)
def test_bad_text(live: Live, field: str, value: str, fragment: str) -> None:
    reject_one(live, field, value, fragment)


def test_empty_required_text(live: Live) -> None:
    reject_one(live, "agent_id", "", "must not be empty")


def test_text_limits_accepted(live: Live) -> None:
    record = {
        **FULL,
        "event_id": "text-limits",
        "agent_id": "\U0001f600" * (64 * 1024),  # 64 Ki characters (256 KiB of UTF-8)
        "tool": "",  # optional text may be empty
        "error": "tab\tnewline\n\x1f\x7f\u2028 control characters are allowed in free text",
    }
    assert live.ledger.append([record]).appended == 1


@pytest.mark.parametrize("field", LIST_FIELDS)
def test_list_item_null(live: Live, field: str) -> None:
    try:
        reject_one(live, field, ["a", None], "item 1: expected a string, got null")
    finally:
        live.ledger.flush()
        assert live.ledger.verify().ok  # whatever happened, the ledger must still verify


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (["s"] * 1025, "more than 1024 items"),
        (["ok", "a\x00"], "item 1: contains a NUL character"),
        (["x" * (64 * 1024 + 1)], "item 0: longer than 65536 characters"),
        (["\ud800"], "item 0: invalid UTF-8"),
    ],
)
@pytest.mark.parametrize("field", LIST_FIELDS)
def test_bad_lists(live: Live, field: str, value: list[Any], fragment: str) -> None:
    reject_one(live, field, value, fragment)


def test_list_limits_accepted(live: Live) -> None:
    records = [
        {**FULL, "event_id": "l-1024", "credential_scopes": [f"s{i}" for i in range(1024)]},
        {**FULL, "event_id": "l-empty", "intent_scopes": []},
        {**FULL, "event_id": "l-tuple", "intent_scopes": ("a", "b")},
    ]
    assert live.ledger.append(records).appended == 3
    rows = {r["event_id"]: r for r in _stored_rows(live.ledger)}
    assert len(rows["l-1024"]["credential_scopes"]) == 1024
    assert rows["l-empty"]["intent_scopes"] == []
    assert rows["l-tuple"]["intent_scopes"] == ["a", "b"]


ATTRS_LIMIT = 64 * 1024
ATTRS_PAD = ATTRS_LIMIT - len(b'{"x":""}')  # {"x": "<pad>"} is exactly 64 KiB canonical


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"x": "a" * (ATTRS_PAD + 1)}, "canonical JSON is 65537 bytes, over the 65536 limit"),
        ({"x": "\u00e9" * ATTRS_LIMIT}, "over the 65536 limit"),  # 64 Ki chars, 128 KiB UTF-8
        ({"x": "\x01" * 11_000}, "over the 65536 limit"),  # escaped: 6 bytes per character
        ({"x": math.nan}, "x: nan is not a JSON number"),
        ({"x": [1, math.inf]}, "x[1]: inf is not a JSON number"),
        ({"x": {"y": -math.inf}}, "x.y: -inf is not a JSON number"),
        ({"big": 2**53}, "big: integer 9007199254740992 is outside the JSON safe range"),
        ({"neg": -(2**53)}, "outside the JSON safe range"),
        ({1: "x"}, "member name 1 is not a string"),
        ({"x": {None: 1}}, "member name None is not a string"),
        ({"x": "ok\ud800"}, "x: invalid UTF-8 (unpaired surrogate at 2)"),
        ({"x": nested(65)}, "nested deeper than 64 levels"),
        ({"x": [[[[nested(70)]]]]}, "nested deeper than 64 levels"),
        ({"x": b"bytes"}, "bytes is not a JSON value"),
        ({"x": {1, 2}}, "set is not a JSON value"),
        ({"x": datetime(2026, 1, 1, tzinfo=UTC)}, "datetime is not a JSON value"),
    ],
)
def test_bad_attrs(live: Live, value: dict[Any, Any], fragment: str) -> None:
    reject_one(live, "attrs", value, fragment)


def test_attrs_limits_accepted(live: Live) -> None:
    records = [
        {**FULL, "event_id": "at-64k", "attrs": {"x": "a" * ATTRS_PAD}},
        {**FULL, "event_id": "at-deep", "attrs": nested(64)},
        {**FULL, "event_id": "at-safe", "attrs": {"n": [2**53 - 1, -(2**53 - 1), 1.5, None]}},
        {**FULL, "event_id": "at-empty", "attrs": {}},
    ]
    assert live.ledger.append(records).appended == 4
    rows = {r["event_id"]: r for r in _stored_rows(live.ledger)}
    assert len(rows["at-64k"]["attrs"].encode()) == ATTRS_LIMIT
    assert rows["at-safe"]["attrs"] == '{"n":[9007199254740991,-9007199254740991,1.5,null]}'
    assert rows["at-empty"]["attrs"] == "{}"


# -- whole batches ---------------------------------------------------------------------------


def test_one_bad_record_among_1000_rejects_the_batch(live: Live) -> None:
    records = live.valid(1000)
    records[537] = {**records[537], "time": "2026-02-30T00:00:00Z"}
    error = assert_rejected(live, records, [(537, "time", "not a valid date and time")])
    assert len(error.problems) == 1
    assert "record 537: field 'time'" in str(error)
    # the same batch, repaired, is stored whole
    records[537] = {**records[537], "time": VALID["time"]}
    seq = live.next_seq()
    receipts = live.ledger.append(records)
    assert receipts.appended == 1000
    assert [r.seq for r in receipts] == list(range(seq, seq + 1000))
    assert live.ledger.verify().ok


def test_several_bad_records_are_all_listed(live: Live) -> None:
    records = live.valid(12)
    records[1]["category"] = "weather"
    records[4]["bytes"] = -5
    records[4]["span_id"] = "xyz"
    records[9] = {**records[9], "surprise": 1}
    del records[11]["agent_id"]
    assert_rejected(
        live,
        records,
        [
            (1, "category", "'weather' is not one of"),
            (4, "bytes", "must be between 0 and 2^53-1, got -5"),
            (4, "span_id", "expected 16 hex digits, got 'xyz'"),
            (9, "surprise", "unknown field"),
            (11, "agent_id", "required field is missing"),
        ],
    )


def test_many_problems_are_summarised_in_the_message(live: Live) -> None:
    records = live.valid(30)
    for record in records:
        record["outcome"] = "meh"
    error = assert_rejected(live, records, [(i, "outcome", "is not one of") for i in range(30)])
    assert len(error.problems) == 30
    assert str(error).endswith("; and 10 more")


def test_locations_name_the_input_lines(live: Live) -> None:
    records = live.valid(10)
    records[6]["time"] = "not a time"
    records[8]["external"] = "no"
    locations = [f"line {i + 1}" for i in range(10)]
    error = assert_rejected(
        live,
        records,
        [(6, "time", "not an RFC 3339 timestamp"), (8, "external", "expected true or false")],
        locations,
    )
    assert "line 7: field 'time': not an RFC 3339 timestamp" in str(error)
    assert "line 9: field 'external': expected true or false, got a string" in str(error)
    assert [p.location for p in error.problems] == ["line 7", "line 9"]


def test_problem_text_is_clear() -> None:
    problem = Problem(3, "bytes", "must be between 0 and 2^53-1, got -1")
    assert str(problem) == "record 3: field 'bytes': must be between 0 and 2^53-1, got -1"
    assert str(Problem(0, "", "expected a JSON object, got null", "line 2")) == (
        "line 2: record: expected a JSON object, got null"
    )


def test_full_event_round_trips() -> None:
    attrs = '{"model":"m-1","ok":true,"tags":["a","b"],"tokens":12}'
    assert validate_event(FULL) == {**FULL, "attrs": attrs}


def test_full_is_fast() -> None:
    """The rejection tests start from records the fast path accepts, so it must reject them."""
    records = [FULL, VALID]
    assert check_batch(records).records is records  # not the normalised copies of the slow path


# -- bugs around non-plain Python values -----------------------------------------------------


class Tag(str):
    """A str subclass, as produced by numpy.str_, pydantic constrained types, etc."""


class Count(int):
    """An int subclass."""


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("tool", np.str_("vault"), "vault"),
        ("agent_id", Tag("agent-7"), "agent-7"),
        ("bytes", Count(5), 5),
    ],
)
def test_str_and_int_subclasses_are_stored_as_plain_values(
    live: Live, field: str, value: Any, stored: Any
) -> None:
    assert validate_event({**FULL, field: value})[field] == stored  # the definition accepts it
    live.ledger.append([{**FULL, "event_id": "subclass", field: value}])
    [row] = [r for r in _stored_rows(live.ledger) if r["event_id"] == "subclass"]
    assert row[field] == stored


def test_enum_members_are_stored_as_their_values(live: Live) -> None:
    class Category(enum.StrEnum):
        SECRET = "secret"

    live.ledger.append([{**FULL, "event_id": "strenum", "category": Category.SECRET}])
    [row] = [r for r in _stored_rows(live.ledger) if r["event_id"] == "strenum"]
    assert row["category"] == "secret"
    assert live.ledger.verify().ok


@pytest.mark.parametrize(
    "record",
    [{**FULL, "bad\ud800": 1}, {**FULL, "attrs": {"k\udc00": 1}}],
)
def test_error_messages_are_valid_unicode(live: Live, record: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        live.ledger.append([record])
    str(raised.value).encode("utf-8")


# -- differential: the vectorised fast path against the per-record definition ---------------

_NOW = "2026-01-31T12:00:00.000000Z"

# Per field: valid canonical values, valid values needing normalisation, invalid values.
POOLS: dict[str, list[Any]] = {
    "event_id": ["e", "x" * 128, "évt-\U0001f600", "", "x" * 129, "a\x01", "a\x7f", 3, None],
    "time": [
        _NOW,
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
        "2026-01-31T17:30:00+05:30",
        "2026-01-31t12:00:00.123456789z",
        datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=-3))),
        datetime(2026, 1, 31, 12),
        "2026-02-30T00:00:00.000000Z",
        "2026-01-31T24:00:00.000000Z",
        "2016-12-31T23:59:60.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-01-31T12:00:00.000000",
        "2026-01-31 12:00:00.000000Z",
        "garbage",
        1_700_000_000,
        None,
    ],
    "agent_id": ["a", '\u2028\x1f"\\', "", "a\x00", "\ud800", 5, True, [], {}, None],
    "category": ["secret", "ledger", "Secret", "", 3, True, None],
    "action": ["a.b", "A-b_c.d", "a b", "", ".a", "a.", "a\n", 1, None],
    "session_id": ["", "s", "é\U0001f600\ue000", "x" * 65536, "x" * 65537, "\x00", 1.5, None],
    "tool": ["t", "\\u001F", 0, False, {"a": 1}],
    "trace_id": ["0" * 32, "A" * 32, "aB" * 16, "0" * 31, "g" * 32, 5, None],
    "span_id": ["0123456789abcdef", "0123456789ABCDEF", "0" * 17, "z" * 16],
    "credential_scopes": [
        [],
        ["a", "b"],
        ("a", "\U0001f600"),
        ["x"] * 1024,
        ["x"] * 1025,
        "ab",
        [1],
        ["a\x00"],
        {"a": 1},
        None,
    ],
    "credential_expires_at": [_NOW, "2026-01-31T12:00:00-00:00", "2026-02-29T00:00:00Z", 0],
    "external": [True, False, 0, 1, "true", None],
    "sensitivity": ["public", "restricted", "secret", 1],
    "bytes": [0, 5, 2**53 - 1, -1, 2**53, 2**64, 1.5, 1.0, True, "1", None],
    "input_trust": ["trusted", "untrusted", "maybe"],
    "outcome": ["success", "denied", "ok", None],
    "attrs": [
        {},
        {"k": "v", "n": [1, {"a": True}]},
        {"k": 1.5},
        {"k": None},
        {"k": 1e17},
        {"\ue000": 1, "\U00010000": 2},
        {"k": "a" * ATTRS_PAD},
        {"k": "a" * (ATTRS_PAD + 1)},
        nested(64),
        nested(65),
        "x",
        [],
        {"k": math.nan},
        {"k": 2**53},
        {1: "x"},
        {"k": "\ud800"},
        {"k": b"x"},
        None,
    ],
}


@st.composite
def mixed_records(draw: st.DrawFn, index: int) -> Any:
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "mutated", "odd"]))
    record: dict[Any, Any] = {**VALID, "event_id": f"evt-{index}"}
    if kind == "odd":
        return draw(
            st.sampled_from(
                [
                    "not a record",
                    None,
                    [VALID],
                    {**VALID, "colour": "red"},
                    {**VALID, "seq": 1},
                    {k: v for k, v in VALID.items() if k != "action"},
                ]
            )
        )
    if kind == "mutated":
        fields = draw(st.lists(st.sampled_from(sorted(POOLS)), min_size=1, max_size=4))
        for field in fields:
            record[field] = draw(st.sampled_from(POOLS[field]))
    return record


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[Any]:
    size = draw(st.integers(1, 6))
    return [draw(mixed_records(i)) for i in range(size)]


def _definition_bytes(event: Mapping[str, Any], seq: int) -> bytes:
    """RFC 8785 bytes of a validated event as stored at ``seq`` by writer-1 (DESIGN.md §3)."""
    present = {k: v for k, v in event.items() if v is not None}
    assigned = {"writer_id": "writer-1", "seq": seq, "observed_time": OBSERVED}
    if "attrs" not in present:
        return bytes(rfc8785.dumps({**present, **assigned}))
    # Validated events hold attrs as its canonical text (its integers may exceed what rfc8785
    # accepts): splice it in where a placeholder no event can hold (a NUL) sorts.
    text = bytes(rfc8785.dumps({**present, **assigned, "attrs": "\x00"}))
    return text.replace(b'"\\u0000"', present["attrs"].encode())


OBSERVED = "2023-11-14T22:13:20.123456Z"


def _assert_agree(records: list[Any]) -> None:
    """check_batch raises exactly when validate_batch does, and otherwise builds its columns."""
    events, reference = outcome(lambda: validate_batch(records))
    checked, got = outcome(lambda: check_batch(records))
    assert (got is None) == (reference is None), (records, got, reference)
    if reference is not None:
        assert got is not None
        assert got.problems == reference.problems
        return
    assert events is not None and checked is not None
    table = checked.columns
    assert table.num_rows == len(records)
    assert table.to_pydict() == expected_columns(events)
    assert table.equals(normalise(records).columns)
    for field in TIME_FIELDS:
        assert table.schema.field(field).type == pa.timestamp("us", tz="UTC")
    # The writer hashes the canonical bytes of these columns: they must be the definition's.
    stored = _assigned(table, "writer-1", 7, 1_700_000_000_123_456)
    texts = canonical_texts(stored.combine_chunks().to_batches()[0]) if len(records) else []
    for seq, (text, event) in enumerate(zip(texts, events, strict=True), 7):
        assert text == b"\x00" + _definition_bytes(event, seq)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, value, id=f"{field}-{i}")
        for field, values in POOLS.items()
        for i, value in enumerate(values)
    ],
)
def test_check_batch_agrees_on_each_value(field: str, value: Any) -> None:
    """Every pool value alone, in a batch the fast path would otherwise accept."""
    _assert_agree([{**FULL, "event_id": "first"}, {**FULL, field: value}])
    _assert_agree([{**VALID, field: value}])


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mixed_batches())
def test_check_batch_agrees_with_validate_batch(records: list[Any]) -> None:
    _assert_agree(records)


@pytest.mark.parametrize("field", ["agent_id", "tool", "trace_id", "category"])
def test_check_batch_rejects_bytes(field: str, tmp_path: Path) -> None:
    value = {"trace_id": b"0" * 32, "category": b"secret"}.get(field, b"x")
    records = [{**VALID, field: value}]
    with pytest.raises(ValidationError):
        validate_batch(records)
    with pytest.raises(ValidationError):
        check_batch(records)
    ledger = Ledger.init(tmp_path / "ledger")
    with pytest.raises(ValidationError) as caught:
        ledger.append(records)
    assert caught.value.problems[0].field == field
