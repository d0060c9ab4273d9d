"""The building blocks of the compiled loops: numba's compile options and JSON text writers.

numba compiles these on first use and caches the machine code beside this package (or in the
user's cache directory). Integer division uses numpy's error model: no divisor here can be zero.
The loops release the GIL, so other threads run while they do.

numba checks a cached loop against its own module's file only: after editing this module, clear
the caches (``make clean-cache``), or loops in ``rebuild`` and ``textscan`` keep the old helpers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = [
    "copy_bytes",
    "day_cache",
    "inline",
    "jit",
    "load_int32",
    "load_int64",
    "load_word",
    "plain_run",
    "put_bytes",
    "put_bytes_below",
    "put_digits",
    "put_int",
    "put_time",
    "scratch_buffer",
]

_INT64_MIN = -(2**63)
_INT64_MIN_DIGITS = np.frombuffer(str(2**63).encode(), np.uint8)

_SCRATCH = threading.local()


def scratch_buffer(size: int) -> np.ndarray:
    """This thread's reusable byte buffer of at least ``size``: fresh pages cost more here than
    the writing. What it holds is valid until the thread's next call."""
    buffer: np.ndarray | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.buffer = np.empty(max(size, 1 << 20), np.uint8)
    return buffer


_Function = TypeVar("_Function", bound=Callable[..., Any])


def _compiled(function: _Function, **options: Any) -> _Function:
    try:
        compiled = numba.njit(cache=True, nogil=True, error_model="numpy", **options)(function)
    except RuntimeError:  # nowhere writable to cache: compile once per process instead
        compiled = numba.njit(nogil=True, error_model="numpy", **options)(function)
    return cast(_Function, compiled)


def jit(function: _Function) -> _Function:
    """A compiled loop, cached between processes."""
    return _compiled(function)


def inline(function: _Function) -> _Function:
    """A compiled helper, inlined into the loops that call it."""
    return _compiled(function, inline="always")


def _contiguous_bytes(array: Any) -> bool:
    """Whether a numba type is a contiguous one-dimensional array of bytes."""
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and array.dtype == types.uint8
    )


def _copy_bytes(
    typing_context: Any, out: Any, at: Any, source: Any, start: Any, count: Any
) -> tuple[Any, Callable[..., None]] | None:
    if not (_contiguous_bytes(out) and _contiguous_bytes(source)):
        return None  # the address arithmetic below assumes contiguous bytes
    signature = types.void(out, at, source, start, count)

    def generate(context: Any, builder: Any, sig: Any, args: Any) -> None:
        target = context.make_array(sig.args[0])(context, builder, args[0])
        origin = context.make_array(sig.args[2])(context, builder, args[2])
        target_at = context.cast(builder, args[1], sig.args[1], types.intp)
        origin_at = context.cast(builder, args[3], sig.args[3], types.intp)
        length = context.cast(builder, args[4], sig.args[4], types.intp)
        cgutils.raw_memcpy(  # type: ignore[no-untyped-call]
            builder,
            builder.gep(target.data, [target_at]),
            builder.gep(origin.data, [origin_at]),
            length,
            1,
        )

    return signature, generate


copy_bytes = cast(Callable[[Any, int, Any, int, int], None], intrinsic(_copy_bytes))
"""``out[at:at + count] = source[start:start + count]`` as one memcpy (byte arrays), for the
compiled loops: a loop numba compiles copies about a byte a nanosecond, memcpy several times
faster."""


def _store_word(
    typing_context: Any, data: Any, at: Any, word: Any
) -> tuple[Any, Callable[..., None]] | None:
    if not _contiguous_bytes(data):
        return None
    signature = types.void(data, at, types.uint64)

    def generate(context: Any, builder: Any, sig: Any, args: Any) -> None:
        array = context.make_array(sig.args[0])(context, builder, args[0])
        position = context.cast(builder, args[1], sig.args[1], types.intp)
        address = builder.bitcast(builder.gep(array.data, [position]), ir.IntType(64).as_pointer())
        builder.store(args[2], address, align=1)

    return signature, generate


