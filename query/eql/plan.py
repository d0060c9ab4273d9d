"""Compile a parsed query to one SQL statement: the body, then each pipe as a layer around it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
import sqlglot.expressions as exp

from .ast import Field, Join, Literal, Pipe, Query, Sample, Sequence
from .errors import EqlError
from .expressions import Compiler, Parameters
from .groups import compile_join, compile_sample
from .sequence import SequenceColumns, compile_sequence
from .source import EventSource

__all__ = ["COUNT_KEY", "LOCATOR", "Plan", "compile_query"]

LOCATOR = "__loc"
COUNT_KEY = "__key"


@dataclass(frozen=True)
class Plan:
    """A compiled query: the statement, its bound values and how to read its rows."""

    kind: str
    statement: exp.Select
    parameters: tuple[object, ...]
    sequence: SequenceColumns | None = None

    def sql(self, dialect: str = "duckdb", inline: bool = False, pretty: bool = False) -> str:
        """The statement's text in ``dialect``, with values inlined for display if asked."""
        try:
            sqlglot.Dialect.get_or_raise(dialect)
        except ValueError:
            raise EqlError(f"unknown SQL dialect {dialect!r}") from None
        statement: exp.Expr = self.statement
        if inline:
            statement = Parameters(list(self.parameters)).inline(statement)
        return statement.sql(dialect, pretty=pretty)


def compile_query(query: Query, source: EventSource, max_samples_per_key: int = 1) -> Plan:
    """The plan of ``query`` over ``source``."""
    parameters = Parameters()
    compiler = Compiler(source, parameters)
    body = query.body
    if isinstance(body, Sequence):
        sequence = compile_sequence(compiler, body)
        statement = _sequence_pipes(sequence.select, query.pipes)
        return Plan("sequences", statement, tuple(parameters.values), sequence.columns)
    if isinstance(body, Sample | Join):
        if query.pipes:
            _only_limits(query.pipes, "sample" if isinstance(body, Sample) else "join")
        if isinstance(body, Sample):
            grouped = compile_sample(compiler, body, max_samples_per_key)
        else:
            grouped = compile_join(compiler, body)
        statement = _sequence_pipes(grouped.select, query.pipes)
        return Plan("samples", statement, tuple(parameters.values), grouped.columns)
    where = compiler.event_query(body)
    located = exp.select(exp.Star(), exp.alias_(source.locator(), LOCATOR))
    statement = located.from_(exp.to_table(source.table)).where(where)
    layers = _EventPipes(compiler, statement)
    for pipe in query.pipes:
        layers.apply(pipe)
    return Plan(layers.kind, layers.finish(), tuple(parameters.values))


def _only_limits(pipes: tuple[Pipe, ...], what: str) -> None:
    for pipe in pipes:
        if pipe.name not in ("head", "tail"):
            raise EqlError(f"the {pipe.name} pipe takes event queries; a {what} takes head or tail")


def _count(pipe: Pipe) -> int:
    value = pipe.args[0]
    assert isinstance(value, Literal) and isinstance(value.value, int)
    return value.value


def _sequence_pipes(select: exp.Select, pipes: tuple[Pipe, ...]) -> exp.Select:
    """head/tail over matches already ordered by completion."""
    _only_limits(pipes, "sequence")
    order = select.args.get("order")
    assert order is not None
    keys = [o.this for o in order.expressions]
    for pipe in pipes:
        count = _count(pipe)
        if pipe.name == "head":
            select = (
                select.limit(count)
                if select.args.get("limit") is None
                else _wrap_limit(select, keys, count, descending=False)
            )
        else:
            select = _wrap_limit(select, keys, count, descending=True)
    return select


def _wrap_limit(
    select: exp.Select, keys: list[exp.Expr], count: int, descending: bool
) -> exp.Select:
    """The first (or last) ``count`` rows of ``select``, still in ascending order."""
    names = [k.name for k in keys]
    inner = select.copy()
    inner.set("order", None)
    for expression, name in zip(keys, names, strict=True):
        if name not in {s.alias_or_name for s in inner.selects}:
            inner = inner.select(exp.alias_(expression, name), copy=False)
    picked = (
        exp.select(exp.Star())
        .from_(inner.subquery("__all"))
        .order_by(
            *[
                exp.Ordered(this=exp.column(n), desc=descending, nulls_first=descending)
                for n in names
            ]
        )
        .limit(count)
    )
    visible = [s.alias_or_name for s in select.selects]
    return (
        exp.select(*[exp.column(v) for v in visible])
        .from_(picked.subquery("__picked"))
        .order_by(*[exp.Ordered(this=exp.column(n), nulls_first=False) for n in names])
    )


