"""Merging ledgers (``Ledger.sync``): a grow-only, order-independent union of writer logs.

Three ledgers are written independently (different writers, some event_ids stored by more than
one of them, as client retries to different edge nodes would). Every test works on fresh copies
made with ``shutil.copytree``, so each merge starts from the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import canonical_of, unique_events

from ledger import LedgerError
from ledger.hashing import chain_hash, leaf_hash
from ledger.layout import WriterLayout
from ledger.merkle import root_from_leaves
from ledger.schema import SEGMENT_SCHEMA
from ledger.sync import SyncReport
from ledger.writer import WriterLog
from query import Ledger

EVENTS_QUERY = "select event_id, writer_id, seq, hash from events order by event_id"
NAMES = ("A", "B", "C")


@dataclass(frozen=True)
class Sources:
    """Three independently written ledgers (A has two writer logs, B and C one each)."""

    roots: dict[str, Path]
    writers: dict[str, tuple[str, ...]]
    all_event_ids: frozenset[str]
    first_copy: dict[str, str]  # event_id -> writer_id of its earliest stored copy
    stored_rows: int

    def copy(self, name: str, destination: Path) -> Path:
        shutil.copytree(self.roots[name], destination)
        return destination


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    """A writes two logs; B relays an early copy of them, C relays B; then A's first log grows.

    So the three ledgers hold different lengths of the same writer log as well as their own
    logs, and some event_ids are stored by several writers.
    """
    base = tmp_path_factory.mktemp("sync-sources")
    pool = unique_events(800, seed=5)
    own = {"A1": pool[0:150], "A2": pool[150:250], "B": pool[250:450], "C": pool[450:640]}
    shared_ab, shared_ac, shared_bc = pool[640:660], pool[660:680], pool[680:700]
    later_a1 = pool[700:800]
    roots = {name: base / name for name in NAMES}
    writers: dict[str, tuple[str, ...]] = {}
    first_copy: dict[str, str] = {}

    def remember(writer_id: str, batch: Sequence[dict[str, Any]]) -> None:
        for event in batch:
            first_copy.setdefault(event["event_id"], writer_id)

    # Written one after the other, so the copies of a shared event_id in A are observed first.
    Ledger.init(roots["A"], ledger_id="edge-a")
    a1, a2 = Ledger.open(roots["A"]), Ledger.open(roots["A"])
    batch_1, batch_2 = own["A1"] + shared_ab, own["A2"] + shared_ac
    id_1 = a1.append(batch_1).writer_id
    remember(id_1, batch_1)
    id_2 = a2.append(batch_2).writer_id
    remember(id_2, batch_2)
    a1.close()
    a2.close()
    writers["A"] = (id_1, id_2)
    for name, batch in (
        ("B", own["B"] + shared_ab + shared_bc),
        ("C", own["C"] + shared_ac + shared_bc),
    ):
        Ledger.init(roots[name], ledger_id=f"edge-{name.lower()}")
        with Ledger.open(roots[name]) as store:
            writer_id = store.append(batch).writer_id
        remember(writer_id, batch)
        writers[name] = (writer_id,)
        relay = Ledger.open(roots[name]).sync(roots["A" if name == "B" else "B"])
        assert relay.ok and relay.writers_added
    append_to(roots["A"], id_1, later_a1)  # B and C now hold a shorter copy of this log
    remember(id_1, later_a1)
    for root in roots.values():
        Ledger.open(root).checkpoint()  # each source has signed its own state once
        assert Ledger.open(root).verify().ok
    held = {name: set(os.listdir(root / "writers")) for name, root in roots.items()}
    assert held["A"] == set(writers["A"])
    assert held["B"] == {*writers["A"], *writers["B"]}
    assert held["C"] == {*writers["A"], *writers["B"], *writers["C"]}
    stored = sum(log_rows(roots["A"], w).num_rows for w in writers["A"])
    stored += sum(log_rows(roots[n], writers[n][0]).num_rows for n in ("B", "C"))
    return Sources(roots, writers, frozenset(e["event_id"] for e in pool), first_copy, stored)


def events_rows(root: Path) -> list[tuple[Any, ...]]:
    table = Ledger.open(root).sql(EVENTS_QUERY)
    return list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True))


def count(root: Path, view: str) -> int:
    value = Ledger.open(root).sql(f"select count(*) as n from {view}").column("n")[0].as_py()
    assert isinstance(value, int)
    return value


def writer_states(root: Path) -> dict[str, tuple[int, bytes]]:
    signed = Ledger.open(root).checkpoint()
    return {w.writer_id: (w.tree_size, w.root) for w in signed.writers}


def log_rows(root: Path, writer_id: str, columns: Sequence[str] = ("seq", "hash")) -> pa.Table:
    paths = sorted((root / "writers" / writer_id / "segments").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p, columns=list(columns)) for p in paths])


def snapshot(root: Path) -> dict[str, str]:
    """The hash of every data file of every writer log (segments and head.json)."""
    found = {}
    for path in sorted((root / "writers").rglob("*")):
        if path.is_file() and (path.suffix == ".parquet" or path.name == "head.json"):
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# -- order independence --------------------------------------------------------------------------


def test_merging_in_every_order_gives_the_same_events_and_roots(
    sources: Sources, tmp_path: Path
) -> None:
    views = {}
    roots = {}
    all_writers = {w for ids in sources.writers.values() for w in ids}
    for order in permutations(NAMES):
        label = "".join(order)
        work = tmp_path / label
        destination = sources.copy(order[0], work / "dest")
        store = Ledger.open(destination)
        for name in order[1:]:
            report = store.sync(sources.copy(name, work / name))
            assert report.ok, report
            assert report.equivocations == ()
            assert set(report.writers_added) <= all_writers
        # the longest copy of A's first log wins whichever way it came
        assert log_rows(destination, sources.writers["A"][0]).equals(
            log_rows(sources.roots["A"], sources.writers["A"][0])
        )
        views[label] = events_rows(destination)
        roots[label] = writer_states(destination)  # signs checkpoint 2 over the merged logs
        assert set(roots[label]) == all_writers
        assert count(destination, "events_raw") == sources.stored_rows
        verdict = Ledger.open(destination).verify()  # the merged logs and both checkpoints
        assert verdict.ok, (label, verdict.problems)
        assert verdict.events == sources.stored_rows
    reference = views["ABC"]
    for label, rows in views.items():
        assert rows == reference, f"merge order {label} gives another events view"
        assert roots[label] == roots["ABC"], f"merge order {label} gives other roots"
    # the logical view: one row per event_id, its earliest stored copy
    assert [row[0] for row in reference] == sorted(sources.all_event_ids)
    assert {row[0]: row[1] for row in reference} == sources.first_copy
    # and the roots are those of the source logs, untouched by the merge
    for name, ids in sources.writers.items():
        for writer_id in ids:
            leaves = log_rows(sources.roots[name], writer_id, ["leaf_hash"]).column("leaf_hash")
            assert roots["ABC"][writer_id] == (len(leaves), root_from_leaves(leaves.to_pylist()))


def test_merging_two_ledgers_both_ways_agrees(sources: Sources, tmp_path: Path) -> None:
    b_into_a = sources.copy("A", tmp_path / "a")
    a_into_b = sources.copy("B", tmp_path / "b")
    assert Ledger.open(b_into_a).sync(sources.roots["B"]).ok
    assert Ledger.open(a_into_b).sync(sources.roots["A"]).ok
    assert events_rows(b_into_a) == events_rows(a_into_b)
    assert writer_states(b_into_a) == writer_states(a_into_b)
    # the sources were only read
    assert Ledger.open(sources.roots["A"]).verify().ok
    assert {p.name for p in (sources.roots["A"] / "writers").iterdir()} == set(sources.writers["A"])


def test_sync_is_idempotent(sources: Sources, tmp_path: Path) -> None:
    destination = sources.copy("A", tmp_path / "dest")
    store = Ledger.open(destination)
    first = store.sync(sources.roots["B"])
    (own,) = sources.writers["B"]
    assert first.writers_added == (own,), "A's logs relayed by B are shorter than A's own"
    assert first.events_added == log_rows(sources.roots["B"], own).num_rows
    before = snapshot(destination)
    rows = events_rows(destination)
    again = store.sync(sources.roots["B"])
    assert again == SyncReport((), (), 0, (), ())
    assert snapshot(destination) == before
    assert events_rows(destination) == rows
    # syncing back what the destination already holds adds nothing either
    assert store.sync(sources.roots["A"]).events_added == 0
    assert snapshot(destination) == before


# -- extending a log with its missing tail -------------------------------------------------------


def test_sync_extends_a_log_with_the_missing_tail(tmp_path: Path) -> None:
    edge = tmp_path / "edge"
    Ledger.init(edge, ledger_id="edge")
    with Ledger.open(edge) as store:
        writer_id = store.append(unique_events(120, seed=43)).writer_id
    central = tmp_path / "central"
    Ledger.init(central, ledger_id="central")
    first = Ledger.open(central).sync(edge)
    assert (first.writers_added, first.events_added) == ((writer_id,), 120)
    Ledger.open(central).checkpoint()
    more = unique_events(90, seed=44)
    with Ledger.open(edge) as store:
        assert store.append(more).writer_id == writer_id  # the edge keeps writing its own log
    second = Ledger.open(central).sync(edge)
    assert second.writers_added == ()
    assert second.writers_extended == (writer_id,)
    assert second.events_added == len(more)
    ours, theirs = log_rows(central, writer_id), log_rows(edge, writer_id)
    assert ours.num_rows == 120 + len(more)
    assert ours.equals(theirs), "the central copy is the edge's log, seq for seq"
    assert writer_states(central)[writer_id] == writer_states(edge)[writer_id]
    report = Ledger.open(central).verify()
    assert report.ok, report.problems
    assert Ledger.open(central).sync(edge).events_added == 0


def test_sync_copies_events_still_in_the_source_wal(sources: Sources, tmp_path: Path) -> None:
    edge = sources.copy("C", tmp_path / "edge")
    central = sources.copy("A", tmp_path / "central")
    (writer_id,) = sources.writers["C"]
    assert Ledger.open(central).sync(edge).ok
    live = Ledger.open(edge)
    try:
        more = unique_events(25, seed=71)
        assert live.append(more).writer_id == writer_id
        report = Ledger.open(central).sync(edge)  # acknowledged, only in the live WAL
        assert report.writers_extended == (writer_id,)
        assert report.events_added == len(more)
    finally:
        live.close()
    assert Ledger.open(central).sync(edge).events_added == 0, "the flushed copy is the same"
    assert log_rows(central, writer_id).equals(log_rows(edge, writer_id))
    assert Ledger.open(central).verify().ok
    ids = {e["event_id"] for e in more}
    seen = set(Ledger.open(central).sql("select event_id from events").column(0).to_pylist())
    assert ids <= seen


# -- equivocation --------------------------------------------------------------------------------


def equivocate(root: Path, writer_id: str, row: int) -> tuple[int, bytes]:
    """Rewrite the tail segment from ``row`` on with a different but valid chain.

    Returns the first changed seq and its new hash.
    """
    directory = root / "writers" / writer_id
    path = sorted((directory / "segments").glob("*.parquet"))[-1]
    rows = pq.read_table(path).to_pylist()
    prev = rows[row]["prev_hash"]
    for i in range(row, len(rows)):
        changed = rows[i]
        if i == row:
            changed = {**changed, "action": "secret.read", "outcome": "denied"}
        leaf = leaf_hash(canonical_of(changed))
        rows[i] = {**changed, "prev_hash": prev, "leaf_hash": leaf, "hash": chain_hash(prev, leaf)}
        prev = rows[i]["hash"]
    pq.write_table(pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA), path, compression="zstd")
    last = rows[-1]
    head = {"seq": last["seq"], "hash": last["hash"].hex()}
    (directory / "head.json").write_bytes(orjson.dumps(head))
    shutil.rmtree(directory / "tree", ignore_errors=True)
    shutil.rmtree(root / "checkpoints")  # the forger's copy carries no evidence against itself
    return rows[row]["seq"], rows[row]["hash"]


def test_an_equivocating_copy_is_refused_reported_and_recorded(
    sources: Sources, tmp_path: Path
) -> None:
    writer_id = sources.writers["A"][0]
    forged = sources.copy("A", tmp_path / "forged")
    seq, forged_hash = equivocate(forged, writer_id, row=60)
    append_to(forged, writer_id, unique_events(10, seed=90))  # and it runs ahead
    assert Ledger.open(forged).verify().ok, "on its own the forged copy is a valid ledger"
    destination = sources.copy("A", tmp_path / "dest")
    before = snapshot(destination)
    ours_hash = log_rows(destination, writer_id).column("hash")[seq].as_py()
    report = Ledger.open(destination).sync(forged)
    assert not report.ok
    assert len(report.equivocations) == 1
    found = report.equivocations[0]
    assert (found.writer_id, found.seq) == (writer_id, seq), "the first differing seq"
    assert (found.ours, found.theirs) == (ours_hash.hex(), forged_hash.hex())
    assert found.source == str(forged)
    assert writer_id not in report.writers_extended
    assert report.events_added == 0
    assert snapshot(destination) == before, "nothing of the equivocating log was merged"
    evidence = (destination / "sync" / "equivocations.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in evidence] == [seq]
    verdict = Ledger.open(destination).verify()
    equivocations = [p for p in verdict.problems if p.code == "equivocation"]
    assert [(p.writer_id, p.seq) for p in equivocations] == [(writer_id, seq)]
    assert str(forged) in equivocations[0].message
    assert not verdict.ok
    # the refused log is still whole and signable
    assert Ledger.open(destination).checkpoint().number == 2


def test_meeting_the_same_equivocation_twice_reports_it_once(
    sources: Sources, tmp_path: Path
) -> None:
    writer_id = sources.writers["A"][1]
    forged = sources.copy("A", tmp_path / "forged")
    seq, _ = equivocate(forged, writer_id, row=5)
    destination = sources.copy("A", tmp_path / "dest")
    for _ in range(2):
        assert len(Ledger.open(destination).sync(forged).equivocations) == 1
    problems = Ledger.open(destination).verify().problems
    assert [(p.code, p.writer_id, p.seq) for p in problems] == [("equivocation", writer_id, seq)]


def test_equivocation_in_a_log_the_destination_got_through_another_ledger(
    sources: Sources, tmp_path: Path
) -> None:
    """B relays A's logs; a forged relay of one is caught against the copy C got from A."""
    writer_id = sources.writers["A"][1]
    relay = sources.copy("B", tmp_path / "relay")
    assert Ledger.open(relay).sync(sources.roots["A"]).ok
    destination = sources.copy("C", tmp_path / "dest")
    assert Ledger.open(destination).sync(sources.roots["A"]).ok
    seq, _ = equivocate(relay, writer_id, row=0)
    report = Ledger.open(destination).sync(relay)
    assert [(e.writer_id, e.seq) for e in report.equivocations] == [(writer_id, seq)]
    assert report.writers_added == (), "C already holds every log of the relay"
    assert writer_id not in report.writers_extended
    assert report.writers_extended == ()
    assert log_rows(destination, writer_id).equals(log_rows(sources.roots["A"], writer_id))
    assert "equivocation" in {p.code for p in Ledger.open(destination).verify().problems}


