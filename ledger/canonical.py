"""Canonical bytes of an event (RFC 8785 JSON) and RFC 3339 timestamps in canonical form.

The fast path serialises with orjson and falls back to the ``rfc8785`` reference for the values
where the two could differ (floats, integers beyond the JSON safe range, member names that UTF-16
would order differently from code points). Tests hold the fast path to the reference byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import rfc8785

__all__ = [
    "MAX_SAFE_INTEGER",
    "canonical_event_bytes",
    "canonical_json",
    "format_micros",
    "parse_timestamp",
    "reference_event_bytes",
]

MAX_SAFE_INTEGER = 2**53 - 1
_MAX_DEPTH = 64
# UTF-16 puts astral characters (surrogate pairs) before U+E000..U+FFFF; code point order does not.
_UTF16_ORDER_DIFFERS = "\ue000"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z", re.ASCII)
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))\Z",
    re.ASCII,  # \d would otherwise accept any script's digits
)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value; raises ValueError naming the offending path."""
    if _fast_path_agrees(value, "", 0):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return bytes(rfc8785.dumps(value))


def _fast_path_agrees(value: Any, path: str, depth: int) -> bool:
    """Check a JSON value is valid, and whether orjson's output equals RFC 8785 for it."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{path or 'value'}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        _check_text(value, path)
        return True
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return True
        raise ValueError(
            f"{path or 'value'}: integer {value} is outside the JSON safe range ±(2^53-1); "
            "send it as a string"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'}: {value} is not a JSON number")
        return False
    if isinstance(value, list):
        agrees = True
        for i, item in enumerate(value):
            agrees &= _fast_path_agrees(item, f"{path}[{i}]", depth + 1)
        return agrees
    if isinstance(value, dict):
        agrees = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path or 'value'}: member name {key!r} is not a string")
            member = f"{path}.{key}" if path else key
            _check_text(key, member)
            if not key.isascii() and max(key) >= _UTF16_ORDER_DIFFERS:
                agrees = False
            agrees &= _fast_path_agrees(item, member, depth + 1)
        return agrees
    raise ValueError(f"{path or 'value'}: {type(value).__name__} is not a JSON value")


def _check_text(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{path or 'value'}: invalid UTF-8 (unpaired surrogate at {err.start})"
        ) from None


def canonical_event_bytes(fields: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a validated event whose ``attrs`` is already canonical JSON text."""
    attrs = fields.get("attrs")
    if attrs is None:
        return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    with_fragment = dict(fields)
    with_fragment["attrs"] = orjson.Fragment(attrs)
    return orjson.dumps(with_fragment, option=orjson.OPT_SORT_KEYS)


def reference_event_bytes(fields: Mapping[str, Any]) -> bytes:
    """The same bytes as ``canonical_event_bytes``, produced by the rfc8785 reference."""
    plain = dict(fields)
    if "attrs" in plain:
        # Canonical attrs hold integers only within the safe range: a longer integer token is a
        # float written in full (1e17 is "100000000000000000"), and must stay one.
        plain["attrs"] = json.loads(plain["attrs"], parse_int=_int_or_float)
    return bytes(rfc8785.dumps(plain))


def _int_or_float(token: str) -> int | float:
    number = int(token)
    return number if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER else float(token)


def parse_timestamp(value: object) -> str:
    """Canonical RFC 3339 UTC form (6 fractional digits, ``Z``) of a timestamp, or ValueError."""
    if isinstance(value, str):
        if _CANONICAL_TS.match(value):
            _check_calendar(value)
            return value
        return _format(_parse_rfc3339(value))
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetime has no timezone; give an aware datetime (e.g. UTC)")
        return _format(value.astimezone(UTC))
    raise ValueError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")


def format_micros(micros: int) -> str:
    """Canonical RFC 3339 form of microseconds since the Unix epoch."""
    return _format(_EPOCH + timedelta(microseconds=micros))


def _check_calendar(text: str) -> None:
    try:
        datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
        )
    except ValueError as err:
        raise ValueError(f"not a valid date and time ({err}): {text!r}") from None


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(
            "not an RFC 3339 timestamp with a UTC offset (e.g. 2026-01-31T12:00:00Z): "
            f"{text[:64]!r}"
        )
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0").ljust(9, "0")[:6])  # sub-microsecond digits are truncated
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC
        )
    except ValueError as err:
        raise ValueError(f"not a valid date and time ({err}): {text[:64]!r}") from None
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(f"invalid UTC offset in {text[:64]!r}")
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        try:
            moment = moment - offset if sign == "+" else moment + offset
        except OverflowError:
            raise ValueError(f"timestamp out of range: {text[:64]!r}") from None
    return moment


def _format(moment: datetime) -> str:
    if not 1 <= moment.year <= 9999:
        raise ValueError("timestamp out of range (years 0001-9999)")
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )
