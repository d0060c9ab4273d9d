"""The compiled plan in Spark SQL: transpiled back through sqlglot, it answers as DuckDB does.

DESIGN.md §4 and docs/eql.md: the same compiled query transpiles to Spark SQL
(``--explain --dialect spark``) and stays correct there. No Spark engine is at hand, so each plan
makes a round trip: ``plan.sql("spark", inline=True)`` is parsed as Spark SQL, written as DuckDB
SQL and run on the connection the plan was compiled for; its rows must equal those of the plan's
own DuckDB SQL (with its bound parameters). For the Elasticsearch missing-events cases and the
hand-worked sequence cases the rows of the Spark text are also read as matches and compared with
the expected answers themselves.

A round trip through DuckDB cannot notice a function Spark lacks (sqlglot passes an unknown name
through unchanged), so every function the Spark text calls is also checked against the list of
Spark built-ins it is known to need. Cases marked ``spark_gap(...)`` are strict xfails: the Spark
text is not valid or not equivalent Spark SQL there (reason in the mark).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
import sqlglot
from es_missing_events import (
    CATEGORY_FIELD,
    TIEBREAKER,
    TIME_FIELD,
    Case,
    event_ids,
    flat_keys,
    load_cases,
    load_events,
)
from sequence_cases import CASES as SEQUENCE_CASES
from sequence_cases import SeqCase

from query.eql import Plan, compile_query, load_records, parse
from query.eql.source import EventSource

ES_CASES = load_cases()
ES_EVENTS = load_events()

# Spark SQL built-ins the plans may call (all in Spark 3.3 and later: STARTSWITH, SPLIT_PART and
# ILIKE arrived in 3.3, TRY_CAST in 3.2, UNIX_MICROS in 3.1, BOOL_OR in 3.0). Syntax, not checked
# here: the unique pipes write ``SELECT * EXCEPT (__n)``, which Apache Spark reads from 4.0 on.
SPARK_FUNCTIONS = frozenset(
    {
        *("ARRAY", "ARRAY_CONTAINS", "BOOL_OR", "CAST", "COALESCE", "CONCAT", "COUNT", "GREATEST"),
        *("GET_JSON_OBJECT", "LEAST", "LENGTH", "LOCATE", "LOWER", "MAX", "MIN", "REGEXP_REPLACE"),
        *("REVERSE", "RIGHT", "ROW_NUMBER", "SIZE", "SPLIT_PART", "STARTSWITH", "STRUCT"),
        *("SUBSTRING", "SUM", "TRY_CAST", "UNIX_MICROS"),
    }
)
# DuckDB functions with no Spark built-in of that name (a few the engine might reach for).
DUCKDB_ONLY = frozenset(
    {
        *("ARRAY_LENGTH", "EPOCH", "EPOCH_MS", "EPOCH_US", "LIST_APPEND", "LIST_CONCAT"),
        *("LIST_CONTAINS", "LIST_EXTRACT", "LIST_VALUE", "REGEXP_FULL_MATCH", "REGEXP_MATCHES"),
        *("STRPOS", "STRUCT_PACK", "SUFFIX"),
    }
)
# Words followed by a parenthesis that are syntax, not function calls.
_KEYWORDS = frozenset(
    {
        *("AND", "AS", "BETWEEN", "BY", "ELSE", "EXCEPT", "EXISTS", "FROM", "IN", "JOIN", "NOT"),
        *("ON", "OR", "OVER", "SELECT", "THEN", "UNION", "WHEN", "WHERE"),
    }
)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def spark_gap(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def functions_called(sql: str) -> set[str]:
    """Names of the functions ``sql`` calls (string literals and quoted names left out)."""
    text = _STRING.sub("''", sql)
    text = re.sub(r"`[^`]*`", "x", text)
    return {name.upper() for name in _CALL.findall(text)} - _KEYWORDS


def spark_text(plan: Plan) -> str:
    return plan.sql("spark", inline=True)


def own_rows(connection: duckdb.DuckDBPyConnection, plan: Plan) -> list[tuple[Any, ...]]:
    return connection.sql(plan.sql("duckdb"), params=list(plan.parameters)).fetchall()


def spark_rows(connection: duckdb.DuckDBPyConnection, spark: str) -> list[tuple[Any, ...]]:
    """The rows of a plan's Spark SQL, read back by sqlglot as Spark and run as DuckDB."""
    (statement,) = sqlglot.parse(spark, read="spark")
    assert statement is not None
    return connection.sql(statement.sql("duckdb")).fetchall()


