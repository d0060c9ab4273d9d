"""Validation of client events (DESIGN.md §2) into their canonical field values."""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from .canonical import MAX_SAFE_INTEGER, canonical_json, parse_timestamp
from .errors import Problem, ValidationError
from .schema import (
    ASSIGNED_FIELDS,
    CLIENT_FIELDS,
    ENUMS,
    HASH_COLUMNS,
    REQUIRED_FIELDS,
    Field,
    Kind,
)

__all__ = [
    "MAX_ATTRS_BYTES",
    "MAX_ID_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_TEXT_LENGTH",
    "SERIALISE_OPTIONS",
    "Event",
    "json_view",
    "validate_batch",
    "validate_event",
]

Event = dict[str, Any]
"""A validated event: canonical JSON values by field name, absent fields omitted."""

MAX_ATTRS_BYTES = 64 * 1024
MAX_TEXT_LENGTH = 64 * 1024
MAX_LIST_ITEMS = 1024
MAX_ID_LENGTH = 128

_ACTION = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\Z")
_LOWER_HEX = re.compile(r"[0-9a-f]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LEDGER_ASSIGNED = {f.name for f in ASSIGNED_FIELDS} | set(HASH_COLUMNS)

# How batches are serialised for checking: values orjson would write in a form of its own
# (datetimes, dataclasses, subclasses of str, int, dict and list) raise instead, and the checks
# here decide what they mean.
SERIALISE_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_json_type(value)}")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"longer than {MAX_TEXT_LENGTH} characters")
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"invalid UTF-8 (unpaired surrogate at {err.start})") from None
    return str.__str__(value)  # a plain str: subclasses (numpy.str_, ...) have no JSON form


def _required_text(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _identifier(value: object) -> str:
    text = _required_text(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(text):
        raise ValueError("contains a control character")
    return text


def _action(value: object) -> str:
    text = _required_text(value)
    if not _ACTION.match(text):
        raise ValueError(f"not a dotted verb such as 'secret.read': {text[:64]!r}")
    return text


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_json_type(value)}")
    return bool(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_json_type(value)}")
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"must be between 0 and 2^53-1, got {value}")
    return int(value)


