"""``Ledger.eql`` end to end: EQL over a real ledger on disk, built through the public API.

Hand-written events (DESIGN.md §2) are appended to ledgers in ``tmp_path``; the queries run over the
logical ``events`` view (one row per event_id, ordered by time, then writer and seq) and the answers
are checked event by event: pipes, sequences (maxspan, missing steps, runs), ``attrs`` paths,
optional and unknown fields, duplicates across writer logs, freshness, ``as_of``, the result limit,
``sample`` and ``join``. Conformance over in-memory records lives in tests/query/eql/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eql_helpers import MISSING_APPROVAL, T0, THREE_STEPS, event

from query import Ledger, QueryError
from query.eql import EqlError, EqlResult, EqlSyntaxError

# The planted chain, decoys around it, and background activity.
EVENTS = [
    # secret.read -> config.* -> job.trigger by one agent within 50 minutes: THE chain
    event("chain-1", 0, "agent-chain", "secret", "secret.read", resource="secret://vault/prod/db"),
    event("llm-1", 1, "agent-chain", "llm", "llm.call",
          attrs={"model": {"name": "gpt-x", "provider": "openai"}, "tokens": 1200}),
    event("llm-2", 2, "agent-slow", "llm", "llm.call",
          attrs={"model": {"name": "claude-y"}, "tokens": 300}),
    event("tool-1", 3, "agent-chain", "tool", "tool.call", tool="search", outcome="success"),
    event("chain-2", 20, "agent-chain", "config", "config.update", resource="config://prod/payments"),
    event("chain-3", 50, "agent-chain", "job", "job.trigger", privileged=True),
    # the same three steps, but 65 minutes from first to last: outside maxspan
    event("slow-1", 0, "agent-slow", "secret", "secret.read"),
    event("slow-2", 30, "agent-slow", "config", "config.update"),
    event("slow-3", 65, "agent-slow", "job", "job.trigger"),
    # the steps split over two agents: no chain for either
    event("x-1", 5, "agent-x", "secret", "secret.read"),
    event("y-1", 10, "agent-y", "config", "config.update"),
    event("x-2", 15, "agent-x", "job", "job.trigger"),
    # a secret read and a job trigger with an approval between them
    event("ok-1", 0, "agent-approved", "secret", "secret.read"),
    event("ok-2", 5, "agent-approved", "approval", "approval.grant", approver="alice"),
    event("ok-3", 10, "agent-approved", "job", "job.trigger"),
    # three exports then an external send; and a decoy with only two exports
    event("exp-1", 30, "agent-exporter", "data", "data.export", bytes=10),
    event("exp-2", 31, "agent-exporter", "data", "data.export", bytes=20),
    event("exp-3", 32, "agent-exporter", "data", "data.export", bytes=30),
    event("net-1", 33, "agent-exporter", "network", "network.send",
          destination="paste.example", external=True),
    event("two-1", 40, "agent-two", "data", "data.export"),
    event("two-2", 41, "agent-two", "data", "data.export"),
    event("two-3", 42, "agent-two", "network", "network.send",
          destination="paste.example", external=True),
]  # fmt: skip
BY_ID = {e["event_id"]: e for e in EVENTS}


def ordered(ids: list[str]) -> list[str]:
    """``ids`` in the ledger's order (time; one writer log, so then append order)."""
    position = {e["event_id"]: i for i, e in enumerate(EVENTS)}
    return sorted(ids, key=lambda i: (BY_ID[i]["time"], position[i]))


ALL_IDS = ordered([e["event_id"] for e in EVENTS])


def ids(result: EqlResult) -> list[str]:
    assert result.kind == "events"
    return [e["event_id"] for e in result.events]


def chains(result: EqlResult) -> list[tuple[list[Any], list[str | None]]]:
    """Each sequence's join keys and its events' ids (None for a missing step)."""
    assert result.kind in ("sequences", "samples")
    return [
        (list(s.join_keys), [None if e.get("missing") else e["event_id"] for e in s.events])
        for s in result.sequences
    ]


def build(root: Path, events: list[dict[str, Any]]) -> Ledger:
    Ledger.init(root)
    with Ledger.open(root) as store:
        store.append(events)
    return Ledger.open(root)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """The events above in one writer log, flushed to Parquet (read-only for the tests)."""
    return build(tmp_path_factory.mktemp("eql") / "ledger", EVENTS)


# -- event queries and pipes ----------------------------------------------------------------------


