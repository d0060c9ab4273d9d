"""Fast, vectorised validation of a whole batch of client records.

The per-record validator in ``events`` is the definition; this module accepts a batch only when
every record is already valid *and* in canonical form, checking it column by column with Arrow
compute instead of value by value in Python. Anything else (including every invalid batch) goes
through the per-record validator, which names each problem or normalises the values (offsets,
upper-case hex, nulls, datetimes), and the normalised batch then passes here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .canonical import MAX_SAFE_INTEGER
from .events import MAX_ID_LENGTH, MAX_LIST_ITEMS, MAX_TEXT_LENGTH, validate_batch
from .schema import CLIENT_FIELDS, ENUMS, SEGMENT_SCHEMA, Kind

__all__ = ["CheckedBatch", "check_batch", "normalise"]

_CLIENT_NAMES = frozenset(f.name for f in CLIENT_FIELDS)
_STRUCT = pa.struct(
    [
        pa.field(f.name, pa.string() if f.kind is Kind.TIME else SEGMENT_SCHEMA.field(f.name).type)
        for f in CLIENT_FIELDS
        if f.kind is not Kind.ATTRS
    ]
)
_CANONICAL_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
_ACTION = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
_TEXT_KINDS = (Kind.ID, Kind.TEXT, Kind.ACTION, Kind.ENUM, Kind.HEX)
_LIST_FIELDS = tuple(f.name for f in CLIENT_FIELDS if f.kind is Kind.TEXT_LIST)
_ENUM_SETS = {name: pa.array(values) for name, values in ENUMS.items()}


@dataclass(frozen=True)
class CheckedBatch:
    """A valid batch in canonical form: its records and their client columns as Arrow."""

    records: Sequence[dict[str, Any]]
    columns: pa.Table  # attrs as its canonical text


def check_batch(records: Sequence[object], locations: Sequence[str] | None = None) -> CheckedBatch:
    """Validate a batch (all or nothing), raising ValidationError that names record and field.

    Arrow takes a few values JSON has no form for (bytes, str subclasses) and cannot tell a null
    member from an absent one: one orjson pass over the batch finds those, and the record-by-record
    validator then names or normalises them.
    """
    checked = _fast_check(records, attrs_is_text=False)
    if checked is not None and not _serialisable(checked.records):
        checked = None
    if checked is not None:
        return checked
    return normalise(records, locations)


SERIALISE_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _serialisable(records: Sequence[dict[str, Any]]) -> bool:
    try:
        text = orjson.dumps(records, option=SERIALISE_OPTIONS)
    except TypeError:
        return False
    return b'":null' not in text  # nulls mean "absent": normalising drops them


def normalise(records: Sequence[object], locations: Sequence[str] | None = None) -> CheckedBatch:
    """Validate record by record (naming every problem), then check the normalised batch."""
    checked = _fast_check(validate_batch(records, locations), attrs_is_text=True)
    if checked is None:  # pragma: no cover - the two validators disagree: a bug, not bad input
        raise AssertionError("normalised batch failed the vectorised checks")
    return checked


def _fast_check(records: Sequence[object], attrs_is_text: bool) -> CheckedBatch | None:
    if not all(type(r) is dict for r in records):
        return None
    dicts: Sequence[dict[str, Any]] = records  # type: ignore[assignment]
    if not set().union(*dicts) <= _CLIENT_NAMES:
        return None
    attrs_texts: list[str | None] = []
    for record in dicts:
        # Arrow would quietly truncate 1.5 to 1 and split "ab" into ["a", "b"]: check these here.
        count = record.get("bytes")
        if count is not None and count.__class__ is not int:
            return None
        for name in _LIST_FIELDS:
            items = record.get(name)
            if items is not None and items.__class__ is not list:
                return None
        attrs = record.get("attrs")
        if attrs is None:
            attrs_texts.append(None)
        elif attrs_is_text:
            attrs_texts.append(attrs)
        else:
            text = _attrs_text(attrs)
            if text is None:
                return None
            attrs_texts.append(text)
    try:
        struct = pa.array(dicts, type=_STRUCT)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    batch = pa.RecordBatch.from_struct_array(struct)
    columns = {name: batch.column(name) for name in _STRUCT.names}
    if not _columns_valid(columns):
        return None
    try:
        for field in CLIENT_FIELDS:
            if field.kind is Kind.TIME:
                columns[field.name] = columns[field.name].cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowException:
        return None  # a canonical-looking time that is not a calendar date (e.g. Feb 30)
    columns["attrs"] = pa.array(attrs_texts, pa.string())
    table = pa.table(
        [columns[f.name] for f in CLIENT_FIELDS], names=[f.name for f in CLIENT_FIELDS]
    )
    return CheckedBatch(dicts, table)


def _attrs_text(attrs: object) -> str | None:
    """Canonical text of attrs when orjson's bytes are RFC 8785's; None sends it the slow way."""
    if type(attrs) is not dict or not _plain_json(attrs, 0):
        return None
    try:
        text = orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    if len(text) > 64 * 1024 or b"\xee" in text or b"\xef" in text:
        return None  # over the limit, or member names UTF-16 may order differently
    return text.decode("utf-8")


def _plain_json(value: dict[str, Any] | list[Any], depth: int) -> bool:
    """Strings, booleans, safe integers, objects and arrays only: no floats, no nulls."""
    if depth > 64:
        return False
    items: Iterable[Any] = value.values() if type(value) is dict else value
    for item in items:
        kind: type = type(item)
        if kind is str or kind is bool:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if (kind is dict or kind is list) and _plain_json(item, depth + 1):
            continue
        return False
    return True


def _columns_valid(columns: dict[str, pa.Array]) -> bool:
    # Every string (list items included) is checked for length and NUL in one pass over one
    # concatenated array: a compute call per column would cost more than the checks.
    texts: list[pa.Array] = []
    for field in CLIENT_FIELDS:
        if field.kind is Kind.ATTRS:
            continue
        present = columns[field.name]  # nulls stay: every check below skips them
        if field.required and present.null_count:
            return False
        if present.null_count == len(present):
            continue
        if field.kind in _TEXT_KINDS:
            texts.append(present)
            if field.required and pc.min(pc.utf8_length(present)).as_py() == 0:
                return False
        elif field.kind is Kind.TEXT_LIST:
            if pc.max(pc.list_value_length(present)).as_py() > MAX_LIST_ITEMS:
                return False
            items = pc.list_flatten(present)
            if items.null_count:
                return False
            texts.append(items)
        if not _kind_valid(field.kind, field.name, field.hex_length, present):
            return False
    return all(_text_valid(t) for t in texts)


def _text_valid(values: pa.Array) -> bool:
    """No NUL and no string over the length limit, read straight off the Arrow buffers."""
    if values.type != pa.string():
        values = values.cast(pa.string())
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        values.offset : values.offset + len(values) + 1
    ]
    # Bytes bound characters from above: count characters only when some string is long.
    too_many_bytes = len(offsets) > 1 and int(np.diff(offsets).max()) > MAX_TEXT_LENGTH
    if too_many_bytes and pc.max(pc.utf8_length(values)).as_py() > MAX_TEXT_LENGTH:
        return False
    if data_buffer is None:
        return True
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return not bool((data == 0).any())


def _kind_valid(kind: Kind, name: str, hex_length: int, values: pa.Array) -> bool:
    if kind is Kind.ID:
        too_long = pc.max(pc.utf8_length(values)).as_py() > MAX_ID_LENGTH
        return (
            not too_long
            and not pc.any(pc.match_substring_regex(values, r"[\x00-\x1f\x7f]")).as_py()
        )
    if kind is Kind.ACTION:
        return bool(pc.all(pc.match_substring_regex(values, _ACTION)).as_py())
    if kind is Kind.ENUM:
        known = pc.is_in(values, value_set=_ENUM_SETS[name])  # false, not null, for a null
        return bool(pc.all(pc.or_(known, pc.is_null(values))).as_py())
    if kind is Kind.HEX:
        return bool(pc.all(pc.match_substring_regex(values, f"^[0-9a-f]{{{hex_length}}}$")).as_py())
    if kind is Kind.TIME:
        canonical = pc.all(pc.match_substring_regex(values, _CANONICAL_TIME)).as_py()
        return bool(canonical) and not pc.any(pc.starts_with(values, "0000")).as_py()
    if kind is Kind.INT:
        return bool(pc.min(values).as_py() >= 0 and pc.max(values).as_py() <= MAX_SAFE_INTEGER)
    return True
