"""Compile ``sample`` and ``join``: events that share join keys, in any order."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot.expressions as exp

from .ast import Expr, Join, Sample, Step
from .errors import EqlError
from .expressions import Compiler
from .sequence import ID, KEY, PATH, TIME, SequenceColumns, key_sql, present

__all__ = ["GroupPlan", "compile_join", "compile_sample"]


@dataclass(frozen=True)
class GroupPlan:
    """One row per sample (or join) with its keys and event ids."""

    select: exp.Select
    columns: SequenceColumns


def _filter_rows(compiler: Compiler, by: tuple[Expr, ...], step: Step, name: str) -> exp.Select:
    """Events matching ``step``: keys, time, id and their rank within the key."""
    source = compiler.source
    keys = key_sql(compiler, by + step.by)
    condition = compiler.event_query(step.query)
    not_null = present(by + step.by, keys)
    order = source.order_keys()
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[k.sql for k in keys] or None,
        order=exp.Order(expressions=[exp.Ordered(this=o) for o in order]),
    )
    columns = [exp.alias_(k.sql, KEY.format(i)) for i, k in enumerate(keys)]
    columns += [
        exp.alias_(exp.UnixMicros(this=order[0]), TIME),
        exp.alias_(source.locator(), ID),
        exp.alias_(rank, f"__n{name}"),
    ]
    return (
        exp.select(*columns).from_(exp.to_table(source.table)).where(exp.and_(condition, *not_null))
    )


def _widths(by: tuple[Expr, ...], steps: tuple[Step, ...], until: Step | None) -> int:
    widths = {len(by) + len(s.by) for s in steps}
    if until is not None:
        widths.add(len(by) + len(until.by))
    if len(widths) != 1:
        raise EqlError("every filter must have the same number of join keys")
    return widths.pop()


def _combine(
    compiler: Compiler,
    by: tuple[Expr, ...],
    steps: tuple[Step, ...],
    key_count: int,
    limit_per_key: int,
    until: Step | None,
) -> exp.Select:
    aliases = [f"f{i}" for i in range(len(steps))]
    first = aliases[0]
    select = exp.select(
        *[
            exp.alias_(exp.column(KEY.format(k), table=first), KEY.format(k))
            for k in range(key_count)
        ],
        exp.alias_(exp.Array(expressions=[exp.column(ID, table=a) for a in aliases]), PATH),
    )
    select = select.from_(_filter_rows(compiler, by, steps[0], "0").subquery(first))
    for index in range(1, len(steps)):
        alias = aliases[index]
        rows = _filter_rows(compiler, by, steps[index], str(index)).subquery(alias)
        same: list[exp.Expr] = [
            exp.NullSafeEQ(
                this=exp.column(KEY.format(k), table=alias),
                expression=exp.column(KEY.format(k), table=first),
            )
            for k in range(key_count)
        ]
        same.append(
            exp.EQ(
                this=exp.column(f"__n{index}", table=alias),
                expression=exp.column("__n0", table=first),
            )
        )
        select = select.join(rows, on=exp.and_(*same) if same else exp.true(), join_type="inner")
    conditions: list[exp.Expr] = [
        exp.LTE(this=exp.column("__n0", table=first), expression=exp.Literal.number(limit_per_key))
    ]
    for i in range(len(aliases)):
        for j in range(i + 1, len(aliases)):
            conditions.append(
                exp.NEQ(
                    this=exp.column(ID, table=aliases[i]),
                    expression=exp.column(ID, table=aliases[j]),
                )
            )
    if until is not None:
        stop = _filter_rows(compiler, by, until, "u")
        first_stop = exp.select(exp.Min(this=exp.column(TIME))).from_(stop.subquery("u"))
        for k in range(key_count):
            first_stop = first_stop.where(
                exp.NullSafeEQ(
                    this=exp.column(KEY.format(k), table="u"),
                    expression=exp.column(KEY.format(k), table=first),
                ),
                copy=False,
            )
        # Every event is before the key's first until event (if it has one): the latest is.
        latest = exp.func("GREATEST", *[exp.column(TIME, table=alias) for alias in aliases])
        before = exp.LT(this=latest, expression=first_stop.subquery())
        conditions.append(exp.func("COALESCE", before, exp.true()))
    select = select.where(exp.and_(*conditions), copy=False)
    order = [exp.column(KEY.format(k)) for k in range(key_count)]
    ordered = [exp.Ordered(this=o, nulls_first=False) for o in order]
    rank = exp.Ordered(this=exp.column("__n0", table=first), nulls_first=False)
    return select.order_by(*ordered, rank, copy=False)


def compile_sample(compiler: Compiler, sample: Sample, max_samples_per_key: int) -> GroupPlan:
    """One row per sample: the j-th earliest event of every filter, per join key."""
    if max_samples_per_key < 1:
        raise EqlError("max_samples_per_key must be at least 1")
    key_count = _widths(sample.by, sample.steps, None)
    select = _combine(compiler, sample.by, sample.steps, key_count, max_samples_per_key, None)
    return GroupPlan(select, SequenceColumns(key_count, (False,) * len(sample.steps)))


def compile_join(compiler: Compiler, join: Join) -> GroupPlan:
    """One row per join key: the earliest event of every query before the key's first until."""
    key_count = _widths(join.by, join.steps, join.until)
    select = _combine(compiler, join.by, join.steps, key_count, 1, join.until)
    return GroupPlan(select, SequenceColumns(key_count, (False,) * len(join.steps)))
