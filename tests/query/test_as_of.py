"""``sql(..., as_of=N)``: answers exactly as of signed ledger checkpoint N; the checkpoints view.

A ledger is built in steps, a checkpoint signed after each; the answers pinned to an early
checkpoint are taken, then more events arrive (in the same writer logs, in a new one, still in a
live writer's WAL, and through a sync that brings in earlier-observed copies of known event_ids),
and the pinned answers must not move.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ledger import LedgerError
from ledger.checkpoints import LedgerCheckpoint
from query import Ledger, QueryError
from sample_data import SimulationConfig, iter_events

FIRST_EVENTS = list(iter_events(SimulationConfig(events=600, seed=1)))
QUERIES = (
    "select count(*) as n, count(distinct event_id) as ids from events",
    "select count(*) as n from events_raw",
    "select category, count(*) as n from events group by 1 order by 1",
    "select agent_id, count(*) as n, min(time) as first, max(time) as last "
    "from events group by 1 order by 2 desc, 1 limit 10",
    "select event_id, writer_id, seq, hash from events order by event_id",
    "select writer_id, events, first_seq, last_seq, last_hash from writers order by 1",
    "select session_id, count(*) as n from events where outcome <> 'success' "
    "group by 1 order by 2 desc, 1 limit 5",
)


def simulated(count: int, seed: int) -> list[dict[str, Any]]:
    """Simulated agent activity, with the retries (repeated event_ids) the simulator makes."""
    return list(iter_events(SimulationConfig(events=count, seed=seed)))


def answers(root: Path, as_of: int | None) -> list[pa.Table]:
    store = Ledger.open(root)
    return [store.sql(query, as_of=as_of) for query in QUERIES]


def sizes_in_view(root: Path, as_of: int | None) -> dict[str, tuple[int, int]]:
    table = Ledger.open(root).sql(
        "select writer_id, count(*) as n, max(seq) as top from events_raw group by 1",
        as_of=as_of,
    )
    return {row["writer_id"]: (row["n"], row["top"]) for row in table.to_pylist()}


class Steps:
    """The ledger at each step, and what each checkpoint signed."""

    def __init__(self, root: Path, edge: Path) -> None:
        self.root = root
        self.edge = edge
        self.signed: list[LedgerCheckpoint] = []

    def checkpoint(self) -> LedgerCheckpoint:
        signed = Ledger.open(self.root).checkpoint()
        self.signed.append(signed)
        return signed


@pytest.fixture
def steps(tmp_path: Path) -> Steps:
    # An edge node stores some of the same events first; it is merged in later by one test.
    edge = tmp_path / "edge"
    Ledger.init(edge, ledger_id="edge")
    with Ledger.open(edge) as store:
        store.append(FIRST_EVENTS[:40])
    root = tmp_path / "ledger"
    Ledger.init(root, ledger_id="asof")
    built = Steps(root, edge)
    first, second = Ledger.open(root), Ledger.open(root)
    first.append(FIRST_EVENTS)
    second.append(simulated(300, seed=2))
    first.close()
    second.close()
    assert built.checkpoint().number == 1
    return built


def test_answers_as_of_a_checkpoint_never_change(steps: Steps) -> None:
    root = steps.root
    pinned = answers(root, as_of=1)
    assert pinned == answers(root, as_of=None), "nothing arrived after checkpoint 1 yet"
    # more events in the same logs, and a second checkpoint
    with Ledger.open(root) as store:
        store.append(simulated(400, seed=3))
    steps.checkpoint()
    at_two = answers(root, as_of=2)
    # a third writer log, a live writer's WAL-only events, and a third checkpoint
    a, b = Ledger.open(root), Ledger.open(root)
    c = Ledger.open(root)
    try:
        a.append(simulated(50, seed=4))
        b.append(simulated(50, seed=5))
        new_log = c.append(simulated(200, seed=6)).writer_id
        assert new_log not in {w.writer_id for w in steps.signed[0].writers}
        steps.checkpoint()
        c.append(simulated(30, seed=7))  # acknowledged, in the WAL, after checkpoint 3
        assert answers(root, as_of=1) == pinned
        assert answers(root, as_of=2) == at_two
        now = answers(root, as_of=None)
        assert now != pinned
    finally:
        a.close()
        b.close()
        c.close()
    # an earlier-observed copy of known event_ids arrives through a sync: the logical
    # copy of those ids moves to it now, but not as of the checkpoints that did not have it
    assert Ledger.open(root).sync(steps.edge).ok
    assert answers(root, as_of=1) == pinned
    assert answers(root, as_of=2) == at_two
    moved = Ledger.open(root).sql(
        "select count(*) as n from events where writer_id in (select writer_id from writers "
        "where writer_id not in (select writer_id from checkpoints))"
    )
    early = len({e["event_id"] for e in FIRST_EVENTS[:40]})
    assert moved.column("n")[0].as_py() == early, "the earlier copies are the logical ones now"
    assert answers(root, as_of=None) != now


def test_as_of_bounds_each_writer_log_at_its_signed_size(steps: Steps) -> None:
    root = steps.root
    with Ledger.open(root) as store:
        store.append(simulated(250, seed=8))
    second = steps.checkpoint()
    extra = Ledger.open(root)
    try:
        extra.append(simulated(20, seed=9))  # stays in the WAL
        for signed in steps.signed:
            expected = {w.writer_id: (w.tree_size, w.tree_size - 1) for w in signed.writers}
            assert sizes_in_view(root, as_of=signed.number) == expected
        now = sizes_in_view(root, as_of=None)
        assert sum(n for n, _ in now.values()) > sum(w.tree_size for w in second.writers)
    finally:
        extra.close()
    # the writers view is bounded the same way
    writers = (
        Ledger.open(root)
        .sql("select writer_id, events, last_seq from writers order by 1", as_of=1)
        .to_pylist()
    )
    assert writers == [
        {"writer_id": w.writer_id, "events": w.tree_size, "last_seq": w.tree_size - 1}
        for w in steps.signed[0].writers
    ]


def test_checkpoints_view_lists_every_signed_writer_state(steps: Steps) -> None:
    root = steps.root
    with Ledger.open(root) as store:
        store.append(simulated(100, seed=10))
    steps.checkpoint()
    rows = (
        Ledger.open(root)
        .sql("select number, time, writer_id, tree_size, root from checkpoints order by 1, 3")
        .to_pylist()
    )
    expected = [
        {
            "number": signed.number,
            "time": datetime.fromisoformat(signed.time),
            "writer_id": w.writer_id,
            "tree_size": w.tree_size,
            "root": w.root.hex(),
        }
        for signed in steps.signed
        for w in signed.writers
    ]
    assert rows == expected
    assert {row["number"] for row in rows} == {1, 2}
    assert all(row["time"].tzinfo is not None for row in rows)


def test_checkpoints_view_as_of_a_checkpoint_never_changes(steps: Steps) -> None:
    query = "select number, writer_id, tree_size, root from checkpoints order by 1, 2"
    pinned = Ledger.open(steps.root).sql(query, as_of=1)
    assert set(pinned.column("number").to_pylist()) == {1}
    with Ledger.open(steps.root) as store:
        store.append(simulated(50, seed=13))
    steps.checkpoint()
    assert Ledger.open(steps.root).sql(query, as_of=1) == pinned


def test_checkpoints_view_leaves_out_a_checkpoint_whose_signature_fails(steps: Steps) -> None:
    steps.checkpoint()
    note = steps.root / "checkpoints" / f"{2:012d}" / "ledger.note"
    text = note.read_text(encoding="utf-8")
    lines = text.split("\n")
    lines[3] = "2000-01-01T00:00:00.000000Z"  # back-date the checkpoint
    note.write_text("\n".join(lines), encoding="utf-8")
    numbers = Ledger.open(steps.root).sql("select distinct number from checkpoints order by 1")
    assert numbers.column("number").to_pylist() == [1]
    with pytest.raises(LedgerError, match="signature"):
        Ledger.open(steps.root).sql("select count(*) from events", as_of=2)


@pytest.mark.parametrize("number", [0, 2, 99])
def test_an_unknown_checkpoint_number_is_a_clear_error(steps: Steps, number: int) -> None:
    with pytest.raises((LedgerError, QueryError), match=rf"no checkpoint {number}\b"):
        Ledger.open(steps.root).sql("select count(*) from events", as_of=number)


def test_as_of_on_a_ledger_without_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as store:
        store.append(simulated(10, seed=11))
    assert Ledger.open(root).sql("select count(*) as n from checkpoints").column(0)[0].as_py() == 0
    with pytest.raises(LedgerError, match="no checkpoint 1"):
        Ledger.open(root).sql("select count(*) from events", as_of=1)


def test_as_of_answers_survive_a_copy_of_the_ledger(steps: Steps, tmp_path: Path) -> None:
    """The pinned answer depends on the signed data only, not on where the ledger lives."""
    pinned = answers(steps.root, as_of=1)
    copy = tmp_path / "copy"
    shutil.copytree(steps.root, copy)
    with Ledger.open(copy) as store:
        store.append(simulated(80, seed=12))
    assert answers(copy, as_of=1) == pinned