class _EventPipes:
    """Wraps an event query in one layer per pipe, tracking the current order."""

    def __init__(self, compiler: Compiler, statement: exp.Select) -> None:
        self.compiler = compiler
        self.source = compiler.source
        self.statement = statement
        self.order: list[tuple[exp.Expr, bool]] = [(k, False) for k in self.source.order_keys()]
        self.kind = "events"
        self.layer = 0
        self.counted = False

    def wrap(self) -> exp.Select:
        self.layer += 1
        return exp.select(exp.Star()).from_(self.statement.subquery(f"__p{self.layer}"))

    def ordered(self, reverse: bool = False) -> list[exp.Ordered]:
        return [
            exp.Ordered(this=e.copy(), desc=d != reverse, nulls_first=(d != reverse))
            for e, d in self.order
        ]

    def apply(self, pipe: Pipe) -> None:
        if self.kind == "counts":
            raise EqlError(f"the {pipe.name} pipe cannot follow count")
        if pipe.name == "filter":
            self.statement = self.wrap().where(self.compiler.condition(pipe.args[0]), copy=False)
        elif pipe.name == "head":
            self.statement = self.wrap().order_by(*self.ordered()).limit(_count(pipe))
        elif pipe.name == "tail":
            last = self.wrap().order_by(*self.ordered(reverse=True)).limit(_count(pipe))
            self.layer += 1
            self.statement = exp.select(exp.Star()).from_(last.subquery(f"__p{self.layer}"))
        elif pipe.name == "sort":
            keys = [self.compiler.compile(a).sql for a in pipe.args]
            self.order = list(zip(keys, pipe.descending, strict=True)) + self.order
        elif pipe.name in ("unique", "unique_count"):
            self._unique(pipe)
        elif pipe.name == "count":
            self._count(pipe)

    def _fields(self, pipe: Pipe) -> list[exp.Expr]:
        for arg in pipe.args:
            if not isinstance(arg, Field):
                raise EqlError(f"the {pipe.name} pipe takes field names, not {arg.render()!r}")
        return [self.compiler.compile(a).sql for a in pipe.args]

    def _unique(self, pipe: Pipe) -> None:
        fields = self._fields(pipe)
        order = exp.Order(expressions=self.ordered())
        number = exp.Window(this=exp.RowNumber(), partition_by=fields, order=order)
        layer = self.wrap().select(exp.alias_(number, "__n"), copy=False)
        if pipe.name == "unique_count":
            self.counted = True
            total = exp.Window(this=exp.Count(this=exp.Star()), partition_by=fields)
            layer = layer.select(exp.alias_(total, "count"), copy=False)
        self.layer += 1
        self.statement = (
            exp.select(exp.Star(except_=[exp.column("__n")]))
            .from_(layer.subquery(f"__p{self.layer}"))
            .where(exp.EQ(this=exp.column("__n"), expression=exp.Literal.number(1)))
        )

    def _count(self, pipe: Pipe) -> None:
        self.kind = "counts"
        source = self.statement.subquery(f"__p{self.layer + 1}")
        count = exp.Count(this=exp.Star())
        total = exp.Window(this=exp.Sum(this=exp.Count(this=exp.Star())))
        if not pipe.args:
            self.statement = exp.select(exp.alias_(count, "count")).from_(source)
            return
        fields = self._fields(pipe)
        # Several fields: a column each (a SQL list holds one type); the engine lists them.
        names = ["key"] if len(fields) == 1 else [f"{COUNT_KEY}{i}" for i in range(len(fields))]
        percent = exp.Div(this=exp.cast(count, "DOUBLE"), expression=total)
        self.statement = (
            exp.select(
                *[exp.alias_(f, n) for f, n in zip(fields, names, strict=True)],
                exp.alias_(count, "count"),
                exp.alias_(percent, "percent"),
            )
            .from_(source)
            .group_by(*fields)
            .order_by(
                *[exp.Ordered(this=exp.column(n), nulls_first=False) for n in ["count", *names]]
            )
        )

    def finish(self) -> exp.Select:
        """The last layer: counts, or the located events in their final order."""
        if self.kind == "counts":
            return self.statement
        columns: list[exp.Expr] = [exp.column(LOCATOR)]
        if self.counted:
            columns.append(exp.column("count"))
        self.layer += 1
        layer = exp.select(*columns).from_(self.statement.subquery(f"__p{self.layer}"))
        return layer.order_by(*self.ordered())
