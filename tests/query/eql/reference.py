"""A reference matcher for EQL sequences: clear, slow and written straight from docs/eql.md.

This module is the independent oracle the EQL engine is tested against, so it deliberately shares no
code with ``query.eql`` and never imports it. A query is given as plain Python data (a
:class:`Sequence` of :class:`Step`), records as a list of dicts; the answer is a list of
``(join_keys, row_ids)`` pairs, ``row_ids`` holding the input index of each step's event,
``None`` for a missing step (``![...]``).

The rules implemented, in the words of docs/eql.md "Sequences":

* Events are read in ordinal order: time, then the tiebreaker (if any; a null tiebreaker sorts
  last), then the input list index.
* The join key of a step is the shared ``by`` fields followed by the step's own ``by`` fields. A
  non-optional key field that is null keeps the event out of the step; an optional one may be null,
  and null then equals null.
* Each positive step holds at most one pending partial match per join key, the newest. For each
  event, from the last positive step to the first: if the event matches step ``i > 0`` and step
  ``i-1`` holds a pending match for the key, that match is taken off step ``i-1``; if the event's
  time minus the
  match's first event time exceeds maxspan the match is dropped, otherwise the event is appended (at
  the last step the sequence is complete, else it becomes step ``i``'s pending match). If the event
  matches the first step it starts a new pending match there.
* ``until``: an event matching it drops every pending match of its key whose last event is at or
  before it, after the event's own steps were applied: a match it completes is kept, one it
  advances or starts is dropped (Elasticsearch compares the ordinals inclusively).
* Missing steps are decided once a positive match is complete, by Elasticsearch's rules (see
  :func:`_missing_steps_allow`).
* Output is ordered by the ordinal of the last positive event; ``head``/``tail`` then keep the
  first or last N.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Key",
    "Sequence",
    "Step",
    "event_order",
    "field_value",
    "match_sequences",
    "time_micros",
]

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Key:
    """One join key field: a (dotted) field name, optional when written ``?name``."""

    name: str
    optional: bool = False


def _key(spec: Key | str) -> Key:
    if isinstance(spec, Key):
        return spec
    if spec.startswith("?"):
        return Key(spec[1:], optional=True)
    return Key(spec)


def _always(_record: Record) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    """One bracketed step ``[category where cond] by keys with runs=N``, or ``![...]`` if missing.

    ``category`` ``None`` means ``any``. ``where`` is called with the record and must return
    ``True`` for a match (anything else, including ``None`` for an EQL null, is no match).
    """

    category: str | None = None
    where: Predicate = _always
    by: tuple[Key | str, ...] = ()
    missing: bool = False
    runs: int = 1


@dataclass(frozen=True)
class Sequence:
    """``sequence [by ...] [with maxspan=...] steps... [until step] [| head N | tail N ...]``."""

    steps: tuple[Step, ...]
    by: tuple[Key | str, ...] = ()
    maxspan_ms: int | float | None = None
    until: Step | None = None
    pipes: tuple[tuple[str, int], ...] = field(default=())


def field_value(record: Record, name: str) -> Any:
    """The value of a (dotted) field, ``None`` if any part of the path is absent."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def time_micros(value: Any) -> int:
    """An event time as integer microseconds since the epoch.

    Accepts a ``datetime`` (naive means UTC), an ISO 8601 string, or epoch milliseconds as an int,
    a float or a numeric string such as ``"3"``.
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float):
        return round(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text) * 1000
        try:
            return round(float(text) * 1000)
        except ValueError:
            pass
        return time_micros(datetime.fromisoformat(text.replace("Z", "+00:00")))
    raise TypeError(f"not a time: {value!r}")


def event_order(
    records: Seq[Record], *, time_field: str = "time", tiebreaker: str | None = None
) -> list[int]:
    """Input indexes in ordinal order: time, then tiebreaker (nulls last), then list index."""

    def ordinal(index: int) -> tuple[Any, ...]:
        record = records[index]
        moment = time_micros(field_value(record, time_field))
        if tiebreaker is None:
            return (moment, index)
        tie = field_value(record, tiebreaker)
        return (moment, tie is None, 0 if tie is None else tie, index)

    return sorted(range(len(records)), key=ordinal)


@dataclass(frozen=True)
class _Partial:
    first_time: int  # microseconds, time of the first positive event
    events: tuple[int, ...]  # input indexes of the positive events so far
    last_position: int  # position in ordinal order of the last event


class _Matcher:
    def __init__(
        self,
        spec: Sequence,
        records: Seq[Record],
        *,
        category_field: str,
        time_field: str,
        tiebreaker: str | None,
    ) -> None:
        self.spec = spec
        self.records = records
        self.category_field = category_field
        self.shared = tuple(_key(k) for k in spec.by)
        self.steps = [step for step in spec.steps for _ in range(step.runs)]
        if not any(not step.missing for step in self.steps):
            raise ValueError("a sequence needs at least one positive step")
        widths = {len(self.shared) + len(step.by) for step in self.steps}
        if spec.until is not None:
            widths.add(len(self.shared) + len(spec.until.by))
        if len(widths) != 1:
            raise ValueError("all steps must have the same number of join key fields")
        self.positive = [i for i, step in enumerate(self.steps) if not step.missing]
        self.order = event_order(records, time_field=time_field, tiebreaker=tiebreaker)
        self.times = [time_micros(field_value(r, time_field)) for r in records]
        self.maxspan = None if spec.maxspan_ms is None else round(spec.maxspan_ms * 1000)

    # -- matching one record against one step -------------------------------------------------

    def matches(self, step: Step, record: Record) -> bool:
        if step.category is not None and field_value(record, self.category_field) != step.category:
            return False
        return step.where(record) is True

    def join_key(self, step: Step, record: Record) -> tuple[Any, ...] | None:
        """The step's join key for the record, ``None`` if a non-optional key field is null."""
        values = []
        for key in (*self.shared, *(_key(k) for k in step.by)):
            value = field_value(record, key.name)
            if value is None and not key.optional:
                return None
            values.append(value)
        return tuple(values)

    def hits(self, step: Step, key: tuple[Any, ...]) -> Iterable[int]:
        """Input indexes of the records that match ``step`` with join key ``key``."""
        for index, record in enumerate(self.records):
            if self.matches(step, record) and self.join_key(step, record) == key:
                yield index

    # -- the sequence state machine -----------------------------------------------------------

    def run(self) -> list[tuple[tuple[Any, ...], tuple[int | None, ...]]]:
        count = len(self.positive)
        pending: list[dict[tuple[Any, ...], _Partial]] = [{} for _ in range(count)]
        found: list[tuple[tuple[Any, ...], tuple[int | None, ...]]] = []
        for position, index in enumerate(self.order):
            record = self.records[index]
            moment = self.times[index]
            for p in reversed(range(count)):
                step = self.steps[self.positive[p]]
                if not self.matches(step, record):
                    continue
                key = self.join_key(step, record)
                if key is None:
                    continue
                if p == 0:
                    partial = _Partial(moment, (index,), position)
                else:
                    before = pending[p - 1].pop(key, None)
                    if before is None:
                        continue
                    if self.maxspan is not None and moment - before.first_time > self.maxspan:
                        continue
                    partial = _Partial(before.first_time, (*before.events, index), position)
                if p == count - 1:
                    if self._missing_steps_allow(key, partial.events):
                        found.append((key, self._with_missing(partial.events)))
                else:
                    pending[p][key] = partial
            until = self.spec.until
            if until is not None and self.matches(until, record):
                key = self.join_key(until, record)
                if key is not None:
                    for stage in pending:
                        held = stage.get(key)
                        if held is not None and held.last_position <= position:
                            del stage[key]
        for name, n in self.spec.pipes:
            if name == "head":
                found = found[:n]
            elif name == "tail":
                found = found[-n:] if n > 0 else []
            else:
                raise ValueError(f"unsupported pipe for sequences: {name}")
        return found

    def _with_missing(self, events: tuple[int, ...]) -> tuple[int | None, ...]:
        it = iter(events)
        return tuple(None if step.missing else next(it) for step in self.steps)

    def _missing_steps_allow(self, key: tuple[Any, ...], events: tuple[int, ...]) -> bool:
        """Elasticsearch's missing-event rules, as docs/eql.md states them.

        * A missing step between two positive steps rejects the match if an event with the key
          matches it with a time strictly between the times of the positive events around it.
        * Leading steps (before the first positive step): ``L`` is the latest time of a matching
          event with the key strictly before the first positive event. Trailing steps (after the
          last positive step): ``T`` is the earliest such time strictly after the last positive
          event.
        * Kept if: no leading/trailing steps; or a leading step exists and no ``L`` was found; or a
          trailing step exists and no ``T`` was found; or both exist and ``T - L > maxspan``; or
          only leading steps exist and ``last - L > maxspan``; or only trailing ones and
          ``T - first > maxspan``. Without maxspan no span exceeds it, so only the "not found"
          clauses can keep a match with leading or trailing steps.
        """
        times = [self.times[i] for i in events]
        first_positive, last_positive = self.positive[0], self.positive[-1]
        # Steps strictly between two positive steps: the window is the positive events around them.
        for s, step in enumerate(self.steps):
            if not step.missing or s < first_positive or s > last_positive:
                continue
            before = max(p for p in range(len(self.positive)) if self.positive[p] < s)
            lower, upper = times[before], times[before + 1]
            if any(lower < self.times[i] < upper for i in self.hits(step, key)):
                return False
        leading = [self.steps[s] for s in range(first_positive)]
        trailing = [self.steps[s] for s in range(last_positive + 1, len(self.steps))]
        if not leading and not trailing:
            return True
        first, last = times[0], times[-1]
        latest = max(
            (
                self.times[i]
                for step in leading
                for i in self.hits(step, key)
                if self.times[i] < first
            ),
            default=None,
        )
        earliest = min(
            (
                self.times[i]
                for step in trailing
                for i in self.hits(step, key)
                if self.times[i] > last
            ),
            default=None,
        )
        if leading and latest is None:
            return True
        if trailing and earliest is None:
            return True
        if self.maxspan is None:
            return False  # no span can exceed an absent maxspan
        if leading and trailing:
            assert latest is not None and earliest is not None
            return earliest - latest > self.maxspan
        if leading:
            assert latest is not None
            return last - latest > self.maxspan
        assert earliest is not None
        return earliest - first > self.maxspan


def match_sequences(
    spec: Sequence,
    records: Seq[Record],
    *,
    category_field: str = "category",
    time_field: str = "time",
    tiebreaker: str | None = None,
) -> list[tuple[tuple[Any, ...], tuple[int | None, ...]]]:
    """All matches of ``spec`` over ``records``: ``(join_keys, row_ids)`` in output order."""
    matcher = _Matcher(
        spec,
        records,
        category_field=category_field,
        time_field=time_field,
        tiebreaker=tiebreaker,
    )
    return matcher.run()
