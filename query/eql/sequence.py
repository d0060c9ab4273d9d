"""Compile a sequence to set-based SQL: one window pass per step, no per-event loop.

For each join key, events are numbered in order (``__pos``). A step ``i`` (positive steps only)
*receives* a match at event ``g`` when ``g`` matches step ``i``, the newest event ``f`` before ``g``
that received a match at step ``i-1`` exists, no event strictly between ``f`` and ``g`` matched step
``i`` (it would have taken that match) or ``until`` (it would have dropped it), and the
span from the match's first event to ``g`` is within maxspan: the per-key "newest pending
match per step" state machine of docs/eql.md, expressed with running maxima over window frames.
"""

from __future__ import annotations

from collections.abc import Sequence as Many
from dataclasses import dataclass

import sqlglot.expressions as exp

from .ast import Expr, Field, Sequence, Step
from .errors import EqlError
from .expressions import Compiler, Typed
from .source import Kind

__all__ = ["SequenceColumns", "SequencePlan", "compile_sequence", "expand_steps", "key_sql"]

KEY = "__k{}"
POS = "__pos"
TIME = "__t"
ID = "__id"
PATH = "__path"
TIMES = "__times"
UNTIL = "__until"


@dataclass(frozen=True)
class SequenceColumns:
    """What a compiled sequence returns per match: keys, ids of positive steps, their order."""

    key_count: int
    missing: tuple[bool, ...]


@dataclass(frozen=True)
class SequencePlan:
    """The SELECT of one row per completed sequence, and how to read its columns."""

    select: exp.Select
    columns: SequenceColumns


def expand_steps(sequence: Sequence) -> list[Step]:
    """Each step repeated as its ``runs`` say."""
    return [step for step in sequence.steps for _ in range(step.runs)]


def key_sql(compiler: Compiler, keys: tuple[Expr, ...]) -> list[Typed]:
    """Join-key expressions, JSON values read as text so keys compare as values."""
    typed = [compiler.compile(k) for k in keys]
    for node, value in zip(keys, typed, strict=True):
        if value.kind in (Kind.LIST, Kind.STRUCT):
            raise EqlError(f"the join key {node.render()!r} is a {value.kind.value}")
    return [
        Typed(compiler.json_text(t.sql), Kind.STRING) if t.kind is Kind.JSON else t for t in typed
    ]


def _window(
    function: exp.Expr, keys: Many[exp.Expr], order: Many[exp.Expr], preceding: bool
) -> exp.Window:
    spec = None
    if preceding:
        spec = exp.WindowSpec(
            kind="ROWS",
            start="UNBOUNDED",
            start_side="PRECEDING",
            end=exp.Literal.number(1),
            end_side="PRECEDING",
        )
    return exp.Window(
        this=function,
        partition_by=list(keys) or None,
        order=exp.Order(expressions=[exp.Ordered(this=o, nulls_first=False) for o in order]),
        spec=spec,
    )


def _when(flag: str, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=exp.column(flag), true=value)])


def present(keys: tuple[Expr, ...], typed: list[Typed]) -> list[exp.Expr]:
    """Conditions that the non-optional join keys are not null (an optional ``?key`` may be)."""
    return [
        exp.not_(exp.Is(this=value.sql, expression=exp.null()))
        for node, value in zip(keys, typed, strict=True)
        if not (isinstance(node, Field) and node.optional)
    ]