def test_event_query_returns_stored_events_in_time_order(ledger: Ledger) -> None:
    result = ledger.eql('secret where action == "secret.read"')
    assert isinstance(result, EqlResult)
    assert not result.truncated
    assert ids(result) == ordered(["chain-1", "slow-1", "x-1", "ok-1"])
    first = result.events[0]
    assert first["resource"] == "secret://vault/prod/db"
    assert first["time"] == T0
    assert {"writer_id", "seq", "hash"} <= set(first)
    assert result.row_ids == tuple(ids(result))


def test_any_matches_every_event(ledger: Ledger) -> None:
    assert ids(ledger.eql("any where true")) == ALL_IDS


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('any where agent_id == "agent-chain" | head 2', ["chain-1", "llm-1"]),
        ('any where agent_id == "agent-chain" | tail 2', ["chain-2", "chain-3"]),
        ('any where agent_id == "agent-chain" | filter category != "llm"',
         ["chain-1", "tool-1", "chain-2", "chain-3"]),
        ('any where agent_id == "agent-chain" | filter category != "llm" | head 1', ["chain-1"]),
        ("data where bytes > 0 | sort bytes desc", ["exp-3", "exp-2", "exp-1"]),
        ('any where agent_id == "agent-x" or agent_id == "agent-y" | sort agent_id desc',
         ["y-1", "x-1", "x-2"]),
        ('job where true | unique agent_id | head 2', ["ok-3", "x-2"]),
        ('network where external == true and destination : "PASTE.*"', ["net-1", "two-3"]),
        ('any where action in ("approval.grant", "tool.call")', ["tool-1", "ok-2"]),
        ('any where privileged == true', ["chain-3"]),
        ('any where startsWith(resource, "config://")', ["chain-2"]),
        # null semantics: != does not match an event without the field
        ('any where outcome != "failure"', ["tool-1"]),
        ("any where outcome == null and tool != null", []),
    ],
)  # fmt: skip
def test_event_query_pipes(ledger: Ledger, query: str, expected: list[str]) -> None:
    assert ids(ledger.eql(query)) == expected


def test_count_pipes(ledger: Ledger) -> None:
    total = ledger.eql("secret where true | count")
    assert total.kind == "counts"
    assert list(total.counts) == [{"count": 4}]
    by_agent = ledger.eql('any where category in ("job", "approval") | count agent_id')
    assert by_agent.kind == "counts"
    # ordered by count, then key
    assert list(by_agent.counts) == [
        {"key": "agent-chain", "count": 1, "percent": 0.2},
        {"key": "agent-slow", "count": 1, "percent": 0.2},
        {"key": "agent-x", "count": 1, "percent": 0.2},
        {"key": "agent-approved", "count": 2, "percent": 0.4},
    ]


def test_unique_count(ledger: Ledger) -> None:
    result = ledger.eql("secret where true | unique_count agent_id")
    assert ids(result) == ordered(["chain-1", "slow-1", "x-1", "ok-1"])
    assert [e["count"] for e in result.events] == [1, 1, 1, 1]
    per_agent = ledger.eql("any where true | unique_count agent_id")
    expected: dict[str, int] = {}
    for e in EVENTS:
        expected[e["agent_id"]] = expected.get(e["agent_id"], 0) + 1
    assert {e["agent_id"]: e["count"] for e in per_agent.events} == expected
    firsts = [next(i for i in ALL_IDS if BY_ID[i]["agent_id"] == agent) for agent in expected]
    assert sorted(ids(per_agent)) == sorted(firsts)


# -- sequences ------------------------------------------------------------------------------------


def test_three_step_sequence_finds_exactly_the_planted_chain(ledger: Ledger) -> None:
    result = ledger.eql(THREE_STEPS)
    assert result.kind == "sequences"
    assert chains(result) == [(["agent-chain"], ["chain-1", "chain-2", "chain-3"])]
    match = result.sequences[0]
    assert match.row_ids == ("chain-1", "chain-2", "chain-3")
    assert [e["action"] for e in match.events] == ["secret.read", "config.update", "job.trigger"]
    assert match.to_json()["join_keys"] == ["agent-chain"]


def test_the_decoy_outside_maxspan_is_found_with_a_longer_span(ledger: Ledger) -> None:
    longer = THREE_STEPS.replace("maxspan=1h", "maxspan=65m")
    assert chains(ledger.eql(longer)) == [
        (["agent-chain"], ["chain-1", "chain-2", "chain-3"]),
        (["agent-slow"], ["slow-1", "slow-2", "slow-3"]),
    ]
    # maxspan is inclusive: the decoy's 65 minutes exactly fit, 64m59s do not
    shorter = THREE_STEPS.replace("maxspan=1h", "maxspan=3899s")
    assert chains(ledger.eql(shorter)) == [(["agent-chain"], ["chain-1", "chain-2", "chain-3"])]