def _loader(bits: int, result: Any) -> Callable[..., tuple[Any, Callable[..., Any]] | None]:
    """An intrinsic loading a little-endian integer of ``bits`` from any byte position of a byte
    array, as ``result`` (a signed result is sign-extended)."""

    def typer(typing_context: Any, data: Any, at: Any) -> tuple[Any, Callable[..., Any]] | None:
        if not _contiguous_bytes(data):
            return None
        signature = result(data, at)

        def generate(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            array = context.make_array(sig.args[0])(context, builder, args[0])
            position = context.cast(builder, args[1], sig.args[1], types.intp)
            pointer = builder.gep(array.data, [position])
            value = builder.load(builder.bitcast(pointer, ir.IntType(bits).as_pointer()), align=1)
            return builder.sext(value, ir.IntType(64)) if bits < 64 else value

        return signature, generate

    return typer


load_int32 = cast(Callable[[Any, int], int], intrinsic(_loader(32, types.int64)))
"""The int32 at byte ``at`` of a byte array (an Arrow offset), for the compiled loops."""
load_int64 = cast(Callable[[Any, int], int], intrinsic(_loader(64, types.int64)))
"""The int64 at byte ``at`` of a byte array (an Arrow integer or timestamp)."""


def _trailing_zeros(typing_context: Any, word: Any) -> tuple[Any, Callable[..., Any]] | None:
    signature = types.uint64(types.uint64)

    def generate(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return signature, generate


load_word = cast(Callable[[Any, int], Any], intrinsic(_loader(64, types.uint64)))
"""The eight bytes at byte ``at`` of a byte array, as one unsigned little-endian word."""
_store_word_at = cast(Callable[[Any, int, Any], None], intrinsic(_store_word))
_lowest_bit = cast(Callable[[Any], int], intrinsic(_trailing_zeros))

_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_DELETES = np.uint64(0x7F7F7F7F7F7F7F7F)
_SPACES = np.uint64(0x2020202020202020)


@inline
def plain_run(data: Any, at: int, end: int, ascii_only: bool) -> int:
    """The first position from ``at`` (before ``end``) of a byte a JSON string cannot hold as
    it is: a quote, a backslash or a control character, and (``ascii_only``) DEL or any byte
    over 0x7F; ``end`` if there is none. Eight bytes at a time (SWAR), which is what makes the
    common case, a run of plain ASCII, cheap."""
    while at + 8 <= end:
        word = load_word(data, at)
        inverted = ~word
        # A high bit flags a byte that is zero (after the xor) or below 0x20; borrows may flag
        # bytes above the first such byte, never below it, so the lowest flag is exact.
        flags = ((word ^ _QUOTES) - _ONES) & ~(word ^ _QUOTES)
        flags |= ((word ^ _BACKSLASHES) - _ONES) & ~(word ^ _BACKSLASHES)
        flags |= (word - _SPACES) & inverted
        if ascii_only:
            flags |= ((word ^ _DELETES) - _ONES) & ~(word ^ _DELETES)
            flags |= word
        flags &= _HIGHS
        if flags != 0:
            return at + (_lowest_bit(flags) >> 3)
        at += 8
    while at < end:
        byte = data[at]
        if byte == 34 or byte == 92 or byte < 0x20:  # noqa: PLR1714 - compiled as compares
            return at
        if ascii_only and byte >= 0x7F:
            return at
        at += 1
    return end


@inline
def put_bytes(out: Any, at: int, source: Any, start: int, end: int) -> int:
    """Copy ``source[start:end]`` to ``out`` at ``at``; returns where the copy ends.

    Short copies go eight bytes at a time and may write up to seven bytes past the end (never
    past ``out``'s): the writers here fill their output in order, so the next write covers them.
    They may also read up to seven bytes past ``end``, never past ``source``'s.
    """
    return put_bytes_below(out, at, source, start, end, len(source))


@inline
def put_bytes_below(out: Any, at: int, source: Any, start: int, end: int, limit: int) -> int:
    """``put_bytes``, reading nothing of ``source`` from ``limit`` on (where its buffer ends)."""
    count = end - start
    if count >= 64:
        copy_bytes(out, at, source, start, count)
        return at + count
    done = 0
    while done < count and start + done + 8 <= limit and at + done + 8 <= len(out):
        _store_word_at(out, at + done, load_word(source, start + done))
        done += 8
    while done < count:  # near the end of either array
        out[at + done] = source[start + done]
        done += 1
    return at + count


@inline
def put_int(out: Any, at: int, value: int) -> int:
    """Write an integer in decimal."""
    if value < 0:
        out[at] = 45  # -
        at += 1
        if value == _INT64_MIN:  # its negation overflows
            return put_bytes(out, at, _INT64_MIN_DIGITS, 0, len(_INT64_MIN_DIGITS))
        value = -value
    digits = 1
    while digits < len(_POWERS_OF_TEN) and value >= _POWERS_OF_TEN[digits]:
        digits += 1
    return put_digits(out, at, value, digits)


_POWERS_OF_TEN = np.array([10**k for k in range(19)], np.int64)


@inline
def put_digits(out: Any, at: int, value: int, width: int) -> int:
    """Write a non-negative integer as exactly ``width`` digits (its lowest), two at a time."""
    end = at + width
    while end - at >= 2:
        rest = value // 100
        _put_pair(out, end - 2, value - rest * 100)
        value = rest
        end -= 2
    if end > at:
        out[at] = 48 + value % 10
    return at + width


# "00" to "99": two digits a lookup, where dividing by ten for each digit costs several times more.
_DIGIT_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint8)


@inline
def _put_pair(out: Any, at: int, value: int) -> None:
    """Write 0..99 as two digits."""
    out[at] = _DIGIT_PAIRS[2 * value]
    out[at + 1] = _DIGIT_PAIRS[2 * value + 1]


_NO_DAY = _INT64_MIN  # a day number no time has


@inline
def day_cache() -> Any:
    """A fresh memory of the last day ``put_time`` wrote, for a compiled loop to pass it."""
    return np.full(4, _NO_DAY, np.int64)


@inline
def put_time(out: Any, at: int, micros: int, dates: Any) -> int:
    """``"YYYY-MM-DDTHH:MM:SS.ffffffZ"`` of a UTC time in µs since the epoch.

    ``dates`` (from ``day_cache``) remembers the last day
    written: times written together mostly share a day, and its date is most of the work.
    """
    seconds = micros // 1_000_000
    fraction = micros - seconds * 1_000_000
    days = seconds // 86400
    second_of_day = seconds - days * 86400
    if days != dates[0]:
        dates[0] = days
        dates[1], dates[2], dates[3] = _civil_date(days)
    year, month, day = dates[1], dates[2], dates[3]
    out[at] = 34
    # A year outside 0001..9999 is never stored (validation bounds it), so it is written in full:
    # a time shifted by 10,000 years must not rebuild to the text that was hashed.
    if 0 <= year <= 9999:
        _put_pair(out, at + 1, year // 100)
        _put_pair(out, at + 3, year % 100)
        at += 5
    else:
        at = put_int(out, at + 1, year)
    hour = second_of_day // 3600
    minute_and_second = second_of_day - hour * 3600
    minute = minute_and_second // 60
    out[at] = 45  # -
    _put_pair(out, at + 1, month)
    out[at + 3] = 45
    _put_pair(out, at + 4, day)
    out[at + 6] = 84  # T
    _put_pair(out, at + 7, hour)
    out[at + 9] = 58  # :
    _put_pair(out, at + 10, minute)
    out[at + 12] = 58
    _put_pair(out, at + 13, minute_and_second - minute * 60)
    out[at + 15] = 46  # .
    _put_pair(out, at + 16, fraction // 10000)
    _put_pair(out, at + 18, fraction // 100 % 100)
    _put_pair(out, at + 20, fraction % 100)
    out[at + 22] = 90  # Z
    out[at + 23] = 34
    return at + 24


@inline
def _civil_date(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian (year, month, day) of a day number (Howard Hinnant's
    civil_from_days)."""
    shifted = days + 719468
    era = shifted // 146097  # floor division: the C original adjusts for truncation instead
    day_of_era = shifted - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (1 if month <= 2 else 0), month, day
