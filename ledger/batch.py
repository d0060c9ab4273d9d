"""Validation of a whole batch of client records, all or nothing.

The batch is serialised once by orjson and checked by the compiled parser in ``ingest``, which
accepts it only when every record is valid and already in canonical form. Anything else (including
every invalid batch) goes through the per-record validator in ``events``, the definition, which
names each problem or normalises the values (offsets, upper-case hex, nulls, datetimes); the
normalised batch then passes the parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from .errors import BatchTooLargeError
from .events import SERIALISE_OPTIONS, validate_batch

if TYPE_CHECKING:
    from .ingest import ParsedBatch

__all__ = ["MAX_BATCH_BYTES", "CheckedBatch", "check_batch", "normalise"]

# A batch's text, columns and WAL frame are addressed with 32-bit offsets and lengths.
MAX_BATCH_BYTES = 1 << 30
_ONLY_DICTS = {dict}


@dataclass(frozen=True)
class CheckedBatch:
    """A valid batch in canonical form: its records, and the parse of their canonical text."""

    records: Sequence[Any]
    parsed: ParsedBatch

    @property
    def columns(self) -> pa.Table:
        """The client columns as Arrow (attrs as its canonical text)."""
        return self.parsed.columns


def check_batch(records: Iterable[object], locations: Sequence[str] | None = None) -> CheckedBatch:
    """Validate a batch (all or nothing), raising ValidationError that names record and field."""
    # Imported here: numba's import (~0.1 s) is only for commands that write.
    from .ingest import parse_serialised

    listed = records if isinstance(records, list | tuple) else list(records)
    parsed = parse_serialised(listed, _serialised, lambda size: _check_size(size, len(listed)))
    if parsed is None:
        return normalise(listed, locations)
    return CheckedBatch(listed, parsed)


def _serialised(records: Sequence[object]) -> bytes | None:
    """orjson's sorted-key text of some records; None unless each is a dict with values orjson
    has a form for."""
    # Only dicts: orjson.Fragments could split or join records (text that parses as valid
    # records, though none of them is one). Checked a slice at a time, just before orjson reads
    # the same objects, as a pass of its own over the batch would cost a cache miss per record.
    if not set(map(type, records)) <= _ONLY_DICTS:
        return None
    try:
        return orjson.dumps(records, option=SERIALISE_OPTIONS)
    except TypeError:  # the validator names or normalises it
        return None


def normalise(records: Sequence[object], locations: Sequence[str] | None = None) -> CheckedBatch:
    """Validate record by record (naming every problem), then parse the normalised batch."""
    from .ingest import parse_batch

    events = validate_batch(records, locations)
    with_attrs = [
        {**e, "attrs": orjson.Fragment(e["attrs"])} if "attrs" in e else e for e in events
    ]
    text = orjson.dumps(with_attrs, option=orjson.OPT_SORT_KEYS)
    _check_size(len(text), len(events))
    parsed = parse_batch(text, len(events), trusted_attrs=True)
    if parsed is None:  # pragma: no cover - the two validators disagree: a bug, not bad input
        raise AssertionError("the normalised batch failed the compiled checks")
    return CheckedBatch(events, parsed)


def _check_size(size: int, rows: int) -> None:
    if size > MAX_BATCH_BYTES:
        raise BatchTooLargeError(
            f"batch rejected, nothing stored: its {rows} events are {size:,} bytes of JSON, "
            f"over the {MAX_BATCH_BYTES:,} one append may hold; append them in smaller batches"
        )
