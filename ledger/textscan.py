"""The compiled loops of ``ingest``: checking orjson's text of a batch, gathering its values and
splicing the ledger's members into each record's text.

The tables describe the client fields in the order sorted keys put them; the loops read them, so
each compiled function stays free of Python objects (and of the GIL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import types

from .canonical import MAX_SAFE_INTEGER
from .compiled import day_cache, jit, plain_run, put_bytes, put_int, put_time
from .events import MAX_ATTRS_BYTES, MAX_ID_LENGTH, MAX_LIST_ITEMS, MAX_TEXT_LENGTH
from .schema import ASSIGNED_FIELDS, CLIENT_FIELDS, ENUMS, Kind

__all__ = [
    "ACCEPTED",
    "ALL_FIELDS",
    "ATTRS",
    "BOOL",
    "FIELDS",
    "FIELD_INDEX",
    "INT",
    "KINDS",
    "LIST",
    "MORE_ITEMS",
    "REFUSED",
    "TABLES",
    "TIME",
    "gather_columns",
    "parse_records",
    "parse_sent_slices",
    "splice",
]

_ID, _TEXT, _ACTION, _ENUM, _HEX, TIME, BOOL, INT, LIST, ATTRS = range(10)
_CODES = {
    Kind.ID: _ID,
    Kind.TEXT: _TEXT,
    Kind.ACTION: _ACTION,
    Kind.ENUM: _ENUM,
    Kind.HEX: _HEX,
    Kind.TIME: TIME,
    Kind.BOOL: BOOL,
    Kind.INT: INT,
    Kind.TEXT_LIST: LIST,
    Kind.ATTRS: ATTRS,
}

# The client fields in the order sorted keys put them (all names are ASCII).
FIELDS = tuple(sorted(CLIENT_FIELDS, key=lambda f: f.name))
_NAMES = np.frombuffer(b"".join(f.name.encode() for f in FIELDS), np.uint8)
_NAME_OFFSETS = np.cumsum([0, *(len(f.name) for f in FIELDS)], dtype=np.int64)
KINDS = np.array([_CODES[f.kind] for f in FIELDS], np.int64)
_REQUIRED = np.array([f.required for f in FIELDS], np.uint8)
_HEX_LENGTHS = np.array([f.hex_length for f in FIELDS], np.int64)
# Each enum field's allowed values, as a range of a shared list of texts.
_ENUM_TEXTS = [v.encode() for f in FIELDS if f.kind is Kind.ENUM for v in ENUMS[f.name]]
_ENUM_BYTES = np.frombuffer(b"".join(_ENUM_TEXTS), np.uint8)
_ENUM_OFFSETS = np.cumsum([0, *map(len, _ENUM_TEXTS)], dtype=np.int64)
_ENUM_RANGES = np.zeros((len(FIELDS), 2), np.int64)
_first = 0
for _index, _field in enumerate(FIELDS):
    if _field.kind is Kind.ENUM:
        _ENUM_RANGES[_index] = (_first, _first + len(ENUMS[_field.name]))
        _first += len(ENUMS[_field.name])
ALL_FIELDS = np.arange(len(FIELDS))
FIELD_INDEX = {f.name: i for i, f in enumerate(FIELDS)}
# The ledger's members (observed_time, seq, writer_id) each go after the last field sorting before.
_ASSIGNED = tuple(sorted(f.name for f in ASSIGNED_FIELDS))
_GOES_AFTER = np.array([[f.name < name for f in FIELDS] for name in _ASSIGNED], np.uint8)
TABLES = (
    _NAMES,
    _NAME_OFFSETS,
    KINDS,
    _REQUIRED,
    _HEX_LENGTHS,
    _ENUM_BYTES,
    _ENUM_OFFSETS,
    _ENUM_RANGES,
    _GOES_AFTER,
)

ACCEPTED, REFUSED, MORE_ITEMS = 0, 1, 2
# What a string's byte may be, so the common case (plain ASCII) costs one lookup.
_PLAIN, _QUOTE, _BACKSLASH, _RAW_CONTROL, _DELETE, _MULTIBYTE = range(6)
_CLASSES = np.full(256, _MULTIBYTE, np.uint8)
_CLASSES[:0x20] = _RAW_CONTROL
_CLASSES[0x20:0x80] = _PLAIN
_CLASSES[ord('"')] = _QUOTE
_CLASSES[ord("\\")] = _BACKSLASH
_CLASSES[0x7F] = _DELETE
# String scan flags.
_ESCAPED, _NUL, _CONTROL, _ORDER_DIFFERS = 1, 2, 4, 8
_MAX_DEPTH = 64
_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))
_TIME_LENGTH = len("2026-01-01T00:00:00.000000Z")


# -- the compiled loops ---------------------------------------------------------------------------


@jit
def _hex_value(byte: int) -> int:
    if 48 <= byte <= 57:
        return byte - 48
    if 97 <= byte <= 102:
        return byte - 87
    return -1


@jit
def _continuation(text: Any, at: int, end: int) -> bool:
    return at < end and (text[at] & 0xC0) == 0x80


@jit
def _scan_string(text: Any, at: int, end: int) -> tuple[int, int]:
    """Scan the string whose opening quote is at ``at``: (closing quote, flags).

    The closing quote is -1 unless the string is valid UTF-8 in RFC 8785 form: no raw control
    characters, and escapes only as RFC 8785 writes them.
    """
    at += 1
    flags = 0
    while at < end:
        at = plain_run(text, at, end, True)
        if at >= end:
            break
        byte = text[at]
        kind = _CLASSES[byte]
        if kind == _QUOTE:
            return at, flags
        elif kind == _BACKSLASH:
            flags |= _ESCAPED
            if at + 1 >= end:
                return -1, 0
            letter = text[at + 1]
            if letter == 34 or letter == 92:  # noqa: PLR1714 - compiled as two compares
                at += 2
            elif letter in (98, 102, 110, 114, 116):  # b f n r t
                flags |= _CONTROL
                at += 2
            elif letter == 117:  # u: lower-case hex, only for controls without a short form
                if at + 5 >= end or text[at + 2] != 48 or text[at + 3] != 48:
                    return -1, 0
                high = _hex_value(text[at + 4])
                low = _hex_value(text[at + 5])
                if high < 0 or high > 1 or low < 0:
                    return -1, 0
                code = high * 16 + low
                if code in (8, 9, 10, 12, 13):
                    return -1, 0
                flags |= _CONTROL
                if code == 0:
                    flags |= _NUL
                at += 6
            else:
                return -1, 0
        elif kind == _DELETE:
            flags |= _CONTROL
            at += 1
        elif kind == _RAW_CONTROL:
            return -1, 0
        elif 0xC2 <= byte <= 0xDF:
            if not _continuation(text, at + 1, end):
                return -1, 0
            at += 2
        elif 0xE0 <= byte <= 0xEF:
            if not (_continuation(text, at + 1, end) and _continuation(text, at + 2, end)):
                return -1, 0
            second = text[at + 1]
            if (byte == 0xE0 and second < 0xA0) or (byte == 0xED and second >= 0xA0):
                return -1, 0  # overlong, or a surrogate
            if byte >= 0xEE:  # U+E000..U+FFFF: UTF-16 orders these after astral characters
                flags |= _ORDER_DIFFERS
            at += 3
        elif 0xF0 <= byte <= 0xF4:
            if not (
                _continuation(text, at + 1, end)
                and _continuation(text, at + 2, end)
                and _continuation(text, at + 3, end)
            ):
                return -1, 0
            second = text[at + 1]
            if (byte == 0xF0 and second < 0x90) or (byte == 0xF4 and second >= 0x90):
                return -1, 0  # overlong, or beyond U+10FFFF
            at += 4
        else:
            return -1, 0
    return -1, 0


@jit
def _characters(text: Any, start: int, close: int) -> int:
    """How many characters a scanned string holds (an escape is one)."""
    count = 0
    at = start
    while at < close:
        byte = text[at]
        if byte == 92:  # backslash
            at += 6 if text[at + 1] == 117 else 2
            count += 1
            continue
        if byte & 0xC0 != 0x80:
            count += 1
        at += 1
    return count


@jit
def _not_longer(text: Any, start: int, close: int, limit: int) -> bool:
    """Whether a scanned string holds at most ``limit`` characters (bytes bound them above)."""
    return close - start <= limit or _characters(text, start, close) <= limit


@jit
def _same(text: Any, start: int, end: int, table: Any, table_start: int, table_end: int) -> bool:
    if end - start != table_end - table_start:
        return False
    for i in range(end - start):  # noqa: SIM110 - numba compiles no generators
        if text[start + i] != table[table_start + i]:
            return False
    return True


@jit
def _before(text: Any, a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Whether text[a_start:a_end] sorts strictly before text[b_start:b_end], byte by byte."""
    for i in range(min(a_end - a_start, b_end - b_start)):
        a = text[a_start + i]
        b = text[b_start + i]
        if a != b:
            return bool(a < b)
    return a_end - a_start < b_end - b_start