def _text_list(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of strings, got {_json_type(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"more than {MAX_LIST_ITEMS} items")
    items = []
    for i, item in enumerate(value):
        try:
            items.append(_text(item))
        except ValueError as err:
            raise ValueError(f"item {i}: {err}") from None
    return items


def _attrs(value: object) -> str:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(value)}")
    text = canonical_json(value)
    if len(text) > MAX_ATTRS_BYTES:
        raise ValueError(f"canonical JSON is {len(text)} bytes, over the {MAX_ATTRS_BYTES} limit")
    return text.decode("utf-8")


def _enum_checker(name: str) -> Callable[[object], str]:
    allowed = frozenset(ENUMS[name])
    listed = ", ".join(ENUMS[name])

    def check(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            shown = repr(value)[:64] if isinstance(value, str) else _json_type(value)
            raise ValueError(f"{shown} is not one of: {listed}")
        return str.__str__(value)

    return check


def _hex_checker(length: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(value).lower()
        if len(text) != length or not _LOWER_HEX.match(text):
            raise ValueError(f"expected {length} hex digits, got {text[:80]!r}")
        return text

    return check


def _checker(field: Field) -> Callable[[object], Any]:
    simple: dict[Kind, Callable[[object], Any]] = {
        Kind.ID: _identifier,
        Kind.ACTION: _action,
        Kind.TIME: parse_timestamp,
        Kind.BOOL: _bool,
        Kind.INT: _count,
        Kind.TEXT_LIST: _text_list,
        Kind.ATTRS: _attrs,
    }
    if field.kind is Kind.ENUM:
        return _enum_checker(field.name)
    if field.kind is Kind.HEX:
        return _hex_checker(field.hex_length)
    if field.kind is Kind.TEXT:
        return _required_text if field.required else _text
    return simple[field.kind]


_CHECKERS: dict[str, Callable[[object], Any]] = {f.name: _checker(f) for f in CLIENT_FIELDS}


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return names.get(type(value), type(value).__name__)


def validate_event(record: object, index: int = 0, location: str = "") -> Event:
    """Validate one client record; raise ValidationError listing every problem in it."""
    problems: list[Problem] = []
    event = _validate_into(record, index, location, problems)
    if problems:
        raise ValidationError(problems)
    return event


def json_view(value: object) -> object:
    """A value as orjson writes it, where that differs from its Python type.

    Batches are checked on orjson's text of them (``ingest``), so the definition reads values the
    same way: UUIDs become their text, enum members their value, tuples lists. A value holding an
    ``orjson.Fragment`` (raw JSON, which may even stand for several members) is read back from
    orjson's text of it, unless it also holds a float JSON has no form for (written as null).
    """
    fragment, non_finite = _held(value, 0)
    if fragment and not non_finite:
        try:
            return orjson.loads(orjson.dumps(value, option=SERIALISE_OPTIONS))
        except (TypeError, orjson.JSONDecodeError):
            pass  # no JSON form: the checks name the value
    return _plain(value, 0)


# Deeper than any valid value: below it, values are left for the checks to reject by depth.
_VIEW_DEPTH = 66


def _held(value: object, depth: int) -> tuple[bool, bool]:
    """Whether a value holds an orjson.Fragment, and whether it holds a NaN or infinity."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return False, False
    if kind is float:
        return False, not math.isfinite(value)  # type: ignore[arg-type]
    if isinstance(value, orjson.Fragment):
        return True, False
    if depth > _VIEW_DEPTH:
        return False, False
    items: Iterable[object]
    if isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False, False
    fragment = non_finite = False
    for item in items:
        has_fragment, has_non_finite = _held(item, depth + 1)
        fragment |= has_fragment
        non_finite |= has_non_finite
    return fragment, non_finite


def _plain(value: object, depth: int) -> object:
    kind = type(value)
    plain = kind is str or kind is int or kind is bool or kind is float or value is None
    if plain or depth > _VIEW_DEPTH:
        return value
    if kind is dict:
        return {n: _plain(item, depth + 1) for n, item in value.items()}  # type: ignore[attr-defined]
    if kind is list or kind is tuple:
        return [_plain(item, depth + 1) for item in value]  # type: ignore[attr-defined]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth + 1)
    if isinstance(value, orjson.Fragment):
        try:
            return orjson.loads(orjson.dumps(value))
        except orjson.JSONDecodeError:
            return value  # not one JSON value: reported as the object it is
    return value


def _validate_into(record: object, index: int, location: str, problems: list[Problem]) -> Event:
    record = json_view(record)
    if not isinstance(record, Mapping):
        problems.append(
            Problem(index, "", f"expected a JSON object, got {_json_type(record)}", location)
        )
        return {}
    event: Event = {}
    for name, value in record.items():
        checker = _CHECKERS.get(name)
        if checker is None:
            if name in _LEDGER_ASSIGNED:
                reason = "is assigned by the ledger and must not be supplied"
            else:
                reason = "unknown field (put extra data under 'attrs')"
            problems.append(Problem(index, str(name), reason, location))
            continue
        if value is None:
            continue  # an explicit null is the same as an absent optional field
        try:
            event[name] = checker(value)
        except ValueError as err:
            problems.append(Problem(index, name, str(err), location))
    for name in REQUIRED_FIELDS:
        if name not in event and record.get(name) is None:
            problems.append(Problem(index, name, "required field is missing", location))
    return event


def validate_batch(
    records: Sequence[object], locations: Sequence[str] | None = None, first_index: int = 0
) -> list[Event]:
    """Validate a batch; raise ValidationError naming every bad record and field, or return all."""
    problems: list[Problem] = []
    events = []
    for offset, record in enumerate(records):
        location = locations[offset] if locations is not None else ""
        events.append(_validate_into(record, first_index + offset, location, problems))
    if problems:
        raise ValidationError(problems)
    return events