def test_sequence_without_by_crosses_agents(ledger: Ledger) -> None:
    # without a join key, agent-x's read, agent-y's config change and agent-approved's job
    # (all within 5 minutes) make one sequence
    query = "sequence with maxspan=10m [secret where true] [config where true] [job where true]"
    assert chains(ledger.eql(query)) == [([], ["x-1", "y-1", "ok-3"])]


def test_missing_step_rejects_the_approved_pair(ledger: Ledger) -> None:
    result = ledger.eql(MISSING_APPROVAL)
    # agent-approved has an approval between its read and trigger; agent-slow exceeds maxspan
    assert chains(result) == [
        (["agent-x"], ["x-1", None, "x-2"]),
        (["agent-chain"], ["chain-1", None, "chain-3"]),
    ]
    for match in result.sequences:
        assert match.events[1] == {"missing": True}
        assert match.row_ids[1] is None
    # without the missing step the approved pair is a match too
    plain = MISSING_APPROVAL.replace("![approval where true] ", "")
    assert ["agent-approved"] in [keys for keys, _ in chains(ledger.eql(plain))]


def test_trailing_missing_step(ledger: Ledger) -> None:
    # reads not followed by a job trigger (of the same agent) within the hour
    query = (
        "sequence by agent_id with maxspan=1h "
        '[secret where action == "secret.read"] [any where category != "job"] ![job where true]'
    )
    # agent-chain and agent-approved trigger a job within the hour of their read; agent-slow's
    # job comes 65 minutes after it, more than maxspan; agent-x has no second (non-job) event
    assert chains(ledger.eql(query)) == [(["agent-slow"], ["slow-1", "llm-2", None])]


def test_runs_repeats_a_step(ledger: Ledger) -> None:
    query = (
        "sequence by agent_id with maxspan=10m "
        '[data where action == "data.export"] with runs=3 '
        "[network where external == true]"
    )
    result = ledger.eql(query)
    assert chains(result) == [(["agent-exporter"], ["exp-1", "exp-2", "exp-3", "net-1"])]
    spelled_out = ledger.eql(
        "sequence by agent_id with maxspan=10m "
        '[data where action == "data.export"] [data where action == "data.export"] '
        '[data where action == "data.export"] [network where external == true]'
    )
    assert chains(spelled_out) == chains(result)


def test_until_drops_pending_matches(ledger: Ledger) -> None:
    query = "sequence by agent_id [secret where true] [job where true] until [approval where true]"
    # agent-approved's approval comes between its read and its trigger
    assert chains(ledger.eql(query)) == [
        (["agent-x"], ["x-1", "x-2"]),
        (["agent-chain"], ["chain-1", "chain-3"]),
        (["agent-slow"], ["slow-1", "slow-3"]),
    ]


def test_sequence_head_and_tail(ledger: Ledger) -> None:
    assert [k for k, _ in chains(ledger.eql(MISSING_APPROVAL + " | head 1"))] == [["agent-x"]]
    assert [k for k, _ in chains(ledger.eql(MISSING_APPROVAL + " | tail 1"))] == [["agent-chain"]]


# -- fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('llm where attrs.model.name == "gpt-x"', ["llm-1"]),
        ('any where attrs.model.provider == "openai"', ["llm-1"]),
        ('llm where attrs.model.name : "CLAUDE-*"', ["llm-2"]),
        ("llm where attrs.tokens > 1000", ["llm-1"]),
        ("llm where attrs.tokens < 1000", ["llm-2"]),
        ("llm where attrs.tokens + 100 == 400", ["llm-2"]),
        ("any where attrs.model.provider != null", ["llm-1"]),
        # a path that is absent in an event's attrs is null: != matches nothing there
        ('llm where attrs.model.provider != "openai"', []),
    ],
)
def test_attrs_paths(ledger: Ledger, query: str, expected: list[str]) -> None:
    assert ids(ledger.eql(query)) == expected


def test_attrs_is_returned_as_stored_json(ledger: Ledger) -> None:
    (found,) = ledger.eql('llm where attrs.model.name == "gpt-x"').events
    attrs = found["attrs"]
    value = attrs if isinstance(attrs, dict) else json.loads(attrs)
    assert value == {"model": {"name": "gpt-x", "provider": "openai"}, "tokens": 1200}


