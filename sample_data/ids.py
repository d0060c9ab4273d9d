"""Deterministic identifiers and timestamps, tuned for the per-event hot path."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

__all__ = ["MICROS_PER_HOUR", "MICROS_PER_MINUTE", "MICROS_PER_SECOND", "Ids", "to_micros"]

MICROS_PER_SECOND = 1_000_000
MICROS_PER_MINUTE = 60 * MICROS_PER_SECOND
MICROS_PER_HOUR = 60 * MICROS_PER_MINUTE

_MILLIS_PER_HOUR = 3_600_000


def to_micros(moment: datetime) -> int:
    """Return microseconds since the Unix epoch for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


_HEX4 = tuple(f"{value:04x}" for value in range(1 << 16))
_DIGITS3 = tuple(f"{value:03d}" for value in range(1000))
_MINUTES_SECONDS = tuple(
    f"{minute:02d}:{second:02d}." for minute in range(60) for second in range(60)
)
_RECORDS_PER_REFILL = 8192
# One pool record: the random tail of a UUIDv7 ("7aaa-Vbbb-cccccccccccc") and a span id.
_TAIL = 22
_RECORD = _TAIL + 16
_POOL_SIZE = _RECORD * _RECORDS_PER_REFILL
# The variant digit of a UUID is 8, 9, a or b: indexed by the ASCII code of a random hex digit.
_VARIANT_DIGITS = np.zeros(256, dtype=np.uint8)
for _digit in "0123456789abcdef":
    _VARIANT_DIGITS[ord(_digit)] = ord("89ab"[int(_digit, 16) & 3])


def _random_records(random_bytes: Callable[[int], bytes], count: int) -> str:
    """Format count pool records at once: random hex digits, then the UUID's fixed characters.

    bytes.hex makes every digit; numpy overwrites four columns in place, which is cheaper than
    rearranging the digits.
    """
    digits = bytearray(random_bytes(count * _RECORD // 2).hex().encode("ascii"))
    records = np.frombuffer(digits, dtype=np.uint8).reshape(count, _RECORD)
    records[:, 0] = ord("7")
    records[:, 4] = ord("-")
    records[:, 5] = _VARIANT_DIGITS[records[:, 5]]
    records[:, 9] = ord("-")
    return digits.decode("ascii")


class Ids:
    """Makes event ids (UUIDv7 layout), span/trace ids and RFC 3339 times from one seeded stream.

    Lookup tables and random digits formatted in bulk replace per-call integer formatting:
    this is the hot path of the simulator.
    """

    __slots__ = (
        "_bits",
        "_high",
        "_high_text",
        "_hour_start",
        "_hour_text",
        "_pool",
        "_pool_at",
        "_random_bytes",
    )

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits
        self._random_bytes = rng.randbytes
        self._pool = ""
        self._pool_at = _POOL_SIZE
        self._high = -1
        self._high_text = ""
        self._hour_start = -(1 << 62)  # in milliseconds; no hour yet
        self._hour_text = ""

    def _record(self) -> int:
        at = self._pool_at
        if at == _POOL_SIZE:
            self._pool = _random_records(self._random_bytes, _RECORDS_PER_REFILL)
            at = 0
        self._pool_at = at + _RECORD
        return at

    def _hour(self, millis: int) -> int:
        """Make the hour of millis the current one; return millis into it."""
        hour = millis // _MILLIS_PER_HOUR
        self._hour_start = hour * _MILLIS_PER_HOUR
        self._hour_text = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:")
        return millis - self._hour_start

    def stamp(self, micros: int) -> tuple[str, str, str]:
        """Return (event_id, time_text, span_id) for a new event at micros, in one call."""
        at = self._pool_at
        if at == _POOL_SIZE:
            self._pool = _random_records(self._random_bytes, _RECORDS_PER_REFILL)
            at = 0
        self._pool_at = at + _RECORD
        pool = self._pool
        millis = micros // 1000
        if millis >> 16 != self._high:
            self._high = millis >> 16
            self._high_text = f"{self._high:08x}-"
        into_hour = millis - self._hour_start
        if not 0 <= into_hour < _MILLIS_PER_HOUR:
            into_hour = self._hour(millis)
        return (
            f"{self._high_text}{_HEX4[millis & 0xFFFF]}-{pool[at : at + _TAIL]}",
            f"{self._hour_text}{_MINUTES_SECONDS[into_hour // 1000]}"
            f"{_DIGITS3[into_hour % 1000]}{_DIGITS3[micros % 1000]}Z",
            pool[at + _TAIL : at + _RECORD],
        )

    def event_id(self, micros: int) -> str:
        """Return a UUIDv7-style id: the event time in milliseconds, then 74 random bits."""
        return self.stamp(micros)[0]

    def time_text(self, micros: int) -> str:
        """Return the RFC 3339 UTC form with six fractional digits and a 'Z'."""
        millis = micros // 1000
        into_hour = millis - self._hour_start
        if not 0 <= into_hour < _MILLIS_PER_HOUR:
            into_hour = self._hour(millis)
        return (
            f"{self._hour_text}{_MINUTES_SECONDS[into_hour // 1000]}"
            f"{_DIGITS3[into_hour % 1000]}{_DIGITS3[micros % 1000]}Z"
        )

    def span_id(self) -> str:
        """Return a W3C span id: 16 random lowercase hex digits."""
        at = self._record()
        return self._pool[at + _TAIL : at + _RECORD]

    def trace_id(self) -> str:
        """Return a W3C trace id: 32 lowercase hex digits, never all zero."""
        return f"{self._bits(128) or 1:032x}"

    def token(self, prefix: str) -> str:
        """Return a short opaque id such as a session, task or credential id."""
        return f"{prefix}{self._bits(48):012x}"
