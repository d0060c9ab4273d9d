"""Property tests: the EQL engine against independent Python answers, on random inputs.

* Sequences: random small event streams (three categories, join keys ``x``/``y``/null, small
  integer times with many ties, a tiebreaker sometimes) and random sequence queries (2-4 steps,
  runs, maxspan at and around the boundary, until, missing steps at the start, middle and end,
  shared and per-step ``by``) are built at once as EQL text and as a spec for the reference
  matcher (reference.py, written from docs/eql.md); the engine must give the reference's answer.
* Event queries: random conditions (``== != < <= > >=``, ``in``/``not in``/``in~``, ``:`` and
  ``like``/``like~`` wildcards, a few string functions, arithmetic with integer ``/``,
  ``and``/``or``/``not``, nulls) are built
  as EQL text and as a three-valued Python evaluation (``None`` is EQL's null; only ``True``
  matches), with ``head``/``tail``/``filter``/``sort``/``unique`` pipes.

Hypothesis runs derandomized, so CI sees the same cases on every run.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reference import Key, Sequence, Step, event_order, match_sequences

from query.eql import parse, run_eql_records

Tri = bool | None  # EQL's three-valued logic: None is null
Record = Mapping[str, Any]

SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CATEGORIES = ("a", "b", "c")
KEY_VALUES = ("x", "y", "x", "y", None)
# Non-negative: an integer field mixing signs loads as DECIMAL and breaks integer ``/``
# (test_conformance.py, xfail); floats carry the negative numbers instead.
NUMBERS = (0, 1, 2, 3, None)
# Values chosen to catch LIKE translation slips (``_`` and ``%`` are literal in EQL) and case.
STRINGS = ("foo", "Foo", "FOO.exe", "bar", "", "a_c", "abc", "50%", "5x0", "f*o", None)
STRING_LITERALS = ("foo", "Foo", "bar", "a_c", "abc", "50%", "", "f*o", "FOO.EXE")
COLON_PATTERNS = ("foo", "f*", "*o", "F*O*", "a_c", "*%", "*.exe", "", "*", "f*o", "*_*")
LIKE_PATTERNS = (*COLON_PATTERNS, "?oo", "a?c", "5?0", "???")
FLOATS = (0.5, -1.5, 2.0, 0.0, None)
BASE_MS = 1_700_000_000_000


# -- conditions: EQL text plus a three-valued Python evaluation ---------------------------------


@dataclass(frozen=True)
class Cond:
    eql: str
    fn: Callable[[Record], Tri]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wildcard(pattern: str, *, question: bool, fold: bool) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?" and question:
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))


def fold(value: str) -> str:
    return value.lower()


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def compare(field: str, op: str, value: Any) -> Cond:
    literal = quote(value) if isinstance(value, str) else str(value)

    def fn(r: Record) -> Tri:
        v = r[field]
        return None if v is None else _OPS[op](v, value)

    return Cond(f"{field} {op} {literal}", fn)


def null_test(field: str, negate: bool) -> Cond:
    if negate:
        return Cond(f"{field} != null", lambda r: r[field] is not None)
    return Cond(f"{field} == null", lambda r: r[field] is None)


def membership(field: str, values: tuple[Any, ...], kind: str) -> Cond:
    text = ", ".join(quote(v) if isinstance(v, str) else str(v) for v in values)

    def fn(r: Record) -> Tri:
        v = r[field]
        if v is None:
            return None
        if kind == "in~":
            return fold(v) in {fold(x) for x in values}
        found = v in values
        return not found if kind == "not in" else found

    return Cond(f"{field} {kind} ({text})", fn)


def pattern_match(patterns: tuple[str, ...], kind: str) -> Cond:
    question = kind != ":"
    folded = kind in (":", "like~")
    compiled = [wildcard(p, question=question, fold=folded) for p in patterns]
    right = quote(patterns[0]) if len(patterns) == 1 else f"({', '.join(map(quote, patterns))})"

    def fn(r: Record) -> Tri:
        v = r["s"]
        if v is None:
            return None
        return any(c.fullmatch(v) for c in compiled)

    return Cond(f"s {kind} {right}", fn)


def string_function(name: str, argument: str) -> Cond:
    def fn(r: Record) -> Tri:
        v = r["s"]
        if v is None:
            return None
        a, b = (fold(v), fold(argument)) if name.endswith("~") else (v, argument)
        if name.startswith("startsWith"):
            return a.startswith(b)
        if name.startswith("endsWith"):
            return a.endswith(b)
        return b in a

    return Cond(f"{name}(s, {quote(argument)})", fn)


def length_compare(op: str, value: int) -> Cond:
    def fn(r: Record) -> Tri:
        v = r["s"]
        return None if v is None else _OPS[op](len(v), value)

    return Cond(f"length(s) {op} {value}", fn)


def _truncating(op: str, a: Any, b: Any) -> Any:
    if op == "/":
        if isinstance(a, int) and isinstance(b, int):
            quotient = abs(a) // abs(b)
            return quotient if (a < 0) == (b < 0) else -quotient
        return a / b
    if op == "%":
        return a % b  # only used with a non-negative left side
    return {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](a, b)


def arithmetic(field: str, op: str, operand: int, cmp: str, value: int) -> Cond:
    """``field op operand cmp value``: integer ``/`` truncates toward zero (docs/eql.md)."""

    def fn(r: Record) -> Tri:
        v = r[field]
        return None if v is None else _OPS[cmp](_truncating(op, v, operand), value)

    return Cond(f"{field} {op} {operand} {cmp} {value}", fn)


def conjunction(a: Cond, b: Cond) -> Cond:
    def fn(r: Record) -> Tri:
        x, y = a.fn(r), b.fn(r)
        if x is False or y is False:
            return False
        if x is None or y is None:
            return None
        return True

    return Cond(f"({a.eql}) and ({b.eql})", fn)


def disjunction(a: Cond, b: Cond) -> Cond:
    def fn(r: Record) -> Tri:
        x, y = a.fn(r), b.fn(r)
        if x is True or y is True:
            return True
        if x is None or y is None:
            return None
        return False

    return Cond(f"({a.eql}) or ({b.eql})", fn)


def negation(a: Cond) -> Cond:
    def fn(r: Record) -> Tri:
        x = a.fn(r)
        return None if x is None else not x

    return Cond(f"not ({a.eql})", fn)


TRUE = Cond("true", lambda r: True)
ops = st.sampled_from(tuple(_OPS))
atoms = st.one_of(
    st.builds(compare, st.just("n"), ops, st.integers(0, 3)),
    st.builds(compare, st.just("s"), ops, st.sampled_from(STRING_LITERALS)),
    st.builds(null_test, st.sampled_from(("n", "s", "f")), st.booleans()),
    st.builds(compare, st.just("f"), ops, st.sampled_from((0, 0.5, -1.5, 2))),
    st.builds(
        arithmetic,
        st.sampled_from(("n", "f")),
        st.sampled_from(("+", "-", "*", "/")),
        st.integers(1, 3),
        ops,
        st.integers(-2, 4),
    ),
    st.builds(arithmetic, st.just("n"), st.just("%"), st.integers(1, 3), ops, st.integers(0, 2)),
    st.builds(
        membership,
        st.just("n"),
        st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True).map(tuple),
        st.sampled_from(("in", "not in")),
    ),
    st.builds(
        membership,
        st.just("s"),
        st.lists(st.sampled_from(STRING_LITERALS), min_size=1, max_size=3, unique=True).map(tuple),
        st.sampled_from(("in", "not in", "in~")),
    ),
    st.builds(
        pattern_match,
        st.lists(st.sampled_from(COLON_PATTERNS), min_size=1, max_size=3).map(tuple),
        st.just(":"),
    ),
    st.builds(
        pattern_match,
        st.lists(st.sampled_from(LIKE_PATTERNS), min_size=1, max_size=2).map(tuple),
        st.sampled_from(("like", "like~")),
    ),
    st.builds(
        string_function,
        st.sampled_from(
            (
                "startsWith",
                "startsWith~",
                "endsWith",
                "endsWith~",
                "stringContains",
                "stringContains~",
            )
        ),
        st.sampled_from(("f", "F", "o", "exe", "", "_", "%", ".EXE")),
    ),
    st.builds(length_compare, ops, st.integers(0, 4)),
)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(conjunction, inner, inner),
        st.builds(disjunction, inner, inner),
        st.builds(negation, inner),
    ),
    max_leaves=4,
)
step_conditions = st.sampled_from(("true", "true", "true", "n", "any")).flatmap(
    lambda kind: {
        "true": st.just(TRUE),
        "n": st.builds(compare, st.just("n"), ops, st.integers(0, 3)),
        "any": atoms,
    }[kind]
)


# -- event streams ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    records: list[dict[str, Any]]
    tiebreaker: str | None
    unit_ms: int  # event times are small integers times this


def to_time(ms: int, form: str) -> Any:
    if form == "int":
        return ms
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    if form == "datetime":
        return moment
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@st.composite
def streams(draw: st.DrawFn, min_events: int = 1, max_events: int = 14) -> Stream:
    unit_ms = draw(st.sampled_from((1, 1000)))
    form = draw(st.sampled_from(("int", "datetime", "iso")))
    count = draw(st.integers(min_events, max_events))
    span = draw(st.integers(0, 8))
    records = []
    for _ in range(count):
        ticks = draw(st.integers(0, span))
        records.append(
            {
                "category": draw(st.sampled_from(CATEGORIES)),
                "time": to_time(BASE_MS + ticks * unit_ms, form),
                "k": draw(st.sampled_from(KEY_VALUES)),
                "j": draw(st.sampled_from(KEY_VALUES)),
                "n": draw(st.sampled_from(NUMBERS)),
                "s": draw(st.sampled_from(STRINGS)),
                "f": draw(st.sampled_from(FLOATS)),
                "tb": draw(st.integers(0, 3)),
            }
        )
    # A field that is null in every record has no type; the engine mishandles comparisons with
    # such a column (test_conformance.py, xfail), so the random streams give n and s a value.
    if all(r["n"] is None for r in records):
        records[0]["n"] = draw(st.integers(0, 3))
    if all(r["s"] is None for r in records):
        records[0]["s"] = draw(st.sampled_from(STRINGS[:-1]))
    if all(r["f"] is None for r in records):
        records[0]["f"] = draw(st.sampled_from(FLOATS[:-1]))
    tiebreaker = draw(st.sampled_from((None, "tb")))
    return Stream(records, tiebreaker, unit_ms)


def run_engine(query: str, stream: Stream, **options: Any) -> Any:
    return run_eql_records(query, stream.records, tiebreaker=stream.tiebreaker, **options)


def assert_round_trip(query: str) -> None:
    node = parse(query)
    assert parse(node.render()) == node


# -- sequences ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenStep:
    category: str | None
    cond: Cond
    keys: tuple[str, ...]
    missing: bool
    runs: int

    def eql(self) -> str:
        text = f"{'!' if self.missing else ''}[{self.category or 'any'} where {self.cond.eql}]"
        if self.keys:
            text += " by " + ", ".join(self.keys)
        if self.runs > 1:
            text += f" with runs={self.runs}"
        return text

    def spec(self) -> Step:
        where = self.cond.fn
        return Step(
            category=self.category,
            where=lambda r: where(r) is True,
            by=tuple(Key(k.lstrip("?"), k.startswith("?")) for k in self.keys),
            missing=self.missing,
            runs=self.runs,
        )


@dataclass(frozen=True)
class GenSequence:
    eql: str
    spec: Sequence


@st.composite
def sequence_queries(draw: st.DrawFn, unit_ms: int) -> GenSequence:
    optional = draw(st.booleans())
    mark = "?" if optional else ""
    shared = draw(st.sampled_from(((), (), ("k",), ("k",), ("j",), ("k", "j"))))
    per_step = draw(st.sampled_from((False, False, True)))
    shared = tuple(mark + k for k in shared)

    def step_keys() -> tuple[str, ...]:
        return (mark + draw(st.sampled_from(("k", "j"))),) if per_step else ()

    category = st.sampled_from((*CATEGORIES, None, None))
    clauses = []
    for _ in range(draw(st.sampled_from((2, 2, 3, 3, 4)))):
        clauses.append(
            GenStep(
                category=draw(category),
                cond=draw(step_conditions),
                keys=step_keys(),
                missing=draw(st.sampled_from((False, False, False, False, True))),
                runs=draw(st.sampled_from((1, 1, 1, 1, 1, 1, 2, 2, 3))),
            )
        )
    if all(c.missing for c in clauses):
        first = clauses[0]
        clauses[0] = GenStep(first.category, first.cond, first.keys, False, first.runs)
    # Keep at most four positive events per match, so that matches are common.
    while sum(c.runs for c in clauses if not c.missing) > 4:
        i = max(range(len(clauses)), key=lambda i: 0 if clauses[i].missing else clauses[i].runs)
        c = clauses[i]
        clauses[i] = GenStep(c.category, c.cond, c.keys, c.missing, 1)
        if sum(c.runs for c in clauses if not c.missing) > 4:
            clauses.pop(i)
    maxspan_ms: int | None = None
    header = "sequence"
    if shared:
        header += " by " + ", ".join(shared)
    if draw(st.integers(0, 9)) < 6:
        ticks = draw(st.integers(1, 6))
        maxspan_ms = ticks * unit_ms
        if unit_ms == 1:
            text = f"{ticks}ms"
        else:
            text = draw(st.sampled_from((f"{ticks}s", f"{ticks}", f"{ticks * 1000}ms")))
        header += f" with maxspan={text}"
    positive = [i for i, c in enumerate(clauses) if not c.missing]
    leading, trailing = positive[0] > 0, positive[-1] < len(clauses) - 1
    if maxspan_ms is None and leading and trailing:
        # docs/eql.md is ambiguous here (see the report): drop the trailing missing steps.
        clauses = clauses[: positive[-1] + 1]
    until = None
    if draw(st.integers(0, 3)) == 0:
        until = GenStep(draw(category), draw(step_conditions), step_keys(), False, 1)
    pipes: tuple[tuple[str, int], ...] = ()
    if draw(st.integers(0, 4)) == 0:
        pipes = ((draw(st.sampled_from(("head", "tail"))), draw(st.integers(1, 3))),)
    text = " ".join([header, *(c.eql() for c in clauses)])
    if until is not None:
        text += " until " + until.eql()
    for name, n in pipes:
        text += f" | {name} {n}"
    spec = Sequence(
        steps=tuple(c.spec() for c in clauses),
        by=tuple(Key(k.lstrip("?"), k.startswith("?")) for k in shared),
        maxspan_ms=maxspan_ms,
        until=None if until is None else until.spec(),
        pipes=pipes,
    )
    return GenSequence(text, spec)


@st.composite
def sequence_cases(draw: st.DrawFn) -> tuple[Stream, GenSequence]:
    stream = draw(streams(min_events=4, max_events=20))
    return stream, draw(sequence_queries(stream.unit_ms))


@settings(SETTINGS, max_examples=320)
@given(sequence_cases())
def test_sequences_agree_with_reference(case: tuple[Stream, GenSequence]) -> None:
    stream, query = case
    expected = match_sequences(query.spec, stream.records, tiebreaker=stream.tiebreaker)
    result = run_engine(query.eql, stream)
    assert result.kind == "sequences", query.eql
    found = [(tuple(m.join_keys), tuple(m.row_ids)) for m in result.sequences]
    assert found == expected, query.eql
    assert_round_trip(query.eql)
    event(f"sequences found: {min(len(expected), 3)}{'+' if len(expected) >= 3 else ''}")
    event(f"missing steps: {any(s.missing for s in query.spec.steps)}")


# -- event queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenEvents:
    eql: str
    category: str | None
    cond: Cond
    pipes: tuple[tuple[str, Any], ...]


@st.composite
def event_queries(draw: st.DrawFn) -> GenEvents:
    category = draw(st.sampled_from((*CATEGORIES, None)))
    cond = draw(conditions)
    pipes: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(("head", "tail", "filter", "sort", "unique")))
        if name == "filter":
            pipes.append((name, draw(atoms)))
        elif name in ("sort", "unique"):
            # Fields without nulls: where nulls sort, and whether null is a unique value, is not
            # in docs/eql.md. Ties keep the order they had (the ordinal, or the previous sort).
            field = draw(st.sampled_from(("tb", "category")))
            desc = name == "sort" and draw(st.booleans())
            pipes.append((name, (field, desc)))
        else:
            pipes.append((name, draw(st.integers(1, 6))))
    text = f"{category or 'any'} where {cond.eql}"
    for name, argument in pipes:
        if name == "filter":
            text += f" | filter {argument.eql}"
        elif name in ("sort", "unique"):
            text += f" | {name} {argument[0]}{' desc' if argument[1] else ''}"
        else:
            text += f" | {name} {argument}"
    return GenEvents(text, category, cond, tuple(pipes))


def expected_events(query: GenEvents, stream: Stream) -> list[int]:
    records = stream.records
    rows = [
        i
        for i in event_order(records, tiebreaker=stream.tiebreaker)
        if (query.category is None or records[i]["category"] == query.category)
        and query.cond.fn(records[i]) is True
    ]
    for name, argument in query.pipes:
        if name == "head":
            rows = rows[:argument]
        elif name == "tail":
            rows = rows[max(0, len(rows) - argument) :]
        elif name == "filter":
            rows = [i for i in rows if argument.fn(records[i]) is True]
        elif name == "sort":
            field, desc = argument
            rows = sorted(rows, key=lambda i: records[i][field], reverse=desc)  # stable
        else:
            seen: set[Any] = set()
            firsts = []
            for i in rows:
                if records[i][argument[0]] not in seen:
                    seen.add(records[i][argument[0]])
                    firsts.append(i)
            rows = firsts
    return rows


@settings(SETTINGS, max_examples=180)
@given(streams(max_events=14), event_queries())
def test_event_queries_agree_with_python(stream: Stream, query: GenEvents) -> None:
    result = run_engine(query.eql, stream)
    assert result.kind == "events", query.eql
    expected = expected_events(query, stream)
    assert list(result.row_ids) == expected, query.eql
    assert_round_trip(query.eql)
    event(f"events found: {min(len(expected), 3)}{'+' if len(expected) >= 3 else ''}")