@jit
def _action_valid(text: Any, start: int, end: int) -> bool:
    """``[A-Za-z0-9_-]+`` parts joined by single dots."""
    part = 0
    for i in range(start, end):
        byte = text[i]
        if byte == 46:  # .
            if part == 0:
                return False
            part = 0
        elif (48 <= byte <= 57) or (65 <= byte <= 90) or (97 <= byte <= 122) or byte in (45, 95):
            part += 1
        else:
            return False
    return part > 0


@jit
def _digits(text: Any, start: int, count: int) -> int:
    value = 0
    for i in range(start, start + count):
        byte = text[i]
        if byte < 48 or byte > 57:
            return -1
        value = value * 10 + byte - 48
    return value


@jit
def _time_micros(text: Any, start: int, end: int) -> int:
    """µs since the epoch of ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (a real date), or -2**63."""
    invalid = -(2**63)
    if end - start != _TIME_LENGTH:
        return invalid
    for at, mark in ((4, 45), (7, 45), (10, 84), (13, 58), (16, 58), (19, 46), (26, 90)):
        if text[start + at] != mark:
            return invalid
    year = _digits(text, start, 4)
    month = _digits(text, start + 5, 2)
    day = _digits(text, start + 8, 2)
    hour = _digits(text, start + 11, 2)
    minute = _digits(text, start + 14, 2)
    second = _digits(text, start + 17, 2)
    fraction = _digits(text, start + 20, 6)
    if min(year, month, day, hour, minute, second, fraction) < 0:
        return invalid
    if year < 1 or month < 1 or month > 12 or day < 1 or hour > 23 or minute > 59 or second > 59:
        return invalid
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = 31
    if month == 2:
        month_days = 29 if leap else 28
    elif month in (4, 6, 9, 11):
        month_days = 30
    if day > month_days:
        return invalid
    # Howard Hinnant's days_from_civil (years here are positive).
    shifted_year = year - 1 if month <= 2 else year
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return ((days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000) + fraction


@jit
def _digits_end(text: Any, at: int, end: int) -> int:
    while at < end and 48 <= text[at] <= 57:
        at += 1
    return at


@jit
def _number_end(text: Any, at: int, end: int, trusted: bool) -> int:
    """The end of the number at ``at``: -1 unless an integer within ±(2^53-1) in canonical form
    (any JSON number when ``trusted``)."""
    start = at
    if text[at] == 45:  # -
        at += 1
    digits_start = at
    at = _digits_end(text, at, end)
    digits = at - digits_start
    if digits == 0 or (text[digits_start] == 48 and digits > 1):
        return -1  # no digits, or a leading zero
    if trusted:  # JSON's grammar: -?int(.digits)?([eE][+-]?digits)?
        if at < end and text[at] == 46:  # .
            fraction_end = _digits_end(text, at + 1, end)
            if fraction_end == at + 1:
                return -1
            at = fraction_end
        if at < end and (text[at] == 69 or text[at] == 101):
            at += 1
            if at < end and (text[at] == 43 or text[at] == 45):
                at += 1
            exponent_end = _digits_end(text, at, end)
            if exponent_end == at:
                return -1
            at = exponent_end
        return at
    if at < end and text[at] in (46, 69, 101):  # a fraction or exponent: a float
        return -1
    if text[digits_start] == 48 and digits_start > start:
        return -1  # -0
    if digits > _SAFE_DIGITS or _digits(text, digits_start, digits) > MAX_SAFE_INTEGER:
        return -1
    return at


@jit
def _attrs_end(text: Any, at: int, end: int, trusted: bool, keys: Any) -> int:
    """The end of the JSON object at ``at``, -1 unless it is canonical attrs.

    Canonical: RFC 8785 grammar with member names in order and unique, integers in the safe range,
    no floats, nulls, or names UTF-16 would order differently (``trusted``: any values and names),
    nested at most 64 deep. ``keys`` keeps, per depth, where the last member name lies.
    """
    if text[at] != 123:
        return -1
    # The expected next token: 0 a member name or "}", 1 a member name, 2 a value or "]",
    # 3 a value, 4 "," or the container's close.
    expect = 0
    depth = 0
    containers = keys[:, 2]
    containers[0] = 123
    keys[0, 0] = -1
    at += 1
    while at < end:
        byte = text[at]
        if expect <= 1:  # a member name, or the end of an empty object
            if byte == 125 and expect == 0:
                depth -= 1
                at += 1
                expect = 4
            elif byte == 34:
                close, flags = _scan_string(text, at, end)
                if close < 0:
                    return -1
                # Escaped names compare by their escapes here, not their characters: only the
                # canonical serialiser's own text (``trusted``) may hold them.
                if not trusted and (
                    flags & (_ORDER_DIFFERS | _ESCAPED)
                    or (
                        keys[depth, 0] >= 0
                        and not _before(text, keys[depth, 0], keys[depth, 1], at + 1, close)
                    )
                ):
                    return -1
                keys[depth, 0] = at + 1
                keys[depth, 1] = close
                at = close + 1
                if at >= end or text[at] != 58:  # :
                    return -1
                at += 1
                expect = 3
                continue
            else:
                return -1
        elif expect <= 3:  # a value, or the end of an empty array
            if byte == 93 and expect == 2:
                depth -= 1
                at += 1
                expect = 4
            elif byte == 123 or byte == 91:  # noqa: PLR1714 - compiled as two compares
                depth += 1
                # Values may be 64 deep: a container that deep must be empty.
                if depth > _MAX_DEPTH or (
                    depth == _MAX_DEPTH and (at + 1 >= end or text[at + 1] != byte + 2)
                ):
                    return -1
                containers[depth] = byte
                keys[depth, 0] = -1
                at += 1
                expect = 0 if byte == 123 else 2
                continue
            elif byte == 34:
                close, _ = _scan_string(text, at, end)
                if close < 0:
                    return -1
                at = close + 1
                expect = 4
            elif byte == 116 or byte == 102 or byte == 110:  # t f n  # noqa: PLR1714
                word = 4 if byte != 102 else 5
                if at + word > end:
                    return -1
                if byte == 116:
                    ok = text[at + 1] == 114 and text[at + 2] == 117 and text[at + 3] == 101
                elif byte == 102:
                    ok = (
                        text[at + 1] == 97
                        and text[at + 2] == 108
                        and text[at + 3] == 115
                        and text[at + 4] == 101
                    )
                else:
                    ok = trusted and (
                        text[at + 1] == 117 and text[at + 2] == 108 and text[at + 3] == 108
                    )
                if not ok:
                    return -1
                at += word
                expect = 4
            elif byte == 45 or 48 <= byte <= 57:
                at = _number_end(text, at, end, trusted)
                if at < 0:
                    return -1
                expect = 4
            else:
                return -1
        else:  # after a value
            if byte == 44:  # ,
                at += 1
                expect = 1 if containers[depth] == 123 else 3
                continue
            if byte != (125 if containers[depth] == 123 else 93):
                return -1
            depth -= 1
            at += 1
        if depth < 0:
            return at
    return -1


@jit
def _text_value_valid(
    kind: int,
    text: Any,
    start: int,
    close: int,
    flags: int,
    required: bool,
    hex_length: int,
    enum_bytes: Any,
    enum_offsets: Any,
    first_enum: int,
    last_enum: int,
) -> bool:
    """Whether a string value is valid for its field kind (not a time: those are parsed)."""
    if required and close == start:
        return False
    if kind == _ID:
        return flags & _CONTROL == 0 and _not_longer(text, start, close, MAX_ID_LENGTH)
    if kind == _TEXT:
        return flags & _NUL == 0 and _not_longer(text, start, close, MAX_TEXT_LENGTH)
    if flags & _ESCAPED:
        return False
    if kind == _ACTION:
        return close - start <= MAX_TEXT_LENGTH and _action_valid(text, start, close)
    if kind == _HEX:
        if close - start != hex_length:
            return False
        for i in range(start, close):  # noqa: SIM110 - numba compiles no generators
            if _hex_value(text[i]) < 0:
                return False
        return True
    for value in range(first_enum, last_enum):  # _ENUM
        if _same(text, start, close, enum_bytes, enum_offsets[value], enum_offsets[value + 1]):
            return True
    return False


@jit
def parse_records(
    text: Any,
    slice_: int,
    text_starts: Any,
    row_starts: Any,
    item_bases: Any,
    escaped: Any,
    lengths: Any,
    outcomes: Any,
    *tables_and_findings: Any,
) -> int:
    """Check one slice of a batch, orjson's text of its records (an array), and record where each
    value lies; its outcome also goes in ``outcomes[slice_]``, where another thread may look.

    The slice's text is text[text_starts[slice_]:text_starts[slice_ + 1]], its records are rows
    row_starts[slice_] on, and its list items go from item_bases[slice_], below the next slice's;
    ``escaped`` and ``lengths`` have a row per slice. ``tables_and_findings`` are the rest of
    ``_parse_slice``'s arguments. Returns ACCEPTED, REFUSED (something is invalid or not
    canonical), or MORE_ITEMS (the item arrays are too small).
    """
    outcome = _parse_slice(
        text,
        text_starts[slice_],
        text_starts[slice_ + 1],
        row_starts[slice_],
        row_starts[slice_ + 1] - row_starts[slice_],
        item_bases[slice_],
        item_bases[slice_ + 1],
        escaped[slice_],
        lengths[slice_],
        *tables_and_findings,
    )
    outcomes[slice_] = outcome
    return outcome


# read(2), called from compiled code: the worker waits for each slice without holding the GIL.
_read: Any = types.ExternalFunction("read", types.intp(types.intc, types.voidptr, types.uintp))
_SLICE_SENT = 1


@jit
def parse_sent_slices(pipe: int, token: Any, done: Any, text: Any, *layout: Any) -> None:
    """``parse_records(text, slice_, *layout)`` of slices ``done[0]``, ``done[0] + 1``, ... one
    for each 1 read from ``pipe``, until it reads anything else (or a slice is not accepted, or
    the read fails); ``done[0]`` counts up as each is parsed, where another thread may look."""
    while _read(pipe, token.ctypes.data, 1) == 1 and token[0] == _SLICE_SENT:
        slice_ = done[0]
        outcome = parse_records(text, slice_, *layout)
        done[0] = slice_ + 1
        if outcome != ACCEPTED:
            return


@jit
def _parse_slice(
    text: Any,
    start: int,
    end: int,
    first_row: int,
    rows: int,
    item_base: int,
    item_limit: int,
    escaped: Any,
    lengths: Any,
    names: Any,
    name_offsets: Any,
    kinds: Any,
    required: Any,
    hex_lengths: Any,
    enum_bytes: Any,
    enum_offsets: Any,
    enum_ranges: Any,
    goes_after: Any,
    trusted_attrs: bool,
    bounds: Any,
    inserts: Any,
    starts: Any,
    ends: Any,
    values: Any,
    present: Any,
    item_starts: Any,
    item_ends: Any,
) -> int:
    """``parse_records`` of one slice, ``text[start:end]``: rows ``first_row`` on, items from
    ``item_base`` below ``item_limit``."""
    fields = len(kinds)
    keys = np.empty((_MAX_DEPTH + 2, 3), np.int64)
    items = item_base
    if end - start < 2 or text[start] != 91:  # [
        return REFUSED
    at = start + 1
    if rows == 0:
        return ACCEPTED if end - start == 2 and text[at] == 93 else REFUSED
    for row in range(first_row, first_row + rows):
        if row > first_row:
            if at >= end or text[at] != 44:
                return REFUSED
            at += 1
        if at >= end or text[at] != 123:  # {
            return REFUSED
        bounds[row, 0] = at
        for field in range(fields):  # the arrays may hold an earlier batch's findings
            starts[row, field] = 0
            ends[row, field] = 0
            values[row, field] = 0
            present[row, field] = 0
        at += 1
        field = 0
        while True:
            if at >= end or text[at] != 34:
                return REFUSED
            name_start = at + 1
            name_end = name_start
            while name_end < end and (97 <= text[name_end] <= 122 or text[name_end] == 95):
                name_end += 1
            while field < fields and not _same(
                text, name_start, name_end, names, name_offsets[field], name_offsets[field + 1]
            ):
                field += 1
            if field == fields or name_end + 1 >= end or text[name_end] != 34:
                return REFUSED  # unknown, repeated, or out of order
            at = name_end + 1
            if text[at] != 58:  # :
                return REFUSED
            at += 1
            if at >= end:
                return REFUSED
            kind = kinds[field]
            if kind == BOOL:
                if at + 4 <= end and text[at] == 116 and text[at + 1] == 114:
                    if text[at + 2] != 117 or text[at + 3] != 101:
                        return REFUSED
                    values[row, field] = 1
                    at += 4
                elif at + 5 <= end and text[at] == 102:
                    if text[at + 1] != 97 or text[at + 2] != 108 or text[at + 3] != 115:
                        return REFUSED
                    if text[at + 4] != 101:
                        return REFUSED
                    at += 5
                else:
                    return REFUSED
            elif kind == INT:
                if text[at] == 45:  # negative
                    return REFUSED
                number_end = _number_end(text, at, end, False)
                if number_end < 0:
                    return REFUSED
                values[row, field] = _digits(text, at, number_end - at)
                at = number_end
            elif kind == ATTRS:
                attrs_end = _attrs_end(text, at, end, trusted_attrs, keys)
                if attrs_end < 0 or attrs_end - at > MAX_ATTRS_BYTES:
                    return REFUSED
                starts[row, field] = at
                ends[row, field] = attrs_end
                lengths[field] += attrs_end - at
                at = attrs_end
            elif kind == LIST:
                if text[at] != 91:
                    return REFUSED
                at += 1
                starts[row, field] = items
                count = 0
                while at < end and text[at] != 93:
                    if count > 0:
                        if text[at] != 44:
                            return REFUSED
                        at += 1
                    if at >= end or text[at] != 34:
                        return REFUSED
                    close, flags = _scan_string(text, at, end)
                    if close < 0 or flags & _NUL:
                        return REFUSED
                    if not _not_longer(text, at + 1, close, MAX_TEXT_LENGTH):
                        return REFUSED
                    if items == item_limit:
                        return MORE_ITEMS
                    item_starts[items] = at + 1
                    item_ends[items] = close
                    escaped[field] |= flags & _ESCAPED
                    lengths[field] += close - at - 1
                    items += 1
                    count += 1
                    at = close + 1
                if at >= end or count > MAX_LIST_ITEMS:
                    return REFUSED
                at += 1
                ends[row, field] = items
            else:  # a string
                if text[at] != 34:
                    return REFUSED
                close, flags = _scan_string(text, at, end)
                if close < 0:
                    return REFUSED
                if kind == TIME:
                    if flags & _ESCAPED:
                        return REFUSED
                    micros = _time_micros(text, at + 1, close)
                    if micros == -(2**63):
                        return REFUSED
                    values[row, field] = micros
                elif not _text_value_valid(
                    kind,
                    text,
                    at + 1,
                    close,
                    flags,
                    required[field] != 0,
                    hex_lengths[field],
                    enum_bytes,
                    enum_offsets,
                    enum_ranges[field, 0],
                    enum_ranges[field, 1],
                ):
                    return REFUSED
                starts[row, field] = at + 1
                ends[row, field] = close
                escaped[field] |= flags & _ESCAPED
                lengths[field] += close - at - 1
                at = close + 1
            present[row, field] = 1
            for member in range(3):
                if goes_after[member, field]:
                    inserts[row, member] = at
            field += 1
            if at >= end:
                return REFUSED
            if text[at] == 44:
                at += 1
                continue
            if text[at] == 125:  # }
                at += 1
                break
            return REFUSED
        bounds[row, 1] = at
        for field in range(fields):
            if required[field] and present[row, field] == 0:
                return REFUSED
    if at != end - 1 or text[at] != 93:  # ]
        return REFUSED
    return ACCEPTED


@jit
def gather_columns(
    text: Any, starts: Any, ends: Any, fields: Any, unescape: Any, offsets: Any, data: Any
) -> int:
    """Copy each chosen field's values into ``data``, one field after another, undoing JSON
    escapes where ``unescape``; offsets[k] are field k's string offsets. Returns the bytes used."""
    at = 0
    for position in range(len(fields)):
        field = fields[position]
        for row in range(starts.shape[0]):
            offsets[position, row] = at
            if unescape[position]:
                at = _unescaped(text, starts[row, field], ends[row, field], data, at)
            else:
                at = put_bytes(data, at, text, starts[row, field], ends[row, field])
        offsets[position, starts.shape[0]] = at
    return at


@jit
def _unescaped(text: Any, start: int, end: int, data: Any, at: int) -> int:
    """Copy a string's JSON text undoing its escapes (the parse allowed only RFC 8785's)."""
    i = start
    while i < end:
        byte = text[i]
        if byte != 92:
            data[at] = byte
            at += 1
            i += 1
            continue
        letter = text[i + 1]
        if letter == 117:  # \u00XX
            data[at] = _hex_value(text[i + 4]) * 16 + _hex_value(text[i + 5])
            i += 6
        else:
            if letter == 98:
                data[at] = 8
            elif letter == 102:
                data[at] = 12
            elif letter == 110:
                data[at] = 10
            elif letter == 114:
                data[at] = 13
            elif letter == 116:
                data[at] = 9
            else:  # " or backslash
                data[at] = letter
            i += 2
        at += 1
    return at


_OBSERVED = np.frombuffer(b',"observed_time":', np.uint8)
_SEQ = np.frombuffer(b',"seq":', np.uint8)


@jit
def splice(
    text: Any,
    bounds: Any,
    inserts: Any,
    writer_member: Any,
    first_seq: int,
    observed_micros: int,
    out: Any,
    offsets: Any,
) -> None:
    """Write each record's canonical bytes and a newline: its text with the ledger's members in."""
    # The same for every row, so written once; 32 bytes hold the longest time text there is
    # ("-290308-12-21T19:59:05.224192Z", at the smallest int64).
    observed = np.empty(len(_OBSERVED) + 32, np.uint8)
    observed_end = put_bytes(observed, 0, _OBSERVED, 0, len(_OBSERVED))
    observed_end = put_time(observed, observed_end, observed_micros, day_cache())
    at = 0
    for row in range(len(bounds)):
        offsets[row] = at
        at = put_bytes(out, at, text, bounds[row, 0], inserts[row, 0])
        at = put_bytes(out, at, observed, 0, observed_end)
        at = put_bytes(out, at, text, inserts[row, 0], inserts[row, 1])
        at = put_bytes(out, at, _SEQ, 0, len(_SEQ))
        at = put_int(out, at, first_seq + row)
        at = put_bytes(out, at, text, inserts[row, 1], inserts[row, 2])
        at = put_bytes(out, at, writer_member, 0, len(writer_member))
        at = put_bytes(out, at, text, inserts[row, 2], bounds[row, 1])
        out[at] = 10  # newline
        at += 1
    offsets[len(bounds)] = at