def test_optional_field_is_null_when_absent(ledger: Ledger) -> None:
    assert ids(ledger.eql("any where ?no_such_field == null")) == ALL_IDS
    assert ids(ledger.eql('any where ?no_such_field == "x"')) == []
    # an optional field that exists is just the field
    assert ids(ledger.eql('any where ?destination == "paste.example"')) == ["net-1", "two-3"]


def test_optional_join_key_null_equals_null(ledger: Ledger) -> None:
    # every event has a null ?missing key, so the key joins nothing apart: the newest llm pending
    # match is completed by the next tool event
    assert chains(ledger.eql("sequence by ?missing [llm where true] [tool where true]")) == [
        ([None], ["llm-2", "tool-1"])
    ]
    # a non-optional key that is null (tool is null on llm events) keeps events out
    assert chains(ledger.eql("sequence by tool [llm where true] [tool where true]")) == []


def test_unknown_field_names_it_and_suggests_a_near_name(ledger: Ledger) -> None:
    with pytest.raises(EqlError) as raised:
        ledger.eql('secret where agent_di == "agent-chain"')
    message = str(raised.value)
    assert "'agent_di'" in message
    assert "agent_id" in message
    assert "?agent_di" in message
    assert isinstance(raised.value, QueryError)


def test_unknown_field_in_a_sequence_step(ledger: Ledger) -> None:
    with pytest.raises(EqlError, match="actoin"):
        ledger.eql('sequence [secret where true] [job where actoin == "job.trigger"]')


def test_syntax_error_is_located(ledger: Ledger) -> None:
    bad_line = "  [secret where action == ]"
    with pytest.raises(EqlSyntaxError) as raised:
        ledger.eql(f"sequence by agent_id\n{bad_line}\n  [job where true]")
    message = str(raised.value)
    column = bad_line.index("]") + 1
    assert f"line 2, column {column}" in message
    assert message.splitlines()[-2:] == [bad_line, " " * (column - 1) + "^"]
    assert isinstance(raised.value, QueryError)


# -- sample and join ------------------------------------------------------------------------------


def test_sample_by_agent(ledger: Ledger) -> None:
    result = ledger.eql("sample by agent_id [secret where true] [job where true]")
    assert result.kind == "samples"
    assert chains(result) == [
        (["agent-approved"], ["ok-1", "ok-3"]),
        (["agent-chain"], ["chain-1", "chain-3"]),
        (["agent-slow"], ["slow-1", "slow-3"]),
        (["agent-x"], ["x-1", "x-2"]),
    ]


def test_sample_needs_distinct_events(ledger: Ledger) -> None:
    result = ledger.eql("sample by agent_id [data where bytes == 30] [data where bytes >= 10]")
    assert chains(result) == [(["agent-exporter"], ["exp-3", "exp-1"])]
    # both filters match only exp-3: a sample needs two different events
    assert (
        chains(ledger.eql("sample by agent_id [data where bytes == 30] [data where bytes == 30]"))
        == []
    )


def test_join_stops_at_until(ledger: Ledger) -> None:
    result = ledger.eql(
        "join by agent_id [secret where true] [job where true] until [approval where true]"
    )
    found = sorted(chains(result))
    # agent-approved's job comes after its approval
    assert found == [
        (["agent-chain"], ["chain-1", "chain-3"]),
        (["agent-slow"], ["slow-1", "slow-3"]),
        (["agent-x"], ["x-1", "x-2"]),
    ]


# -- limits ---------------------------------------------------------------------------------------


# The limit is passed by position: the keyword is max_rows (being renamed size in the engine).


def test_max_rows_truncates_events(ledger: Ledger) -> None:
    cut = ledger.eql("any where true", 3)
    assert cut.truncated
    assert ids(cut) == ALL_IDS[:3]
    exact = ledger.eql("any where true", len(EVENTS))
    assert not exact.truncated
    assert ids(exact) == ALL_IDS


def test_max_rows_truncates_sequences(ledger: Ledger) -> None:
    cut = ledger.eql(MISSING_APPROVAL, 1)
    assert cut.truncated
    assert chains(cut) == [(["agent-x"], ["x-1", None, "x-2"])]
    assert not ledger.eql(MISSING_APPROVAL, 2).truncated


# -- the ledger as it changes ---------------------------------------------------------------------