def matches(
    plan: Plan, rows: list[tuple[Any, ...]]
) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Sequence rows as ``(join_keys, row_ids)``, ``None`` where a step is missing."""
    assert plan.sequence is not None
    found = []
    for row in rows:
        keys, path = row[: plan.sequence.key_count], iter(row[-1])
        ids = tuple(None if missing else next(path) for missing in plan.sequence.missing)
        found.append((tuple(keys), ids))
    return found


def assert_spark_functions(spark: str) -> None:
    called = functions_called(spark)
    assert not called & DUCKDB_ONLY, (
        f"DuckDB-only functions in the Spark SQL: {called & DUCKDB_ONLY}"
    )
    assert called <= SPARK_FUNCTIONS, f"not known as Spark functions: {called - SPARK_FUNCTIONS}"


# -- Elasticsearch's missing-events cases ---------------------------------------------------------


@pytest.fixture(scope="module")
def es_input() -> Iterator[tuple[duckdb.DuckDBPyConnection, EventSource]]:
    connection, source = load_records(ES_EVENTS, CATEGORY_FIELD, TIME_FIELD, TIEBREAKER)
    with connection:
        yield connection, source


@pytest.mark.parametrize("case", ES_CASES, ids=[c.name for c in ES_CASES])
def test_es_case_round_trips_through_spark(
    es_input: tuple[duckdb.DuckDBPyConnection, EventSource], case: Case
) -> None:
    connection, source = es_input
    plan = compile_query(parse(case.query), source)
    spark = spark_text(plan)
    rows = spark_rows(connection, spark)
    assert rows == own_rows(connection, plan)
    found = matches(plan, rows)
    assert event_ids(ES_EVENTS, [ids for _, ids in found]) == list(case.expected_event_ids)
    if case.join_keys is not None:
        assert flat_keys(keys for keys, _ in found) == list(case.join_keys)
    assert_spark_functions(spark)


# -- hand-worked sequence cases -------------------------------------------------------------------


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=[c.name for c in SEQUENCE_CASES])
def test_sequence_case_round_trips_through_spark(case: SeqCase) -> None:
    connection, source = load_records(case.records, "category", "time", case.tiebreaker)
    with connection:
        plan = compile_query(parse(case.eql), source)
        spark = spark_text(plan)
        rows = spark_rows(connection, spark)
        assert rows == own_rows(connection, plan)
        assert matches(plan, rows) == case.expected
        assert_spark_functions(spark)


NULL_TIEBREAKERS = [
    {"category": "a", "time": 1, "tb": None},
    {"category": "b", "time": 1, "tb": None},
    {"category": "a", "time": 1, "tb": 1},
    {"category": "b", "time": 1, "tb": 2},
]


def test_sequence_head_with_null_tiebreakers_round_trips() -> None:
    connection, source = load_records(NULL_TIEBREAKERS, "category", "time", "tb")
    with connection:
        plan = compile_query(parse("sequence [a where true] [b where true] | head 2"), source)
        rows = spark_rows(connection, spark_text(plan))
        assert rows == own_rows(connection, plan)
        # the events with a tiebreaker come first: null tiebreakers sort last
        assert matches(plan, rows) == [((), (2, 3)), ((), (0, 1))]


def test_sequence_tail_with_null_tiebreakers_round_trips() -> None:
    connection, source = load_records(NULL_TIEBREAKERS, "category", "time", "tb")
    with connection:
        plan = compile_query(parse("sequence [a where true] [b where true] | tail 2"), source)
        assert matches(plan, own_rows(connection, plan)) == [((), (2, 3)), ((), (0, 1))]
        assert spark_rows(connection, spark_text(plan)) == own_rows(connection, plan)


# -- event queries, pipes, functions, samples and joins -------------------------------------------


def _record(index: int, category: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "category": category,
        "time": 1000 * (index + 1),
        "pid": index,
        "name": None,
        "user": None,
        "ip": None,
        "size": None,
        "code": None,
        "tags": [],
        "attrs": {"a": {"b": None}, "name": None},
        "my-field": None,
    }
    record.update(fields)
    return record


RECORDS = [
    _record(0, "process", name="cmd.exe", user="Alice", ip="10.0.0.5", size=100, code="12",
            tags=["x", "y"], attrs={"a": {"b": 1}, "name": "alpha"}, **{"my-field": 7}),
    _record(1, "process", name="CMD.EXE", user="bob", ip="192.168.1.20", code="3.5",
            tags=["y"], attrs={"a": {"b": 2}, "name": "beta"}),
    _record(2, "file", name="notes.txt", user="alice", ip="fe80::1", size=2048, code="0x1F",
            attrs={"a": {"b": None}, "name": "gamma"}),
    _record(3, "network", name="curl", ip="10.1.2.3", size=512, code="7",
            tags=["z"], attrs={"a": {"b": 3}, "name": "gamma"}, **{"my-field": 9}),
    _record(4, "process", name="regsvr32.exe", user="ALICE", ip="10.0.0.255", size=0, code="1",
            attrs={"a": {"b": 1}, "name": "alpha"}, **{"my-field": 7}),
    _record(5, "file", name="a_c%.log", user="bob", ip="172.16.0.1", size=64, code="2",
            tags=["x"], attrs={"a": {"b": 4}, "name": "delta"}),
    _record(6, "network", name="curl", user="Alice", ip="10.0.0.9", size=700, code="n/a",
            attrs={"a": {"b": 2}, "name": "beta"}),
    _record(7, "process", name="svc"),  # no user: a null key for ?user
    _record(8, "file", name="svc.log"),
]  # fmt: skip

_HEX_CAST = spark_gap(
    "number(s, 16) casts '0x'-prefixed text to BIGINT (and, as number() above, as a plain CAST), "
    "which only DuckDB reads as hexadecimal: Spark's CAST('0x1F' AS BIGINT) is null (an error "
    "under ANSI); Spark needs CONV(s, 16, 10). The round trip cannot see it: DuckDB runs the cast"
)

# (query, marks of its round trip, marks of its Spark text check)
EVENT_QUERIES: list[tuple[str, tuple[pytest.MarkDecorator, ...], tuple[pytest.MarkDecorator, ...]]]
EVENT_QUERIES = [(text, (), ()) for text in [
    "process where pid > 0",
    "any where true | head 3",
    "any where true | tail 2",
    "any where size > 0 | head 4 | tail 2",
    "any where true | sort user desc, pid",
    "any where true | sort size",
    "any where true | filter user != null | sort name | head 3",
    "any where true | unique user",
    "any where true | unique name, user | sort pid desc",
    "any where true | unique_count name",
    "any where true | count",
    "any where size >= 100 | unique_count category | count",
    "any where size == null or size < 100",
    'any where user != "bob"',
    'any where name : "cmd*"',
    'any where name : ("CMD*", "*.txt")',
    'any where name like~ "CMD.exe"',
    'any where name : "a_c%*"',
    'any where user in~ ("alice", "BOB")',
    'any where user not in ("bob", "Alice")',
    'any where tags == "y"',
    "any where length(tags) > 1",
    "any where attrs.a.b == 1",
    'any where attrs.name == "gamma"',
    "any where ?missing_field == null",
    "any where `my-field` == 7",
    'any where startsWith~(name, "CMD")',
    'any where endsWith(name, ".exe")',
    'any where stringContains~(name, "SVR")',
    'any where indexOf(name, ".", 2) == 3',
    "any where length(name) > 7",
    'any where concat(name, "-", pid) == "curl-3"',
    'any where substring(name, 1, -1) == "md.ex"',
    'any where between(name, "c", ".") == "md"',
    'any where between(name, "r", "e", true) == "egsvr32.ex"',
    "any where add(pid, 1) == 5 or subtract(size, 12) == 52",
    "any where divide(size, 2) == 50 or modulo(pid, 3) == 2",
    'any where string(pid) == "4"',
    "sequence by user [process where true] [network where true] | head 1",
    "sequence by user [process where true] [network where true] | tail 1",
    "sequence with maxspan=3s [process where true] [file where true] [network where true]",
    "sequence by user [process where true] ![file where true] [network where true]",
    "sequence [process where true] with runs=2 [file where true] until [network where true]",
    "sample by user [process where true] [network where true]",
    "sample by user [process where true] [file where true] | head 1",
    "join by user [process where true] [network where true]",
    "join by user [process where true] [file where true] | tail 1",
    "sequence by ?user [process where true] [file where true]",
    "sequence by ?user [process where true] [file where true] | tail 3",
]] + [
    ("file where true | count user", (), ()),
    ("sample by ?user [process where true] [file where true]", (), ()),
    ("join by ?user [process where true] [file where true] | tail 3", (), ()),
    ("any where true | count name, user", (), ()),
    ('any where number("12") == 12', (), ()),
    ("any where number(code) > 5", (), ()),
    ("any where number(code, 16) == 31", (), (_HEX_CAST,)),
    ('any where name regex "c.d\\\\.exe"', (), ()),
    ('any where name regex~ "C.D\\\\.EXE"', (), ()),
    ('any where cidrMatch(ip, "10.0.0.0/24", "172.16.0.0/12")', (), ()),
]  # fmt: skip
ROUND_TRIPS = [pytest.param(text, id=text, marks=marks) for text, marks, _ in EVENT_QUERIES]
SPARK_TEXTS = [pytest.param(text, id=text, marks=marks) for text, _, marks in EVENT_QUERIES]


@pytest.fixture(scope="module")
def event_input() -> Iterator[tuple[duckdb.DuckDBPyConnection, EventSource]]:
    connection, source = load_records(RECORDS, "category", "time", None)
    with connection:
        yield connection, source


@pytest.mark.parametrize("query", ROUND_TRIPS)
def test_query_round_trips_through_spark(
    event_input: tuple[duckdb.DuckDBPyConnection, EventSource], query: str
) -> None:
    connection, source = event_input
    plan = compile_query(parse(query), source)
    assert spark_rows(connection, spark_text(plan)) == own_rows(connection, plan)


@pytest.mark.parametrize("query", SPARK_TEXTS)
def test_query_spark_sql_calls_only_spark_functions(
    event_input: tuple[duckdb.DuckDBPyConnection, EventSource], query: str
) -> None:
    plan = compile_query(parse(query), event_input[1])
    text = spark_text(plan)
    assert_spark_functions(text)
    if "number(" in query:  # a cast that may fail must stay a TRY_CAST
        assert "TRY_CAST(" in text
    assert "CONCAT('0x'" not in text, "a hexadecimal cast only DuckDB understands"


def test_the_round_trip_sees_a_changed_plan(
    event_input: tuple[duckdb.DuckDBPyConnection, EventSource],
) -> None:
    """The check itself: Spark text that means something else gives other rows."""
    connection, source = event_input
    plan = compile_query(parse("any where pid > 2 | head 2"), source)
    text = spark_text(plan)
    assert "CAST(2 AS BIGINT)" in text
    changed = sqlglot.transpile(
        text.replace("CAST(2 AS", "CAST(3 AS"), read="spark", write="duckdb"
    )
    assert connection.sql(changed[0]).fetchall() != own_rows(connection, plan)


def test_functions_called_reads_calls_not_literals_or_names() -> None:
    sql = "SELECT REGEXP_FULL_MATCH(`a(b`, 'x(y') AS f, c IN (1) FROM t WHERE EXISTS(SELECT 1)"
    assert functions_called(sql) == {"REGEXP_FULL_MATCH"}