# -- refusals ------------------------------------------------------------------------------------


def test_sync_with_itself_is_an_error(sources: Sources, tmp_path: Path) -> None:
    root = sources.copy("A", tmp_path / "ledger")
    link = tmp_path / "alias"
    link.symlink_to(root)
    before = snapshot(root)
    for spelling in (root, tmp_path / "ledger" / ".." / "ledger", link):
        with pytest.raises(LedgerError, match="itself"):
            Ledger.open(root).sync(spelling)
    assert snapshot(root) == before


def append_to(root: Path, writer_id: str, events: list[dict[str, Any]]) -> None:
    """Append to one given writer log (as its own appender would)."""
    appender = WriterLog.open(WriterLayout(root / "writers" / writer_id))
    try:
        appender.append(events)
    finally:
        appender.close()


def test_a_log_with_a_live_appender_here_is_skipped(sources: Sources, tmp_path: Path) -> None:
    destination = sources.copy("A", tmp_path / "dest")
    source = sources.copy("A", tmp_path / "src")
    held, free = sources.writers["A"]
    append_to(source, held, unique_events(30, seed=17))
    append_to(source, free, unique_events(20, seed=18))
    before = log_rows(destination, held)
    live = WriterLog.open(WriterLayout(destination / "writers" / held))
    try:
        report = Ledger.open(destination).sync(source)
    finally:
        live.close()
    assert not report.ok
    assert len(report.skipped) == 1
    assert held in report.skipped[0] and "live appender" in report.skipped[0]
    assert report.writers_extended == (free,), "the other log is merged all the same"
    assert report.events_added == 20
    assert log_rows(destination, held).equals(before)
    again = Ledger.open(destination).sync(source)
    assert again.ok
    assert (again.writers_extended, again.events_added) == ((held,), 30)
    assert Ledger.open(destination).verify().ok
    assert Ledger.open(destination).checkpoint().number == 2
