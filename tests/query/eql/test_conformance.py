"""Conformance: every construct of docs/eql.md on small hand-written fixtures.

Each table row is a query and the answer worked out by hand from docs/eql.md (input list indexes,
in output order). Sequence cases live in sequence_cases.py, where the reference matcher checks the
same hand answers. Every query in this file is also rendered and parsed back
(``parse(node.render()) == node``).

Rows marked ``bug(...)`` are strict xfails: the engine disagrees with docs/eql.md there (reason in
the mark; a minimal reproduction is in the report that came with these tests).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sequence_cases import CASES as SEQUENCE_CASES
from sequence_cases import SeqCase

from query.eql import EqlError, EqlResult, EqlSyntaxError, parse, run_eql_records

QueryErrors = (EqlError, EqlSyntaxError)


def _event(index: int, category: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"category": category, "time": 1000 * (index + 1)}
    record.update(fields)
    record.setdefault("attrs", {"a": {"b": None}, "name": None})
    record["sequence"] = index + 1
    return record


# Every record has every field (some null), except ``opt``, which no record has.
EVENTS: list[dict[str, Any]] = [
    _event(
        0, "process", pid=4, name="cmd.exe", path="C:\\Windows\\System32\\cmd.exe",
        user="Alice", ip="10.0.0.5", size=100, ratio=0.5, code="12",
        attrs={"a": {"b": 1}, "name": "alpha"}, **{"my-field": 7},
    ),
    _event(
        1, "process", pid=8, name="CMD.EXE", path="C:\\Temp\\CMD.EXE",
        user="bob", ip="192.168.1.20", size=None, ratio=1.5, code="3.5",
        attrs={"a": {"b": 2}, "name": "beta"}, **{"my-field": 8},
    ),
    _event(
        2, "file", pid=4, name="notes.txt", path="/home/alice/notes.txt",
        user="alice", ip=None, size=2048, ratio=None, code=None,
        attrs={"a": {"b": None}, "name": None}, **{"my-field": None},
    ),
    _event(
        3, "network", pid=12, name="curl", path="/usr/bin/curl",
        user=None, ip="10.1.2.3", size=512, ratio=2.25, code=None,
        attrs={"a": {"b": 3}, "name": "gamma"}, **{"my-field": 9},
    ),
    _event(
        4, "my-cat", pid=-3, name="a_c%", path="",
        user="Carol", ip="172.16.0.1", size=0, ratio=-1.0, code=None,
        attrs={"a": {"b": 1}, "name": "alpha"}, **{"my-field": 7},
    ),
    _event(
        5, "process", pid=7, name="regsvr32.exe", path="C:\\Windows\\regsvr32.exe",
        user="ALICE", ip="10.0.0.255", size=None, ratio=None, code=None,
        attrs={"a": {"b": 4}, "name": "delta"}, **{"my-field": None},
    ),
]  # fmt: skip
ALL = [0, 1, 2, 3, 4, 5]


def run(query: str, records: list[dict[str, Any]] | None = None, **options: Any) -> EqlResult:
    return run_eql_records(query, EVENTS if records is None else records, **options)


def ids(query: str, records: list[dict[str, Any]] | None = None, **options: Any) -> list[int]:
    result = run(query, records, **options)
    assert result.kind == "events", query
    return list(result.row_ids)


def bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


def case(query: str, expected: list[int], *marks: Any) -> Any:
    return pytest.param(query, expected, id=query, marks=marks)


# -- expressions ----------------------------------------------------------------------------------

COMPARISONS = [
    case("process where pid == 4", [0]),
    case("any where pid == 4", [0, 2]),
    case("any where 4 == pid", [0, 2]),
    case("any where pid == 4.0", [0, 2]),
    case("any where pid != 4", [1, 3, 4, 5]),
    case("any where pid < 7", [0, 2, 4]),
    case("any where pid <= 7", [0, 2, 4, 5]),
    case("any where pid > 8", [3]),
    case("any where pid >= 8", [1, 3]),
    case('any where name == "cmd.exe"', [0]),
    case('any where name != "cmd.exe"', [1, 2, 3, 4, 5]),
    case('any where user < "a"', [0, 4, 5]),
    case('any where user >= "alice"', [1, 2]),
    case("any where ratio > 1", [1, 3]),
    case("any where ratio == 1.5", [1]),
    case("any where size >= 512", [2, 3]),
    case("any where true", ALL),
    case("any where false", []),
]

NULLS = [
    case("any where size == null", [1, 5]),
    case("any where size != null", [0, 2, 3, 4]),
    case("any where null == size", [1, 5]),
    case("any where user == null", [3]),
    case('any where user != "bob"', [0, 2, 4, 5]),
    case('any where not user == "bob"', [0, 2, 4, 5]),
    case("any where not (size == null)", [0, 2, 3, 4]),
    case("any where size < 1000", [0, 3, 4]),
    case("any where not (size < 1000)", [2]),
    case('any where size > 100 or user == "bob"', [1, 2, 3]),
    case("any where size > 100 or size == null", [1, 2, 3, 5]),
    case("any where size > 1000 or true", ALL),
    case("any where size > 1000 and false", []),
    case("any where not (size > 1000 and false)", ALL),
    case("any where not (size > 1000 or true)", []),
    case("any where not (size > 1000 or false)", [0, 3, 4]),
    case("any where not (size > 1000 and true)", [0, 3, 4]),
    case('any where user in ("bob", "Carol")', [1, 4]),
    case('any where user not in ("bob")', [0, 2, 4, 5]),
]

MATCHING = [
    case('any where name : "cmd.exe"', [0, 1]),
    case('any where name : "CMD*"', [0, 1]),
    case('any where name : "*.EXE"', [0, 1, 5]),
    case('any where name : "*"', ALL),
    case('any where name : ("curl", "*.txt")', [2, 3]),
    case('any where name : "a_c%"', [4]),
    case('any where name : "a_c*"', [4]),
    case('any where name : "abc%"', []),
    case('any where user : "alice"', [0, 2, 5]),
    case('any where user : "*LIC*"', [0, 2, 5]),
    case('any where name == "cmd*"', []),
    case("any where pid in (4, 12)", [0, 2, 3]),
    case("any where pid not in (4, 12)", [1, 4, 5]),
    case('any where user in ("alice", "bob")', [1, 2]),
    case('any where user in~ ("alice", "bob")', [0, 1, 2, 5]),
    case('any where user not in ("alice")', [0, 1, 4, 5]),
    case('any where name like "cmd.*"', [0]),
    case('any where name like~ "cmd.*"', [0, 1]),
    case('any where name like "c?rl"', [3]),
    case('any where name like "????"', [3, 4]),
    case('any where name like ("*.txt", "curl")', [2, 3]),
    case('any where name like "a_c%"', [4]),
    case('any where name like "a?c%"', [4]),
    case('any where name like "ab?%"', []),
    case('any where name like~ "*.EXE"', [0, 1, 5]),
    case('any where name regex "cmd\\\\.exe"', [0]),
    case('any where name regex~ "cmd\\\\.exe"', [0, 1]),
    case('any where name regex "c.*"', [0, 3]),
    case('any where name regex "md"', []),
    case('any where name regex ("curl", "notes\\\\..*")', [2, 3]),
    case('any where name regex "[a-z]+[0-9]+\\\\.exe"', [5]),
    case('any where path regex ".*\\\\\\\\System32\\\\\\\\.*"', [0]),
]

ARITHMETIC = [
    case("any where pid + 1 == 5", [0, 2]),
    case("any where pid - 1 == 3", [0, 2]),
    case("any where pid * 2 == 16", [1]),
    case("any where pid / 2 == 3", [5]),
    case("any where pid / 2 == -1", [4]),
    case("any where -7 / 2 == -3", ALL),
    case("any where 7 / -2 == -3", ALL),
    case("any where (0 - size) / 1000 == -2", [2]),
    case("any where size / 3 == 33", [0]),
    case("any where pid / 2.0 == 3.5", [5]),
    case("any where size / 1000 == 2", [2]),
    case("any where pid % 5 == 2", [3, 5]),
    case("any where pid % 4 == 0", [0, 1, 2, 3]),
    case("any where -pid == 3", [4]),
    case("any where - pid > 0", [4]),
    case("any where ratio * 2 == 3", [1]),
    case("any where pid + 2 * 3 == 10", [0, 2]),
    case("any where (pid + 2) * 3 == 18", [0, 2]),
    case("any where pid - 2 - 1 == 1", [0, 2]),
    case("any where pid + size == 104", [0]),
    case("any where pid + size == null", [1, 5]),
]

FUNCTIONS = [
    case("any where add(pid, 1) == 5", [0, 2]),
    case("any where subtract(pid, 1) == 3", [0, 2]),
    case("any where multiply(pid, 2) == 16", [1]),
    case("any where divide(pid, 2) == 3", [5]),
    case("any where divide(pid, 2) == -1", [4]),
    case("any where divide(size, 3) == 33", [0]),
    case("any where divide(pid, 2.0) == 3.5", [5]),
    case("any where modulo(pid, 4) == 0", [0, 1, 2, 3]),
    case('any where between(path, "System32\\\\", ".exe") == "cmd"', [0]),
    case('any where between~(path, "system32\\\\", ".EXE") == "cmd"', [0]),
    case('any where between(path, "system32\\\\", ".EXE") == "cmd"', []),
    case('any where cidrMatch(ip, "10.0.0.0/8")', [0, 3, 5]),
    case('any where cidrMatch(ip, "10.0.0.0/24")', [0, 5]),
    case('any where cidrMatch(ip, "192.168.0.0/16", "172.16.0.0/12")', [1, 4]),
    case('any where cidrMatch(ip, "10.0.0.5/32")', [0]),
    case('any where concat(name, "-", user) == "curl-"', [3]),
    case('any where concat(name, pid) == "cmd.exe4"', [0]),
    case('any where concat(null, "a") == "a"', ALL),
    case('any where endsWith(name, ".exe")', [0, 5]),
    case('any where endsWith~(name, ".EXE")', [0, 1, 5]),
    case('any where indexOf(name, "e") == 4', [0]),
    case('any where indexOf(name, "e", 2) == 9', [5]),
    case('any where indexOf(name, "e", 0) == 4', [0]),
    case('any where indexOf(name, "zz") == null', ALL),
    case('any where indexOf~(name, "E") == 4', [0, 1]),
    case("any where length(name) == 4", [3, 4]),
    case("any where length(path) == 0", [4]),
    case("any where length(user) == null", [3]),
    case("any where number(code) == 12", [0]),
    case("any where number(code) == 3.5", [1]),
    case('any where string(pid) == "4"', [0, 2]),
    case('any where string(ratio) == "1.5"', [1]),
    case("any where string(size) == null", [1, 5]),
    case('any where stringContains(name, "cmd")', [0]),
    case('any where stringContains~(name, "cmd")', [0, 1]),
    case('any where stringContains(path, "Windows")', [0, 5]),
    case('any where startsWith(name, "cmd")', [0]),
    case('any where startsWith~(name, "cmd")', [0, 1]),
    case('any where startsWith(user, "A")', [0, 5]),
    case('any where substring(name, 0, 3) == "cmd"', [0]),
    case('any where substring(name, -4) == ".exe"', [0, 5]),
    case('any where substring(name, 4) == "exe"', [0]),
    case('any where substring(name, -4, -1) == ".ex"', [0, 5]),
    case('any where between(name, "zz", "e") == ""', ALL),
]

FIELDS = [
    case("any where attrs.a.b == 1", [0, 4]),
    case("any where attrs.a.b > 2", [3, 5]),
    case("any where attrs.a.b == null", [2]),
    case('any where attrs.name == "alpha"', [0, 4]),
    case('any where attrs.name : "ALPHA"', [0, 4]),
    case("any where ?opt == null", ALL),
    case('any where ?opt == "x"', []),
    case('any where ?opt != "x"', []),
    case('any where not (?opt == "x")', []),
    case("any where ?pid == 4", [0, 2]),
    case("any where ?attrs.a.zz == null", ALL),
    case("any where ?attrs.zz == null", ALL),
    case('"my-cat" where true', [4]),
    case('"process" where pid == 8', [1]),
    case("any where `my-field` == 7", [0, 4]),
    case("any where `sequence` > 4", [4, 5]),
    case('any where `name` == "curl"', [3]),
    case("network where true", [3]),
    case("nothing where true", []),
]

EVENT_PIPES = [
    case("any where true | head 2", [0, 1]),
    case("any where true | tail 2", [4, 5]),
    case("any where true | head 10", ALL),
    case("any where true | head 4 | tail 2", [2, 3]),
    case("any where true | tail 4 | head 1", [2]),
    case('any where pid > 0 | filter user : "alice"', [0, 2, 5]),
    case("any where true | filter size > 100 or size == null", [1, 2, 3, 5]),
    case("any where true | sort pid", [4, 0, 2, 5, 1, 3]),
    case("any where true | sort pid desc", [3, 1, 5, 0, 2, 4]),
    case("any where user != null | sort user", [5, 0, 4, 2, 1]),
    case("any where true | sort pid desc | head 2", [3, 1]),
    case("any where true | head 2 | sort pid desc", [1, 0]),
    case("any where true | unique pid", [0, 1, 3, 4, 5]),
    case("any where true | unique category", [0, 2, 3, 4]),
    case("any where true | unique pid, category", [0, 1, 2, 3, 4, 5]),
    case("any where true | unique attrs.a.b | head 2", [0, 1]),
    case("process where true | unique_count pid", [0, 1, 5]),
]


@pytest.mark.parametrize(
    ("query", "expected"), COMPARISONS + NULLS + MATCHING + ARITHMETIC + FUNCTIONS + FIELDS
)
def test_event_query(query: str, expected: list[int]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(("query", "expected"), EVENT_PIPES)
def test_event_pipes(query: str, expected: list[int]) -> None:
    assert ids(query) == expected


STRINGS: list[dict[str, Any]] = [
    {"category": "a", "time": 1, "s": 'say "hi"'},
    {"category": "a", "time": 2, "s": "back\\slash"},
    {"category": "a", "time": 3, "s": "tab\there"},
    {"category": "a", "time": 4, "s": "\u00fcn\u00ef"},
]
STRING_LITERALS = [
    case('a where s == "say \\"hi\\""', [0]),
    case('a where s == "back\\\\slash"', [1]),
    case('a where s == "tab\\there"', [2]),
    case('a where s == "\u00fcn\u00ef"', [3]),
    case('a where s : "\u00dcN\u00cf"', [3]),
    case('a where s like "say*"', [0]),
    case('a where s : "*\\\\*"', [1]),
    case("a where length(s) == 3", [3]),
]


@pytest.mark.parametrize(("query", "expected"), STRING_LITERALS)
def test_string_literals_and_escapes(query: str, expected: list[int]) -> None:
    assert ids(query, STRINGS) == expected


def test_number_with_a_base() -> None:
    records = [
        {"category": "a", "time": 1, "code": "ff"},
        {"category": "a", "time": 2, "code": "10"},
    ]
    assert ids("a where number(code, 16) == 255", records) == [0]
    assert ids("a where number(code, 16) == 16", records) == [1]


def test_modulo_sign_follows_the_dividend_as_in_elasticsearch() -> None:
    # Elasticsearch computes % as Java does: -3 % 5 == -3 (docs/eql.md states only "/").
    assert ids("any where pid % 5 == -3") == [4]
    assert ids("any where modulo(pid, 5) == -3") == [4]


def test_comparison_with_an_all_null_field_is_null() -> None:
    records = [{"category": "a", "time": 1, "n": None, "s": None}]
    assert ids("a where n != 0", records) == []
    assert ids('a where s != "x"', records) == []
    assert ids("a where not (n == 0)", records) == []


def test_integer_fields_come_back_as_integers() -> None:
    event = run("any where pid == 4").events[0]
    assert type(event["pid"]) is int
    keys = run("sequence by pid [process where true] [file where true]").sequences[0].join_keys
    assert [type(key) for key in keys] == [int]
    assert {type(row["key"]) for row in run("any where true | count pid").counts} == {int}


def test_all_null_field_equality_and_null_tests() -> None:
    records = [{"category": "a", "time": 1, "n": None}]
    assert ids("a where n == 0", records) == []
    assert ids("a where n == null", records) == [0]
    assert ids("a where n != null", records) == []


def test_unique_count_reports_the_counts() -> None:
    result = run("process where true | unique_count pid")
    assert list(result.row_ids) == [0, 1, 5]
    assert [event["count"] for event in result.events] == [1, 1, 1]
    result = run("any where true | unique_count pid")
    assert list(result.row_ids) == [0, 1, 3, 4, 5]
    assert [event["count"] for event in result.events] == [2, 1, 1, 1, 1]


def test_count() -> None:
    result = run("any where pid > 0 | count")
    assert result.kind == "counts"
    assert [row["count"] for row in result.counts] == [5]


def test_count_by_field_orders_by_count_then_key() -> None:
    result = run("any where true | count pid")
    assert result.kind == "counts"
    assert [(row["key"], row["count"]) for row in result.counts] == [
        (-3, 1),
        (7, 1),
        (8, 1),
        (12, 1),
        (4, 2),
    ]
    assert [row["percent"] for row in result.counts] == pytest.approx([1 / 6] * 4 + [2 / 6])


def test_count_by_string_field() -> None:
    result = run("process where true | count user")
    assert [(row["key"], row["count"]) for row in result.counts] == [
        ("ALICE", 1),
        ("Alice", 1),
        ("bob", 1),
    ]


def test_count_by_two_string_fields() -> None:
    result = run("any where pid == 4 or pid == 8 | count category, name")
    keys = [(list(row["key"]), row["count"]) for row in result.counts]
    assert keys == [
        (["file", "notes.txt"], 1),
        (["process", "CMD.EXE"], 1),
        (["process", "cmd.exe"], 1),
    ]


def test_count_by_fields_of_different_types() -> None:
    result = run("any where pid == 4 | count category, pid")
    assert [(list(row["key"]), row["count"]) for row in result.counts] == [
        (["file", 4], 1),
        (["process", 4], 1),
    ]


# -- errors -------------------------------------------------------------------------------------


def test_unknown_field_is_named_with_a_suggestion() -> None:
    with pytest.raises(EqlError) as caught:
        run("any where nmae == 1")
    assert "nmae" in str(caught.value)
    assert "name" in str(caught.value).replace("nmae", "")


@pytest.mark.parametrize(
    "query",
    [
        "sequence [a where true] [b where true] | count",
        "sequence [a where true] [b where true] | unique pid",
        "sequence [a where true] [b where true] | sort pid",
        "any where nosuchfunction(pid) == 1",
        "sequence [process where true] by pid [file where true]",
        "sequence [process where true] [file where true] with runs=0",
    ],
)
def test_queries_that_cannot_run(query: str) -> None:
    with pytest.raises(QueryErrors):
        run(query)


SYNTAX_ERRORS = [
    ("process wher x == 1", 1, 9),
    ("process where (x == 1", 1, 22),
    ('process where x == "abc', 1, 20),
    ("any where 1 ==", 1, 15),
    ("any where x in ()", 1, 17),
    ("sequence by k\n  [a where true]\n  [b where x == ]", 3, 17),
    ("sequence\n  [a where true]\n  [b where true]\n| head x", 4, 8),
    ("any where x == 1 )", 1, 18),
]


@pytest.mark.parametrize(("query", "line", "column"), SYNTAX_ERRORS)
def test_syntax_error_position(query: str, line: int, column: int) -> None:
    with pytest.raises(EqlSyntaxError) as caught:
        parse(query)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    source_line = query.splitlines()[line - 1]
    shown = error.highlight.splitlines()
    at = next(i for i, text in enumerate(shown) if source_line in text)
    offset = shown[at].index(source_line)
    assert shown[at + 1].index("^") == offset + column - 1
    with pytest.raises(EqlSyntaxError):
        run_eql_records(query, EVENTS)


def test_a_sequence_needs_two_steps() -> None:
    with pytest.raises(QueryErrors):
        run("sequence [process where true]")


# -- time values ----------------------------------------------------------------------------------


def _timed(times: list[Any]) -> list[dict[str, Any]]:
    return [{"category": "a", "time": t, "n": i} for i, t in enumerate(times)]


BASE = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("times", "order"),
    [
        ([3, 1, 2], [1, 2, 0]),
        (["3", "1", "2"], [1, 2, 0]),
        (["1000", "999", "1000"], [1, 0, 2]),
        ([BASE + timedelta(seconds=s) for s in (3, 1, 2)], [1, 2, 0]),
        ([(BASE + timedelta(seconds=s)).replace(tzinfo=None) for s in (3, 1, 2)], [1, 2, 0]),
        (["2024-01-01T00:00:03Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"], [1, 2, 0]),
        (["2024-01-01T00:30:00Z", "2024-01-01T02:00:00+02:00"], [1, 0]),
        (["2024-01-01T00:00:00.000002Z", "2024-01-01T00:00:00.000001Z"], [1, 0]),
        (
            [BASE + timedelta(hours=1), BASE.astimezone(timezone(timedelta(hours=5)))],
            [1, 0],
        ),
    ],
    ids=["int", "numeric-str", "numeric-str-ties", "aware", "naive", "iso", "iso-offset",
         "iso-micros", "aware-offset"],
)  # fmt: skip
def test_time_values_order_events(times: list[Any], order: list[int]) -> None:
    assert ids("a where true", _timed(times)) == order


def test_mixed_epoch_strings_and_iso_dates_in_one_field() -> None:
    records = _timed(["2", "2022-05-04T12:00:00.000Z", "1"])
    assert ids("a where true", records) == [2, 0, 1]
    found = run("sequence [a where n == 2] [a where n == 0]", records).sequences
    assert [m.row_ids for m in found] == [(2, 0)]


def test_other_category_and_time_fields() -> None:
    records = [{"kind": "x", "ts": 2, "v": 1}, {"kind": "x", "ts": 1, "v": 2}]
    assert ids("x where true", records, category_field="kind", time_field="ts") == [1, 0]


# -- sequences, samples and joins -----------------------------------------------------------------


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=[c.name for c in SEQUENCE_CASES])
def test_sequence(case: SeqCase) -> None:
    result = run(case.eql, case.records, tiebreaker=case.tiebreaker)
    assert result.kind == "sequences"
    assert [(tuple(m.join_keys), tuple(m.row_ids)) for m in result.sequences] == case.expected
    for match in result.sequences:
        for row, event in zip(match.row_ids, match.events, strict=True):
            assert event == {"missing": True} if row is None else event["time"] is not None


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=[c.name for c in SEQUENCE_CASES])
def test_sequence_renders_back(case: SeqCase) -> None:
    node = parse(case.eql)
    assert parse(node.render()) == node


HOSTS: list[dict[str, Any]] = [
    {"category": "a", "time": 10, "host": "h1"},
    {"category": "b", "time": 20, "host": "h1"},
    {"category": "a", "time": 30, "host": "h1"},
    {"category": "b", "time": 40, "host": "h2"},
    {"category": "c", "time": 45, "host": "h2"},
    {"category": "a", "time": 50, "host": "h2"},
    {"category": "b", "time": 60, "host": "h1"},
    {"category": "a", "time": 70, "host": None},
    {"category": "b", "time": 80, "host": None},
]


def matches(result: EqlResult) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    return [(tuple(m.join_keys), tuple(m.row_ids)) for m in result.sequences]


def test_sample_takes_the_earliest_event_of_each_filter_per_key() -> None:
    result = run("sample by host [a where true] [b where true]", HOSTS)
    assert result.kind == "samples"
    assert matches(result) == [(("h1",), (0, 1)), (("h2",), (5, 3))]


def test_sample_several_per_key() -> None:
    result = run("sample by host [a where true] [b where true]", HOSTS, max_samples_per_key=2)
    assert matches(result) == [(("h1",), (0, 1)), (("h1",), (2, 6)), (("h2",), (5, 3))]


def test_sample_optional_key_keeps_null() -> None:
    result = run("sample by ?host [a where true] [b where true]", HOSTS)
    assert sorted(matches(result), key=repr) == sorted(
        [(("h1",), (0, 1)), (("h2",), (5, 3)), ((None,), (7, 8))], key=repr
    )


def test_sample_needs_distinct_events() -> None:
    records = [{"category": "a", "time": 1, "host": "h3"}]
    assert matches(run("sample by host [any where true] [a where true]", records)) == []


def test_join_takes_the_earliest_event_of_each_query_per_key() -> None:
    result = run("join by host [a where true] [b where true]", HOSTS)
    assert result.kind in ("sequences", "samples")
    assert sorted(matches(result)) == [(("h1",), (0, 1)), (("h2",), (5, 3))]


def test_join_until_cuts_each_key_at_its_first_until_event() -> None:
    result = run("join by host [a where true] [b where true] until [c where true]", HOSTS)
    assert sorted(matches(result)) == [(("h1",), (0, 1))]


# -- the AST --------------------------------------------------------------------------------------

ALL_QUERIES = [
    param.values[0]
    for table in (
        COMPARISONS,
        NULLS,
        MATCHING,
        ARITHMETIC,
        FUNCTIONS,
        FIELDS,
        EVENT_PIPES,
        STRING_LITERALS,
    )
    for param in table
] + [
    "sample by host [a where true] [b where true]",
    "sample by ?host [a where true] [b where true]",
    "join by host [a where true] [b where true] until [c where true]",
    "any where pid % 5 == -3",
    "any where modulo(pid, 5) == -3",
    "a where number(code, 16) == 255",
    "a where not (n == 0)",
    "x where true",
    "sequence [a where n == 2] [a where n == 0]",
    "sequence [a where true] [b where true] | count",
    "sequence [process where true] by pid [file where true]",
    "any where nmae == 1",
    "any where true | count",
    "any where true | count pid",
    "any where pid == 4 or pid == 8 | count category, name",
    "any where true | unique_count pid",
    "sequence [process where true] [file where true] with runs=2",
    'sequence by `my-field`, ?opt with maxspan=90m [any where name : ("a*", "b")] by user'
    ' ![network where cidrMatch(ip, "10.0.0.0/8")] by user until ["my-cat" where -pid < 0] by name'
    " | tail 3",
]


@pytest.mark.parametrize("query", ALL_QUERIES)
def test_render_round_trip(query: str) -> None:
    node = parse(query)
    text = node.render()
    assert isinstance(text, str)
    assert parse(text) == node
    assert parse(text).render() == text


def test_ast_is_frozen() -> None:
    node = parse("any where pid == 4")
    with pytest.raises(AttributeError):
        node.pipes = ()  # type: ignore[misc]
    assert hash(node) == hash(parse("any where pid == 4"))