def test_duplicates_through_two_writers_appear_once(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    first, second = Ledger.open(root), Ledger.open(root)
    try:
        shared = BY_ID["chain-2"]
        one = first.append([BY_ID["chain-1"], shared])
        two = second.append([shared, BY_ID["chain-3"]])
        assert one.writer_id != two.writer_id
        raw = first.sql("SELECT count(*) AS n FROM events_raw WHERE event_id = 'chain-2'")
        assert raw.column("n").to_pylist() == [2]
        assert ids(first.eql("config where true")) == ["chain-2"]
        assert list(first.eql("any where true | count").counts) == [{"count": 3}]
        (only,) = first.eql('any where event_id == "chain-2"').events
        assert (only["writer_id"], only["seq"]) == (one.writer_id, one[1].seq)
        assert chains(first.eql(THREE_STEPS)) == [
            (["agent-chain"], ["chain-1", "chain-2", "chain-3"])
        ]
        sample = second.eql("sample by agent_id [config where true] [job where true]")
        assert chains(sample) == [(["agent-chain"], ["chain-2", "chain-3"])]
    finally:
        first.close()
        second.close()
    # the same once both logs are flushed to Parquet
    assert ids(Ledger.open(root).eql("any where true")) == ["chain-1", "chain-2", "chain-3"]


def test_equal_times_are_ordered_by_writer_then_seq(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    first, second = Ledger.open(root), Ledger.open(root)
    try:
        a = first.append([event(f"a-{i}", 0, "agent-a", "tool", "tool.call") for i in range(2)])
        b = second.append([event(f"b-{i}", 0, "agent-b", "tool", "tool.call") for i in range(2)])
        by_writer = {a.writer_id: ["a-0", "a-1"], b.writer_id: ["b-0", "b-1"]}
        expected = [i for writer in sorted(by_writer) for i in by_writer[writer]]
        assert ids(first.eql("tool where true")) == expected
        # and a sequence over them follows the same order
        found = chains(first.eql("sequence [tool where true] [tool where true] | head 1"))
        assert found == [([], expected[:2])]
    finally:
        first.close()
        second.close()


def test_events_appended_by_this_process_are_visible_to_the_next_query(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    store = Ledger.open(root)
    reader = Ledger.open(root)
    try:
        assert ids(store.eql("any where true")) == []
        store.append([BY_ID["chain-1"], BY_ID["chain-2"]])
        assert store.segment_files() == []  # only in the write-ahead log
        assert ids(store.eql("any where true")) == ["chain-1", "chain-2"]
        assert chains(store.eql(THREE_STEPS)) == []
        store.append([BY_ID["chain-3"]])
        assert chains(store.eql(THREE_STEPS)) == [
            (["agent-chain"], ["chain-1", "chain-2", "chain-3"])
        ]
        assert chains(reader.eql(THREE_STEPS)) == chains(store.eql(THREE_STEPS))
        store.flush()
        store.append([event("late-1", 55, "agent-chain", "job", "job.trigger")])
        assert ids(store.eql("job where true")) == ["chain-3", "late-1"]
    finally:
        store.close()


def answers(store: Ledger, as_of: int | None) -> list[Any]:
    queries = (THREE_STEPS, MISSING_APPROVAL, "any where true | count", "job where true")
    return [store.eql(q, as_of=as_of).to_json() for q in queries]


def test_as_of_a_checkpoint_keeps_its_answer(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    build(root, EVENTS)
    signed = Ledger.open(root).checkpoint()
    pinned = answers(Ledger.open(root), as_of=signed.number)
    assert pinned == answers(Ledger.open(root), as_of=None)
    # a second chain arrives in the same log, then in a live writer's WAL and a second log
    late = [
        event("late-1", 0, "agent-late", "secret", "secret.read"),
        event("late-2", 10, "agent-late", "config", "config.create"),
    ]
    with Ledger.open(root) as store:
        store.append(late)
    other = Ledger.open(root)
    live = Ledger.open(root)
    try:
        other.append([event("late-3", 20, "agent-late", "job", "job.trigger")])
        live.append([event("late-0", -1, "agent-chain", "secret", "secret.read")])
        now = Ledger.open(root)
        assert answers(now, as_of=signed.number) == pinned
        assert chains(now.eql(THREE_STEPS, as_of=signed.number)) == [
            (["agent-chain"], ["chain-1", "chain-2", "chain-3"])
        ]
        assert chains(now.eql(THREE_STEPS)) == [
            (["agent-late"], ["late-1", "late-2", "late-3"]),
            (["agent-chain"], ["chain-1", "chain-2", "chain-3"]),
        ]
        second = now.checkpoint()
        assert second.number == signed.number + 1
        assert answers(now, as_of=second.number) == answers(now, as_of=None)
        assert answers(now, as_of=signed.number) == pinned
    finally:
        other.close()
        live.close()


def test_as_of_an_unknown_checkpoint_is_an_error(ledger: Ledger) -> None:
    with pytest.raises(Exception, match="checkpoint 99"):
        ledger.eql("any where true", as_of=99)
