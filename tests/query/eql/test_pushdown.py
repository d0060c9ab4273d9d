"""EQL over the ledger reads little: pushdown into the segment scan, whole events only for results.

docs/eql.md: a plan finds matches from the few columns its conditions need, and whole events are
read back only for the results returned. On a real ledger on disk (built through the public API,
its writer closed so every event is in Parquet segments) the DuckDB ``EXPLAIN`` of a compiled
three-step sequence, on the catalog ``Ledger.eql`` uses, must show the ``READ_PARQUET`` scan
projecting only the columns the query needs (never ``attrs`` or the hashes) and carrying the
category filter as a pushed-down filter; and ``Ledger.eql`` must count every match while reading
whole events only for the ``size`` it returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from eql_helpers import event

import query.eql.fetch
from query import Ledger
from query.catalog import catalog
from query.eql import compile_query, ledger_source, parse
from query.eql.engine import NATIVE

AGENTS = 6  # each completes the chain once

CHAIN = (
    "sequence by agent_id with maxspan=1h "
    '[secret where action == "secret.read"] '
    '[config where action : "config.*" and outcome == "success"] '
    '[job where action == "job.trigger"]'
)
NEEDED = {"time", "category", "action", "outcome", "agent_id", "writer_id", "seq"}
NEVER = {"attrs", "hash", "leaf_hash", "prev_hash"}


def events() -> list[dict[str, Any]]:
    """Per agent: the chain, with a large-attrs LLM call and a failed config change in it."""
    out = []
    for n in range(AGENTS):
        agent, start = f"agent-{n}", 100 * n
        out += [
            event(f"{agent}-read", start, agent, "secret", "secret.read", outcome="success"),
            event(f"{agent}-llm", start + 1, agent, "llm", "llm.call",
                  attrs={"prompt": "x" * 2000, "tokens": n}),
            event(f"{agent}-fail", start + 2, agent, "config", "config.update", outcome="failure"),
            event(f"{agent}-config", start + 5, agent, "config", "config.update",
                  outcome="success"),
            event(f"{agent}-job", start + 9, agent, "job", "job.trigger", outcome="success"),
        ]  # fmt: skip
    # a chain whose config change failed: no match
    out += [
        event("lone-read", 900, "agent-lone", "secret", "secret.read"),
        event("lone-config", 901, "agent-lone", "config", "config.update", outcome="failure"),
        event("lone-job", 902, "agent-lone", "job", "job.trigger"),
    ]
    return out


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    root = tmp_path_factory.mktemp("pushdown") / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as store:  # closing the writer flushes its events to a segment
        store.append(events())
    opened = Ledger.open(root)
    assert opened.unflushed_table().num_rows == 0
    assert list(root.glob("writers/*/segments/*.parquet"))
    return opened


@pytest.fixture
def connection(ledger: Ledger) -> Iterator[duckdb.DuckDBPyConnection]:
    with catalog(ledger, NATIVE) as connection:
        yield connection


def scans(connection: duckdb.DuckDBPyConnection, query: str) -> list[dict[str, Any]]:
    """The ``extra_info`` of every READ_PARQUET node in the EXPLAIN of ``query``'s plan."""
    plan = compile_query(parse(query), ledger_source(connection))
    explain = "EXPLAIN (FORMAT json) " + plan.sql("duckdb")
    rows = connection.execute(explain, list(plan.parameters)).fetchall()
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        info = node.get("extra_info", {})
        if node.get("name") == "READ_PARQUET" or info.get("Function") == "READ_PARQUET":
            found.append(info)
        for child in node.get("children", []):
            walk(child)

    for _, text in rows:
        for root in json.loads(text):
            walk(root)
    return found


def listed(info: dict[str, Any], key: str) -> list[str]:
    value = info.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def test_sequence_scan_projects_only_the_needed_columns(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    found = scans(connection, CHAIN)
    assert found, "the plan reads no Parquet segment"
    for info in found:
        projected = set(listed(info, "Projections"))
        assert not projected & NEVER
        assert projected == NEEDED


def test_sequence_scan_carries_the_category_filter(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    for info in scans(connection, CHAIN):
        filters = [f for f in listed(info, "Filters") if "category" in f]
        assert filters, f"no category filter pushed into the scan: {info}"
        pushed = " ".join(filters)
        for category in ("'secret'", "'config'", "'job'"):
            assert category in pushed
        assert "'llm'" not in pushed


def test_event_query_scan_pushes_category_and_condition(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    (info,) = scans(connection, 'config where outcome == "success"')
    filters = " ".join(listed(info, "Filters"))
    assert "category = 'config'" in filters
    assert "outcome = 'success'" in filters
    assert not set(listed(info, "Projections")) & NEVER


# -- whole events only for the results returned ---------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (writer_id, seq) whose whole event is read back from a segment."""
    seen: list[tuple[str, int]] = []
    read_stored = query.eql.fetch._read_stored

    def recording(
        connection: duckdb.DuckDBPyConnection, files: list[str], writer_id: str, seqs: set[int]
    ) -> Any:
        seen.extend((writer_id, s) for s in sorted(seqs))
        return read_stored(connection, files, writer_id, seqs)

    def no_wal(*args: object) -> Any:
        raise AssertionError("every event is in a segment: nothing to read from the WAL")

    monkeypatch.setattr(query.eql.fetch, "_read_stored", recording)
    monkeypatch.setattr(query.eql.fetch, "_unflushed", no_wal)
    return seen


def test_sequences_fetch_whole_events_only_for_those_returned(
    ledger: Ledger, reads: list[tuple[str, int]]
) -> None:
    result = ledger.eql(CHAIN, size=2)
    assert result.kind == "sequences"
    assert result.total == AGENTS
    assert result.truncated
    assert len(result.sequences) == 2
    shown = [e for match in result.sequences for e in match.events]
    assert [e["event_id"] for e in shown] == [
        f"agent-{n}-{step}" for n in range(2) for step in ("read", "config", "job")
    ]
    assert sorted(reads) == sorted((e["writer_id"], e["seq"]) for e in shown)
    # whole events: every column, attrs and hashes too
    assert {"attrs", "hash", "prev_hash", "outcome"} <= set(shown[0])


def test_events_fetch_whole_events_only_for_those_returned(
    ledger: Ledger, reads: list[tuple[str, int]]
) -> None:
    result = ledger.eql("llm where true", size=3)
    assert result.total == AGENTS
    assert len(result.events) == 3
    assert [e["event_id"] for e in result.events] == [f"agent-{n}-llm" for n in range(3)]
    assert sorted(reads) == sorted((e["writer_id"], e["seq"]) for e in result.events)
    # the whole event, attrs (JSON text in the view) included
    assert json.loads(result.events[0]["attrs"]) == {"prompt": "x" * 2000, "tokens": 0}


def test_counts_read_no_whole_event(ledger: Ledger, reads: list[tuple[str, int]]) -> None:
    result = ledger.eql("config where true | count outcome")
    assert result.kind == "counts"
    assert {c["key"]: c["count"] for c in result.counts} == {
        "failure": AGENTS + 1,
        "success": AGENTS,
    }
    assert reads == []