class _Builder:
    def __init__(self, compiler: Compiler, sequence: Sequence) -> None:
        self.compiler = compiler
        self.source = compiler.source
        self.sequence = sequence
        self.steps = expand_steps(sequence)
        self.positive = [i for i, s in enumerate(self.steps) if not s.missing]
        widths = {len(sequence.by) + len(s.by) for s in self.steps}
        if sequence.until is not None:
            widths.add(len(sequence.by) + len(sequence.until.by))
        if len(widths) != 1:
            raise EqlError("every step of a sequence must have the same number of join keys")
        self.key_count = widths.pop()
        self.keys: list[exp.Expr] = [exp.column(KEY.format(i)) for i in range(self.key_count)]
        self.ctes: list[tuple[str, exp.Select]] = []

    def step_keys(self, step: Step) -> list[Typed]:
        return key_sql(self.compiler, self.sequence.by + step.by)

    def order_columns(self) -> list[exp.Column]:
        return [exp.column(TIME)] + [
            exp.column(f"__o{i}") for i in range(len(self.source.order_keys()) - 1)
        ]

    def candidates(self) -> exp.Select:
        """One row per (event, join key) that some step or until may use, with a flag per step."""
        branches: list[tuple[Step, list[int], bool]] = []
        by_step = [
            (s, [i for i, t in enumerate(self.steps) if t is s]) for s in self.sequence.steps
        ]
        for step, indexes in by_step:
            positive = [self.positive.index(i) for i in indexes if i in self.positive]
            if positive:
                branches.append((step, positive, False))
        if self.sequence.until is not None:
            branches.append((self.sequence.until, [], True))
        rendered = {tuple(k.render() for k in self.sequence.by + s.by) for s, _, _ in branches}
        flags = len(self.positive)
        if len(rendered) == 1:
            return self._single_scan(branches, flags)
        return self._union_scan(branches, flags)

    def _projection(self, step: Step) -> list[exp.Expr]:
        order = self.source.order_keys()
        columns: list[exp.Expr] = [
            exp.alias_(exp.UnixMicros(this=order[0]), TIME),
            *[exp.alias_(o, f"__o{i}") for i, o in enumerate(order[1:])],
            exp.alias_(self.source.locator(), ID),
        ]
        for i, typed in enumerate(self.step_keys(step)):
            columns.append(exp.alias_(typed.sql, KEY.format(i)))
        return columns

    def _not_null_keys(self, step: Step) -> list[exp.Expr]:
        return present(self.sequence.by + step.by, self.step_keys(step))

    def _single_scan(self, branches: list[tuple[Step, list[int], bool]], flags: int) -> exp.Select:
        conditions = [(self.compiler.event_query(s.query), idx, u) for s, idx, u in branches]
        select = exp.select(*self._projection(branches[0][0]))
        for flag in range(flags):
            tests = [c for c, idx, _ in conditions if flag in idx]
            select = select.select(exp.alias_(exp.or_(*tests), f"__m{flag}"), copy=False)
        until = [c for c, _, is_until in conditions if is_until]
        until_flag: exp.Expr = exp.or_(*until) if until else exp.false()
        select = select.select(exp.alias_(until_flag, UNTIL), copy=False)
        where = exp.and_(
            exp.or_(*[c for c, _, _ in conditions]), *self._not_null_keys(branches[0][0])
        )
        return select.from_(exp.to_table(self.source.table)).where(where, copy=False)

    def _union_scan(self, branches: list[tuple[Step, list[int], bool]], flags: int) -> exp.Select:
        parts: list[exp.Select] = []
        for step, indexes, is_until in branches:
            columns = self._projection(step)
            for i in range(self.key_count):
                aliased = columns[-self.key_count + i]
                assert isinstance(aliased, exp.Alias)
                columns[-self.key_count + i] = exp.alias_(
                    exp.cast(aliased.this, "VARCHAR"), KEY.format(i)
                )
            columns += [
                exp.alias_(exp.true() if f in indexes else exp.false(), f"__m{f}")
                for f in range(flags)
            ]
            columns.append(exp.alias_(exp.true() if is_until else exp.false(), UNTIL))
            where = exp.and_(self.compiler.event_query(step.query), *self._not_null_keys(step))
            parts.append(exp.select(*columns).from_(exp.to_table(self.source.table)).where(where))
        union: exp.Query = parts[0]
        for part in parts[1:]:
            union = exp.union(union, part, distinct=False)
        names = [TIME] + [f"__o{i}" for i in range(len(self.source.order_keys()) - 1)] + [ID]
        names += [KEY.format(i) for i in range(self.key_count)]
        groups = [exp.column(n) for n in names]
        aggregates = [
            exp.alias_(exp.func("BOOL_OR", exp.column(f)), f)
            for f in [f"__m{i}" for i in range(flags)] + [UNTIL]
        ]
        return exp.select(*groups, *aggregates).from_(union.subquery("u")).group_by(*groups)

    def build(self) -> SequencePlan:
        self.ctes.append(("__cand", self.candidates()))
        source = "__cand"
        if len(self.positive) > 1:
            self.ctes.append(("__span", self._spans()))
            self.ctes.append(("__live", self._live()))
            source = "__live"
        first = exp.select(
            exp.Star(),
            exp.alias_(
                _window(exp.RowNumber(), self.keys, self.order_columns(), preceding=False), POS
            ),
            exp.alias_(exp.column("__m0"), "__r0"),
            exp.alias_(exp.column(TIME), "__s0"),
        ).from_(source)
        self.ctes.append(("__step0", first))
        for step in range(1, len(self.positive)):
            self.ctes.append((f"__step{step}", self._advance(step)))
        self.ctes.append(("__done", self._chains()))
        select = exp.select(
            *[exp.column(KEY.format(i), table="c") for i in range(self.key_count)],
            exp.column(PATH, table="c"),
        ).from_(exp.to_table("__done").as_("c"))
        for condition in self._missing_conditions():
            select = select.where(condition, copy=False)
        select = select.order_by(
            *[
                exp.Ordered(this=exp.column(c.name, table="c"), nulls_first=False)
                for c in self.order_columns()
            ],
            copy=False,
        )
        for name, cte in self.ctes:
            select = select.with_(name, as_=cte, copy=False)
        return SequencePlan(
            select, SequenceColumns(self.key_count, tuple(s.missing for s in self.steps))
        )

    def _spans(self) -> exp.Select:
        """Per join key, the first event of the first step and the last of the last step.

        Only keys with both can complete a match, and only events between those two times can
        take part: a hash aggregate and join drop the rest before any window sorts them.
        """
        last = len(self.positive) - 1
        first_time = exp.Min(this=_when("__m0", exp.column(TIME)))
        last_time = exp.Max(this=_when(f"__m{last}", exp.column(TIME)))
        spans = exp.select(
            *self.keys, exp.alias_(first_time, "__from"), exp.alias_(last_time, "__to")
        ).from_("__cand")
        spans = spans.group_by(*self.keys) if self.keys else spans
        return spans.having(exp.LTE(this=exp.column("__from"), expression=exp.column("__to")))

    def _live(self) -> exp.Select:
        """The candidates that can take part in a match (see ``_spans``)."""
        same_key = [
            exp.NullSafeEQ(
                this=exp.column(k.name, table="c"), expression=exp.column(k.name, table="s")
            )
            for k in self.keys
        ]
        within = exp.Between(
            this=exp.column(TIME, table="c"),
            low=exp.column("__from", table="s"),
            high=exp.column("__to", table="s"),
        )
        joined = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("c")))
        return joined.from_(exp.to_table("__cand").as_("c")).join(
            exp.to_table("__span").as_("s"),
            on=exp.and_(*same_key, within) if same_key else within,
            join_type="inner",
        )

    def _chains(self) -> exp.Select:
        """Completed matches, their events found by following each step's pointer back.

        A pass records only where the match it advanced came from (``__ptr``: that event's
        position under the key), so no row carries a growing list; the few completed matches
        walk the pointers back through the passes.
        """
        last = len(self.positive) - 1
        links = [f"__j{step}" for step in range(last + 1)]
        chain = exp.select(
            *[exp.column(k.name, table=links[last]) for k in self.keys],
            *[exp.column(c.name, table=links[last]) for c in self.order_columns()],
            exp.alias_(exp.Array(expressions=[exp.column(ID, table=j) for j in links]), PATH),
            exp.alias_(exp.Array(expressions=[exp.column(TIME, table=j) for j in links]), TIMES),
        ).from_(exp.to_table(f"__step{last}").as_(links[last]))
        for step in range(last - 1, -1, -1):
            later, here = links[step + 1], links[step]
            same_key = [
                exp.NullSafeEQ(
                    this=exp.column(k.name, table=here), expression=exp.column(k.name, table=later)
                )
                for k in self.keys
            ]
            pointer = exp.EQ(
                this=exp.column(POS, table=here),
                expression=exp.column(f"__ptr{step + 1}", table=later),
            )
            chain = chain.join(
                exp.to_table(f"__step{step}").as_(here),
                on=exp.and_(*same_key, pointer),
                join_type="inner",
                copy=False,
            )
        return chain.where(exp.column(f"__r{last}", table=links[last]), copy=False)

    def _advance(self, step: int) -> exp.Select:
        previous = f"__step{step - 1}"
        order: list[exp.Expr] = [exp.column(POS)]
        received = f"__r{step - 1}"

        def last(flag: str, value: exp.Expr, name: str) -> exp.Expr:
            function = exp.Max(this=_when(flag, value))
            return exp.alias_(_window(function, self.keys, order, preceding=True), name)

        # A match's start time never decreases along the positions that receive matches at one
        # step, so the newest match's start is the running maximum: no LAST_VALUE needed.
        inner = exp.select(
            exp.Star(),
            last(received, exp.column(POS), f"__last_r{step}"),
            last(f"__m{step}", exp.column(POS), f"__last_m{step}"),
            last(UNTIL, exp.column(POS), f"__last_u{step}"),
            last(received, exp.column(f"__s{step - 1}"), f"__prev_s{step}"),
        ).from_(previous)
        # Only rows a later pass can use: those that received a match, or may match later steps.
        keep = [exp.column(received), exp.column(UNTIL)] + [
            exp.column(f"__m{later}") for later in range(step, len(self.positive))
        ]
        inner = inner.where(exp.or_(*keep), copy=False)
        last_r = exp.column(f"__last_r{step}")
        receives = [
            exp.column(f"__m{step}"),
            exp.not_(exp.Is(this=last_r, expression=exp.null())),
            exp.func(
                "COALESCE",
                exp.LTE(this=exp.column(f"__last_m{step}"), expression=last_r),
                exp.true(),
            ),
            # An until event drops the pending matches whose last event is at or before it,
            # itself included (Elasticsearch compares ordinals inclusively).
            exp.func(
                "COALESCE",
                exp.LT(this=exp.column(f"__last_u{step}"), expression=last_r),
                exp.true(),
            ),
        ]
        if self.sequence.maxspan is not None:
            span = exp.Sub(this=exp.column(TIME), expression=exp.column(f"__prev_s{step}"))
            limit = self.compiler.parameters.bind(self.sequence.maxspan.micros, Kind.INTEGER)
            receives.append(exp.LTE(this=span, expression=limit))
        return exp.select(
            exp.Star(),
            exp.alias_(exp.and_(*receives), f"__r{step}"),
            exp.alias_(exp.column(f"__prev_s{step}"), f"__s{step}"),
            exp.alias_(last_r.copy(), f"__ptr{step}"),
        ).from_(inner.subquery(f"__w{step}"))

    # -- missing events --------------------------------------------------------------------

    def _missing_times(self, step: Step, bound: exp.Expr, before: bool) -> exp.Expr:
        """Latest (before) or earliest (after) time of an event matching ``step`` with the key."""
        time = exp.UnixMicros(this=self.source.order_keys()[0])
        compare = exp.LT if before else exp.GT
        aggregate = exp.Max(this=time) if before else exp.Min(this=time)
        return self._matching(step, aggregate, [compare(this=time, expression=bound)])

    def _matching(self, step: Step, projection: exp.Expr, extra: Many[exp.Expr]) -> exp.Subquery:
        conditions = [self.compiler.event_query(step.query), *extra]
        for i, typed in enumerate(self.step_keys(step)):
            outer = exp.column(KEY.format(i), table="c")
            conditions.append(exp.NullSafeEQ(this=typed.sql, expression=outer))
        inner = exp.select(projection).from_(exp.to_table(self.source.table).as_("m"))
        return inner.where(exp.and_(*conditions)).subquery()

    def _time_of(self, positive_index: int) -> exp.Expr:
        return exp.Bracket(
            this=exp.column(TIMES, table="c"),
            expressions=[exp.Literal.number(positive_index + 1)],
            offset=1,
        )

    def _missing_conditions(self) -> list[exp.Expr]:
        conditions: list[exp.Expr] = []
        first, last = self.positive[0], self.positive[-1]
        leading = [s for i, s in enumerate(self.steps) if i < first]
        trailing = [s for i, s in enumerate(self.steps) if i > last]
        for i, step in enumerate(self.steps):
            if not step.missing or i < first or i > last:
                continue
            before = max(p for p in self.positive if p < i)
            after = min(p for p in self.positive if p > i)
            time = exp.UnixMicros(this=self.source.order_keys()[0])
            window = [
                exp.GT(this=time, expression=self._time_of(self.positive.index(before))),
                exp.LT(this=time, expression=self._time_of(self.positive.index(after))),
            ]
            conditions.append(
                exp.not_(exp.Exists(this=self._matching(step, exp.Literal.number(1), window).this))
            )
        if not leading and not trailing:
            return conditions
        start = self._time_of(0)
        end = self._time_of(len(self.positive) - 1)
        lead = _extreme("GREATEST", [self._missing_times(s, start, before=True) for s in leading])
        trail = _extreme("LEAST", [self._missing_times(s, end, before=False) for s in trailing])
        maxspan = self.sequence.maxspan

        def beyond(low: exp.Expr, high: exp.Expr) -> exp.Expr:
            if maxspan is None:
                return exp.false()
            limit = self.compiler.parameters.bind(maxspan.micros, Kind.INTEGER)
            return exp.GT(this=exp.Sub(this=high, expression=low), expression=limit)

        keep: list[exp.Expr] = []
        if lead is not None:
            keep.append(exp.Is(this=lead, expression=exp.null()))
        if trail is not None:
            keep.append(exp.Is(this=trail, expression=exp.null()))
        if lead is not None and trail is not None:
            keep.append(beyond(lead, trail))
        elif lead is not None:
            keep.append(beyond(lead, end))
        elif trail is not None:
            keep.append(beyond(start, trail))
        conditions.append(exp.or_(*keep))
        return conditions


def _extreme(function: str, values: list[exp.Expr]) -> exp.Expr | None:
    """GREATEST or LEAST of the values (the value itself when there is one; None for none)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else exp.func(function, *values)


def compile_sequence(compiler: Compiler, sequence: Sequence) -> SequencePlan:
    """The SQL of a sequence: one row per completed match, in completion order."""
    return _Builder(compiler, sequence).build()
