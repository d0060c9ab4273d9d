"""Signed checkpoints, inclusion proofs, and rollback / fork detection (DESIGN.md §3, issue 3).

The ledgers here are real ones on disk, written through the public API with simulated agent
activity. Checkpoints are checked from the outside: their files are parsed as the text format the
``ledger.checkpoints`` docstring specifies, signed notes are opened with the verifier key the
ledger publishes, and Merkle roots are recomputed from the ``leaf_hash`` column read with pyarrow.
Attacks rewrite files the way someone with write access to the ledger directory would.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import canonical_of, unique_events

import ledger.tree
from ledger import LedgerError, ProofError
from ledger.checkpoints import CheckpointStore, LedgerCheckpoint
from ledger.hashing import chain_hash, leaf_hash
from ledger.keys import key_name
from ledger.layout import WriterLayout
from ledger.merkle import EMPTY_ROOT, hash_children, root_from_leaves, verify_inclusion
from ledger.note import (
    Checkpoint,
    InvalidSignatureError,
    Signer,
    UnverifiedNoteError,
    Verifier,
    open_checkpoint,
    open_note,
    sign_note,
)
from ledger.report import IntegrityProblem
from ledger.schema import SEGMENT_SCHEMA
from ledger.tree import TreeStore
from ledger.verify import verify_ledger
from ledger.writer import WriterLog
from query import Ledger

LEDGER_ID = "ledger-a"
BATCHES = (400, 400, 400)  # the main writer log: one segment and one checkpoint per batch
BYSTANDER_EVENTS = 150
SHARED_WITH_BYSTANDER = 5  # event_ids of the main log's first batch the bystander also stores
RFC3339_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


# -- reading a ledger from the outside -----------------------------------------------------------


def segment_paths(root: Path, writer_id: str) -> list[Path]:
    return sorted((root / "writers" / writer_id / "segments").glob("*.parquet"))


def stored_rows(root: Path, writer_id: str, columns: list[str] | None = None) -> pa.Table:
    """A writer log's flushed rows in seq order, read with pyarrow."""
    tables = [pq.read_table(p, columns=columns) for p in segment_paths(root, writer_id)]
    return pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()


def stored_leaves(root: Path, writer_id: str) -> list[bytes]:
    table = stored_rows(root, writer_id, ["seq", "leaf_hash"])
    assert table.column("seq").to_pylist() == list(range(table.num_rows))
    leaves: list[bytes] = table.column("leaf_hash").to_pylist()
    return leaves


def note_path(root: Path, number: int, name: str = "ledger") -> Path:
    return root / "checkpoints" / f"{number:012d}" / f"{name}.note"


def note_text(root: Path, number: int, name: str = "ledger") -> str:
    return note_path(root, number, name).read_text(encoding="utf-8")


def unsigned(note: str) -> str:
    """The text a signed note signs (everything before the blank line)."""
    text, blank, _ = note.rpartition("\n\n")
    assert blank
    return text + "\n"


@dataclass(frozen=True)
class LedgerNote:
    origin: str
    number: int
    previous: bytes
    time: str
    writers: dict[str, tuple[int, bytes]]


def parse_ledger_note(text: str) -> LedgerNote:
    """The ledger checkpoint text format of the ``ledger.checkpoints`` docstring, parsed here."""
    lines = text.split("\n")
    assert lines[-1] == "", "the note text ends with a newline"
    origin, number, previous, moment, *writer_lines = lines[:-1]
    writers = {}
    for line in writer_lines:
        writer_id, size, root = line.split(" ")
        writers[writer_id] = (int(size), base64.b64decode(root, validate=True))
    assert list(writers) == sorted(writers), "writer lines are sorted"
    return LedgerNote(origin, int(number), base64.b64decode(previous), moment, writers)


def published_verifier(root: Path) -> Verifier:
    """The verifier key as ``chainsight key show`` prints it (keys/ledger.vkey)."""
    return Verifier.parse((root / "keys" / "ledger.vkey").read_text(encoding="utf-8").strip())


def problems_of(report_problems: tuple[IntegrityProblem, ...], code: str) -> list[IntegrityProblem]:
    return [p for p in report_problems if p.code == code]


def codes(root: Path) -> set[str]:
    return {p.code for p in Ledger.open(root).verify().problems}


# -- the ledger most tests start from ------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A ledger with a main writer log (3 segments, 3 checkpoints) and a bystander log."""

    root: Path
    main: str
    bystander: str
    checkpoints: tuple[LedgerCheckpoint, ...]
    shared_ids: tuple[str, ...]

    @property
    def main_dir(self) -> Path:
        return self.root / "writers" / self.main

    def copy(self, destination: Path) -> Built:
        shutil.copytree(self.root, destination)
        return Built(destination, self.main, self.bystander, self.checkpoints, self.shared_ids)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("checkpoints") / "ledger"
    Ledger.init(root, ledger_id=LEDGER_ID)
    events = unique_events(sum(BATCHES), seed=3)
    shared = events[:SHARED_WITH_BYSTANDER]
    other = unique_events(BYSTANDER_EVENTS, seed=11)
    main = Ledger.open(root)
    bystander = Ledger.open(root)
    main_id = main.append(events[: BATCHES[0]]).writer_id
    bystander_id = bystander.append(shared + other).writer_id  # stored after the main copies
    bystander.close()
    assert bystander_id != main_id
    signed = [main.checkpoint()]
    start = BATCHES[0]
    for size in BATCHES[1:]:
        main.append(events[start : start + size])
        start += size
        signed.append(main.checkpoint())
    main.close()
    built = Built(root, main_id, bystander_id, tuple(signed), tuple(e["event_id"] for e in shared))
    assert len(segment_paths(root, main_id)) == len(BATCHES)
    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    return built


@pytest.fixture
def built(pristine: Built, tmp_path: Path) -> Built:
    return pristine.copy(tmp_path / "ledger")


# -- numbering, chaining, the note formats -------------------------------------------------------


def test_checkpoints_are_numbered_and_each_links_to_the_previous_note(pristine: Built) -> None:
    root = pristine.root
    names = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert names == [f"{n:012d}" for n in (1, 2, 3)]
    assert [c.number for c in pristine.checkpoints] == [1, 2, 3]
    previous_note: str | None = None
    for number in (1, 2, 3):
        note = note_text(root, number)
        parsed = parse_ledger_note(unsigned(note))
        assert parsed.origin == f"chainsight/{LEDGER_ID}"
        assert parsed.number == number
        if previous_note is None:
            assert parsed.previous == hashlib.sha256(b"").digest()
        else:
            assert parsed.previous == hashlib.sha256(previous_note.encode("utf-8")).digest()
        assert RFC3339_MICROS.match(parsed.time), parsed.time
        assert set(parsed.writers) == {pristine.main, pristine.bystander}
        assert parsed.writers[pristine.main][0] == sum(BATCHES[:number])
        assert parsed.writers[pristine.bystander][0] == BYSTANDER_EVENTS + SHARED_WITH_BYSTANDER
        # what checkpoint() returned is what was stored
        returned = pristine.checkpoints[number - 1]
        assert returned.note == note
        assert returned.previous == parsed.previous
        previous_note = note
    times = [parse_ledger_note(unsigned(note_text(root, n))).time for n in (1, 2, 3)]
    assert times == sorted(times)


def test_ledger_note_is_a_signed_note_under_the_published_key(pristine: Built) -> None:
    root = pristine.root
    verifier = published_verifier(root)
    assert verifier == Ledger.open(root).keys.verifier()
    assert verifier.name == key_name(LEDGER_ID) == f"chainsight-{LEDGER_ID}"
    for number in (1, 2, 3):
        note = note_text(root, number)
        opened = open_note(note, [verifier])
        assert opened.text == unsigned(note)
        assert [s.key_id for s in opened.verified] == [verifier.key_id]
        signature_lines = note.split("\n\n")[-1].splitlines()
        assert signature_lines and signature_lines[0].startswith(f"\u2014 {verifier.name} ")
    stranger = Signer.generate(verifier.name).verifier()  # same name, another key
    with pytest.raises(UnverifiedNoteError):
        open_note(note_text(root, 1), [stranger])


def test_writer_checkpoints_are_tlog_checkpoints_of_the_recomputed_roots(pristine: Built) -> None:
    root = pristine.root
    verifier = published_verifier(root)
    for writer_id in (pristine.main, pristine.bystander):
        leaves = stored_leaves(root, writer_id)
        origin = f"chainsight/{LEDGER_ID}/{writer_id}"
        for number in (1, 2, 3):
            tlog = open_checkpoint(note_text(root, number, writer_id), [verifier], origin=origin)
            assert tlog.origin == origin
            assert tlog.extensions == ()
            assert tlog.root_hash == root_from_leaves(leaves[: tlog.tree_size])
            size, ledger_root = parse_ledger_note(unsigned(note_text(root, number))).writers[
                writer_id
            ]
            assert (tlog.tree_size, tlog.root_hash) == (size, ledger_root)
        assert tlog.tree_size == len(leaves), "the last checkpoint covers the whole log"
    # the roots differ from checkpoint to checkpoint of the growing log, and are not trivial
    main_roots = [
        parse_ledger_note(unsigned(note_text(root, n))).writers[pristine.main][1] for n in (1, 2, 3)
    ]
    assert len(set(main_roots)) == 3
    assert EMPTY_ROOT not in main_roots
    with pytest.raises(LedgerError, match="origin"):
        open_checkpoint(
            note_text(root, 3, pristine.main),
            [verifier],
            origin=f"chainsight/{LEDGER_ID}/{pristine.bystander}",
        )


def test_stored_leaf_hashes_are_the_leaf_hashes_of_the_canonical_rows(pristine: Built) -> None:
    """The roots above are only meaningful if leaf_hash is SHA-256(0x00 || canonical bytes)."""
    rows = stored_rows(pristine.root, pristine.main).slice(0, 50).to_pylist()
    for row in rows:
        assert leaf_hash(canonical_of(row)) == row["leaf_hash"]
        assert chain_hash(row["prev_hash"], row["leaf_hash"]) == row["hash"]


def test_an_empty_ledger_checkpoints_nothing_and_the_next_links_to_it(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root, ledger_id="empty")
    first = Ledger.open(root).checkpoint()
    assert first.number == 1 and first.writers == ()
    with Ledger.open(root) as store:
        writer_id = store.append(unique_events(3, seed=5)).writer_id
    second = Ledger.open(root).checkpoint()
    assert second.number == 2
    assert second.previous == hashlib.sha256(first.note.encode()).digest()
    assert [(w.writer_id, w.tree_size) for w in second.writers] == [(writer_id, 3)]
    assert Ledger.open(root).verify().ok


# -- keys ----------------------------------------------------------------------------------------


def test_init_creates_a_secret_key_readable_only_by_its_owner(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    created = Ledger.init(root, ledger_id="keyed")
    key_file = root / "keys" / "ledger.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    signer = Signer.parse(key_file.read_text(encoding="utf-8").strip())
    assert signer.name == "chainsight-keyed"
    assert created.keys.verifier() == signer.verifier()
    assert published_verifier(root) == signer.verifier()
    assert "PRIVATE" not in (root / "keys" / "ledger.vkey").read_text(encoding="utf-8")
    other = Ledger.init(tmp_path / "other", ledger_id="keyed")
    assert other.keys.verifier() != created.keys.verifier(), "every ledger gets a fresh key"


def test_init_with_a_supplied_key_signs_with_that_key(tmp_path: Path) -> None:
    signer = Signer.generate("acme-audit")
    key_file = tmp_path / "acme.key"
    key_file.write_text(signer.signer_key() + "\n", encoding="utf-8")
    for name in ("one", "two"):
        root = tmp_path / name
        Ledger.init(root, ledger_id=name, key=key_file)
        stored = root / "keys" / "ledger.key"
        assert stored.read_text(encoding="utf-8").strip() == signer.signer_key()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert published_verifier(root) == signer.verifier()
        with Ledger.open(root) as store:
            store.append(unique_events(4, seed=1))
        signed = Ledger.open(root).checkpoint()
        assert open_note(signed.note, [signer.verifier()]).verified
        writer_id = signed.writers[0].writer_id
        open_checkpoint(
            note_text(root, 1, writer_id),
            [signer.verifier()],
            origin=f"chainsight/{name}/{writer_id}",
        )


def test_init_rejects_a_key_file_that_is_not_a_signer_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text(str(Signer.generate("x").verifier()) + "\n", encoding="utf-8")  # public only
    with pytest.raises(LedgerError, match="ledger key"):
        Ledger.init(tmp_path / "ledger", key=bad)
    assert not (tmp_path / "ledger" / "ledger.json").exists()


# -- inclusion proofs ----------------------------------------------------------------------------


def reference_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), written from the RFC's recursive definition."""
    if len(leaves) <= 1:
        return []
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < split:
        return [*reference_path(index, leaves[:split]), reference_root(leaves[split:])]
    return [*reference_path(index - split, leaves[split:]), reference_root(leaves[:split])]


def reference_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(reference_root(leaves[:split]), reference_root(leaves[split:]))


def check_proof(root: Path, event_id: str, verifier: Verifier) -> Any:
    """Prove an event and check the proof the way a third party would; return the proof."""
    found = Ledger.open(root).proof(event_id)
    tlog = open_checkpoint(
        found.checkpoint, [verifier], origin=f"chainsight/{LEDGER_ID}/{found.writer_id}"
    )
    assert tlog.tree_size == found.tree_size
    assert tlog.root_hash == found.root
    verify_inclusion(
        found.leaf_hash, found.leaf_index, found.tree_size, found.proof, tlog.root_hash
    )
    # and against the ledger checkpoint it names
    ledger_note = note_text(root, found.ledger_checkpoint)
    open_note(ledger_note, [verifier])
    assert parse_ledger_note(unsigned(ledger_note)).writers[found.writer_id] == (
        found.tree_size,
        found.root,
    )
    return found


def test_proofs_verify_for_events_of_every_writer_log(pristine: Built) -> None:
    root = pristine.root
    verifier = published_verifier(root)
    for writer_id in (pristine.main, pristine.bystander):
        table = stored_rows(root, writer_id, ["event_id", "seq", "leaf_hash"]).to_pylist()
        size = len(table)
        picks = sorted({0, 1, size // 3, size // 2, size - 2, size - 1})
        for row in (table[i] for i in picks):
            if row["event_id"] in pristine.shared_ids and writer_id == pristine.bystander:
                continue  # proved through its logical copy, see below
            found = check_proof(root, row["event_id"], verifier)
            assert found.event_id == row["event_id"]
            assert (found.writer_id, found.leaf_index) == (writer_id, row["seq"])
            assert found.leaf_hash == row["leaf_hash"]
            assert found.tree_size == size
            assert found.ledger_checkpoint == 3, "the newest checkpoint covering the event"
            leaves = stored_leaves(root, writer_id)
            assert list(found.proof) == reference_path(row["seq"], leaves)


def test_an_event_stored_by_two_writers_is_proved_through_its_logical_copy(
    pristine: Built,
) -> None:
    store = Ledger.open(pristine.root)
    verifier = published_verifier(pristine.root)
    for event_id in pristine.shared_ids:
        copies = store.sql(
            f"select writer_id from events_raw where event_id = '{event_id}' order by writer_id"
        ).column("writer_id")
        assert sorted(copies.to_pylist()) == sorted([pristine.main, pristine.bystander])
        logical = store.sql(f"select writer_id, seq from events where event_id = '{event_id}'")
        found = check_proof(pristine.root, event_id, verifier)
        assert found.writer_id == logical.column("writer_id")[0].as_py() == pristine.main
        assert found.leaf_index == logical.column("seq")[0].as_py()


def test_proofs_at_many_tree_sizes_match_rfc_9162(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root, ledger_id=LEDGER_ID)
    events = unique_events(130, seed=8)
    verifier = published_verifier(root)
    store = Ledger.open(root)
    appended = 0
    for size in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 65, 130):
        writer_id = store.append(events[appended:size]).writer_id
        appended = size
        signed = store.checkpoint()
        assert signed.writer(writer_id).tree_size == size  # type: ignore[union-attr]
        leaves = stored_leaves(root, writer_id)
        assert len(leaves) == size
        assert signed.writer(writer_id).root == reference_root(leaves)  # type: ignore[union-attr]
        for index in sorted({0, size // 2, size - 1}):
            found = check_proof(root, events[index]["event_id"], verifier)
            assert (found.leaf_index, found.tree_size) == (index, size)
            assert list(found.proof) == reference_path(index, leaves)
            # any change to the proof, the index or the size is rejected
            if found.proof:
                bent = [bytes([found.proof[0][0] ^ 1]) + found.proof[0][1:], *found.proof[1:]]
                with pytest.raises(ProofError):
                    verify_inclusion(found.leaf_hash, index, size, bent, found.root)
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(
                        found.leaf_hash, (index + 1) % size, size, found.proof, found.root
                    )
    store.close()


def test_event_only_in_the_wal_of_a_live_writer_is_proved(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root, ledger_id=LEDGER_ID)
    events = unique_events(60, seed=4)
    with Ledger.open(root) as setup:
        writer_id = setup.append(events[:40]).writer_id
    live = Ledger.open(root)
    try:
        assert live.append(events[40:]).writer_id == writer_id  # the idle log is taken again
        flushed_ids = set(stored_rows(root, writer_id, ["event_id"]).column("event_id").to_pylist())
        wal_only = events[55]["event_id"]
        assert wal_only not in flushed_ids, "still only in the live writer's WAL"
        signed = Ledger.open(root).checkpoint()  # another object: the live log is not flushed
        assert signed.writer(writer_id).tree_size == 60  # type: ignore[union-attr]
        assert len(segment_paths(root, writer_id)) == 1
        found = check_proof(root, wal_only, published_verifier(root))
        assert (found.writer_id, found.leaf_index, found.tree_size) == (writer_id, 55, 60)
        assert Ledger.open(root).verify().ok
    finally:
        live.close()
    # once flushed, the same event has the same leaf hash and the proof still holds
    assert check_proof(root, wal_only, published_verifier(root)).leaf_hash == found.leaf_hash


def test_live_writer_checkpoint_from_the_same_object_then_new_events_are_not_covered(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root, ledger_id=LEDGER_ID)
    events = unique_events(30, seed=6)
    store = Ledger.open(root)
    try:
        writer_id = store.append(events[:20]).writer_id
        signed = store.checkpoint()  # appended without close; checkpointed by the appender
        assert signed.writer(writer_id).tree_size == 20  # type: ignore[union-attr]
        found = store.proof(events[7]["event_id"])
        verify_inclusion(found.leaf_hash, 7, 20, found.proof, signed.writer(writer_id).root)  # type: ignore[union-attr]
        store.append(events[20:])
        late = events[25]["event_id"]
        with pytest.raises(LedgerError, match="not covered by a signed checkpoint"):
            store.proof(late)
        again = store.checkpoint()
        assert store.proof(late).ledger_checkpoint == again.number == 2
    finally:
        store.close()
    with pytest.raises(LedgerError, match="no event"):
        Ledger.open(root).proof("no-such-event")


def test_proof_reads_logarithmically_many_tree_nodes(
    pristine: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = pristine.copy(tmp_path / "ledger")
    event_id = stored_rows(built.root, built.main, ["event_id"]).column("event_id")[777].as_py()
    Ledger.open(built.root).proof(event_id)  # the stored tree is up to date from here on
    nodes_read: list[int] = []
    preads: list[int] = []
    original_read_nodes = TreeStore.read_nodes
    original_pread = os.pread

    def counting_read_nodes(self: TreeStore, node_ids: Any) -> list[bytes]:
        nodes_read.append(len(node_ids))
        return original_read_nodes(self, node_ids)

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        preads.append(length)
        return original_pread(fd, length, offset)

    def no_rehashing(*args: Any, **kwargs: Any) -> Iterator[list[bytes]]:
        raise AssertionError("a proof must not rebuild the tree from the segments")

    monkeypatch.setattr(TreeStore, "read_nodes", counting_read_nodes)
    monkeypatch.setattr(os, "pread", counting_pread)
    monkeypatch.setattr(ledger.tree, "_segment_leaves", no_rehashing)
    found = Ledger.open(built.root).proof(event_id)
    size = found.tree_size
    assert size == sum(BATCHES)
    bound = 4 * size.bit_length()  # a proof, plus the compact range to resume the tree
    assert 0 < sum(nodes_read) <= bound, nodes_read
    assert 0 < len(preads) <= bound, len(preads)
    assert all(length == 32 for length in preads)
    verify_inclusion(found.leaf_hash, found.leaf_index, size, found.proof, found.root)


# -- derived data: the tree files ----------------------------------------------------------------


def tree_dir(built: Built) -> Path:
    return built.main_dir / "tree"


def level_sizes(built: Built) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(tree_dir(built).glob("level-*.bin"))}


def damage_delete(built: Built) -> None:
    shutil.rmtree(tree_dir(built))


def damage_truncate_level_0(built: Built) -> None:
    path = tree_dir(built) / "level-00.bin"
    with open(path, "r+b") as out:
        out.truncate(path.stat().st_size - 40)


def damage_append_garbage(built: Built) -> None:
    with open(tree_dir(built) / "level-02.bin", "ab") as out:
        out.write(b"\xff" * 32)


def damage_drop_a_level(built: Built) -> None:
    (tree_dir(built) / "level-04.bin").unlink()


def damage_flip_a_leaf(built: Built) -> None:
    path = tree_dir(built) / "level-00.bin"
    data = bytearray(path.read_bytes())
    data[776 * 32] ^= 0x01  # the sibling of leaf 777, same file size
    path.write_bytes(bytes(data))


def damage_flip_a_top_node(built: Built) -> None:
    path = tree_dir(built) / "level-10.bin"  # node (10, 0): leaves 0..1023
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


TREE_DAMAGE: list[Any] = [
    damage_delete,
    damage_truncate_level_0,
    damage_append_garbage,
    damage_drop_a_level,
    damage_flip_a_leaf,
    damage_flip_a_top_node,
]


@pytest.mark.parametrize("damage", TREE_DAMAGE)
def test_tree_files_are_derived_data_rebuilt_when_damaged(
    built: Built, damage: Callable[[Built], None]
) -> None:
    event_id = stored_rows(built.root, built.main, ["event_id"]).column("event_id")[777].as_py()
    Ledger.open(built.root).proof(event_id)
    healthy = level_sizes(built)
    assert healthy, "the proof built the tree files"
    damage(built)
    verifier = published_verifier(built.root)
    found = check_proof(built.root, event_id, verifier)
    assert (found.leaf_index, found.tree_size) == (777, sum(BATCHES))
    assert level_sizes(built) == healthy
    extra = unique_events(3, seed=99)
    with Ledger.open(built.root) as store:
        store.append(extra)
    signed = Ledger.open(built.root).checkpoint()
    assert signed.number == 4
    writer = signed.writer(built.main)
    assert writer is not None
    # the new checkpoint's root is the one recomputed from the data, wherever the events went
    for state in signed.writers:
        assert state.root == root_from_leaves(stored_leaves(built.root, state.writer_id))
    assert Ledger.open(built.root).verify().ok


# -- rollback and fork: each detected by verify, refused by checkpoint ---------------------------


def write_head(built: Built, seq: int, digest: bytes) -> None:
    (built.main_dir / "head.json").write_bytes(orjson.dumps({"seq": seq, "hash": digest.hex()}))


def truncate_log(built: Built) -> None:
    """Drop the last segment and rewrite head.json to match: the log itself looks whole."""
    segments = segment_paths(built.root, built.main)
    segments[-1].unlink()
    rows = pq.read_table(segments[-2], columns=["seq", "hash"])
    write_head(built, rows.column("seq")[-1].as_py(), rows.column("hash")[-1].as_py())


FORGED_SEQ = BATCHES[0] + 50


def rewrite_log(built: Built, delete_tree: bool = True) -> None:
    """Edit one event and re-chain every later row of every later segment, head.json too."""
    prev = b""
    for path in segment_paths(built.root, built.main)[1:]:
        rows = pq.read_table(path).to_pylist()
        for i, row in enumerate(rows):
            if row["seq"] < FORGED_SEQ:
                continue
            if row["seq"] == FORGED_SEQ:
                prev = row["prev_hash"]
                row = {**row, "outcome": "denied", "error": "forged"}  # noqa: PLW2901
            leaf = leaf_hash(canonical_of(row))
            rows[i] = {**row, "prev_hash": prev, "leaf_hash": leaf, "hash": chain_hash(prev, leaf)}
            prev = rows[i]["hash"]
        pq.write_table(pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA), path, compression="zstd")
    write_head(built, sum(BATCHES) - 1, prev)
    if delete_tree:
        shutil.rmtree(built.main_dir / "tree", ignore_errors=True)  # derived data, rebuilt


def data_only_report_is_clean(built: Built) -> bool:
    """What verify would say without the checkpoints: the hash chains alone."""
    return verify_ledger(Ledger.open(built.root).writer_layouts()).ok


def test_truncation_behind_a_signed_checkpoint_is_a_rollback(built: Built) -> None:
    truncate_log(built)
    assert data_only_report_is_clean(built), "only the checkpoint can tell"
    report = Ledger.open(built.root).verify()
    rollbacks = problems_of(report.problems, "rollback")
    assert rollbacks, report.problems
    assert {p.writer_id for p in rollbacks} == {built.main}
    message = " ".join(p.message for p in rollbacks)
    assert "checkpoint 3 signed 1200 events" in message
    assert "now holds 800" in message
    assert not report.ok
    with pytest.raises(LedgerError, match="rollback"):
        Ledger.open(built.root).checkpoint()
    assert CheckpointStore(built.root, LEDGER_ID).numbers() == [1, 2, 3]


def test_a_deleted_writer_log_is_a_rollback(built: Built) -> None:
    shutil.rmtree(built.root / "writers" / built.bystander)
    assert data_only_report_is_clean(built), "what is left is a valid ledger"
    report = Ledger.open(built.root).verify()
    rollbacks = problems_of(report.problems, "rollback")
    assert {(p.writer_id, p.file) for p in rollbacks} == {
        (built.bystander, f"checkpoints/{n:012d}") for n in (1, 2, 3)
    }, report.problems
    assert all("removed" in p.message for p in rollbacks)
    with pytest.raises(LedgerError, match="rollback"):
        Ledger.open(built.root).checkpoint()


def test_rollback_then_regrowth_is_still_a_fork(built: Built) -> None:
    """Truncate, then append different events up to beyond the signed size: not an extension."""
    truncate_log(built)
    appender = WriterLog.open(WriterLayout(built.main_dir))
    try:
        assert appender.next_seq == 800
        appender.append(unique_events(450, seed=21))
    finally:
        appender.close()
    report = Ledger.open(built.root).verify()
    assert {"checkpoint-mismatch"} <= {p.code for p in report.problems}, report.problems
    with pytest.raises(LedgerError, match="fork"):
        Ledger.open(built.root).checkpoint()


def test_a_consistently_rewritten_log_only_fails_the_checkpoint_root(built: Built) -> None:
    rewrite_log(built)
    assert data_only_report_is_clean(built), "the forged chain itself is flawless"
    report = Ledger.open(built.root).verify()
    mismatches = problems_of(report.problems, "checkpoint-mismatch")
    assert {(p.writer_id, p.file) for p in mismatches} == {
        (built.main, "checkpoints/000000000002"),
        (built.main, "checkpoints/000000000003"),
    }, report.problems
    assert all("rewritten or forked" in p.message for p in mismatches)
    assert not any(p.writer_id == built.bystander for p in report.problems)
    with pytest.raises(LedgerError, match="fork"):
        Ledger.open(built.root).checkpoint()
    assert CheckpointStore(built.root, LEDGER_ID).numbers() == [1, 2, 3]


def test_a_rewritten_log_with_stale_tree_files_is_not_signed(built: Built) -> None:
    rewrite_log(built, delete_tree=False)
    assert "checkpoint-mismatch" in codes(built.root)
    with pytest.raises(LedgerError, match="fork"):
        Ledger.open(built.root).checkpoint()


def replace_keys(built: Built) -> Signer:
    keys = built.root / "keys"
    impostor = Signer.generate(key_name(LEDGER_ID))  # same name, another key
    (keys / "ledger.key").write_text(impostor.signer_key() + "\n", encoding="utf-8")
    (keys / "ledger.vkey").write_text(str(impostor.verifier()) + "\n", encoding="utf-8")
    return impostor


def test_checkpoints_under_a_replaced_key_are_unknown_signatures(built: Built) -> None:
    replace_keys(built)
    report = Ledger.open(built.root).verify()
    bad = problems_of(report.problems, "checkpoint-signature")
    assert {p.file for p in bad} >= {f"checkpoints/{n:012d}" for n in (1, 2, 3)}
    assert all("known key" in p.message for p in bad), bad
    with pytest.raises(LedgerError, match="known key"):
        Ledger.open(built.root).checkpoint()


def test_a_checkpoint_re_signed_by_a_foreign_key_is_detected(built: Built) -> None:
    foreign = Signer.generate("mallory")
    path = note_path(built.root, 3)
    path.write_text(sign_note(unsigned(path.read_text(encoding="utf-8")), foreign), "utf-8")
    report = Ledger.open(built.root).verify()
    bad = problems_of(report.problems, "checkpoint-signature")
    assert [p.file for p in bad] == ["checkpoints/000000000003"], report.problems
    assert "mallory" in bad[0].message
    with pytest.raises(LedgerError, match="known key"):
        Ledger.open(built.root).checkpoint()
    # a key the ledger was told to trust is accepted
    Ledger.open(built.root).keys.trust(foreign.verifier())
    assert Ledger.open(built.root).verify().ok


def edit_line(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, (old, text)
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_an_edited_size_in_a_ledger_note_breaks_its_signature(built: Built) -> None:
    edit_line(note_path(built.root, 2), f"{built.main} 800 ", f"{built.main} 799 ")
    report = Ledger.open(built.root).verify()
    bad = problems_of(report.problems, "checkpoint-signature")
    assert [p.file for p in bad] == ["checkpoints/000000000002"], report.problems
    assert "invalid signature" in bad[0].message


def test_an_edited_size_in_the_latest_note_is_refused_by_checkpoint(built: Built) -> None:
    edit_line(note_path(built.root, 3), f"{built.main} 1200 ", f"{built.main} 1199 ")
    assert "checkpoint-signature" in codes(built.root)
    with pytest.raises(InvalidSignatureError):
        Ledger.open(built.root).checkpoint()


def test_an_edited_writer_checkpoint_is_detected(built: Built) -> None:
    edit_line(note_path(built.root, 3, built.main), "\n1200\n", "\n1199\n")
    report = Ledger.open(built.root).verify()
    bad = problems_of(report.problems, "checkpoint-signature")
    assert [(p.writer_id, p.file) for p in bad] == [(built.main, "checkpoints/000000000003")]
    assert "invalid signature" in bad[0].message


def test_a_deleted_checkpoint_in_the_middle_is_missing(built: Built) -> None:
    shutil.rmtree(built.root / "checkpoints" / f"{2:012d}")
    report = Ledger.open(built.root).verify()
    missing = problems_of(report.problems, "checkpoint-missing")
    assert [p.message for p in missing] == ["checkpoint 2 is missing"]
    assert "checkpoint-chain" in {p.code for p in report.problems}
    # signing another checkpoint does not hide the gap
    assert Ledger.open(built.root).checkpoint().number == 4
    assert "checkpoint-missing" in codes(built.root)


def test_a_broken_chain_link_is_detected(built: Built) -> None:
    """An insider with the key re-signs checkpoint 3 linking past checkpoint 2."""
    signer = Signer.parse((built.root / "keys" / "ledger.key").read_text("utf-8").strip())
    path = note_path(built.root, 3)
    lines = unsigned(path.read_text(encoding="utf-8")).split("\n")
    lines[2] = base64.b64encode(hashlib.sha256(note_text(built.root, 1).encode()).digest()).decode()
    path.write_text(sign_note("\n".join(lines), signer), encoding="utf-8")
    report = Ledger.open(built.root).verify()
    chain = problems_of(report.problems, "checkpoint-chain")
    assert [(p.file, p.message) for p in chain] == [
        ("checkpoints/000000000003", "checkpoint 3 does not link to checkpoint 2")
    ]
    assert not problems_of(report.problems, "checkpoint-signature")
    assert Ledger.open(built.root).checkpoint().number == 4
    assert "checkpoint-chain" in codes(built.root), "a later checkpoint does not hide it"


def test_a_checkpoint_that_drops_a_writer_log_is_a_rollback(built: Built) -> None:
    """An insider signs checkpoint 4 without the bystander's log."""
    signer = Signer.parse((built.root / "keys" / "ledger.key").read_text("utf-8").strip())
    latest = pristine_latest(built)
    text = latest.to_text().split("\n")
    kept = [line for line in text if not line.startswith(built.bystander)]
    kept[1] = "4"
    kept[2] = base64.b64encode(latest.digest).decode()
    directory = built.root / "checkpoints" / f"{4:012d}"
    directory.mkdir()
    (directory / "ledger.note").write_text(sign_note("\n".join(kept), signer), "utf-8")
    state = latest.writer(built.main)
    assert state is not None
    origin = f"chainsight/{LEDGER_ID}/{built.main}"
    tlog = Checkpoint(origin, state.tree_size, state.root).sign(signer)
    (directory / f"{built.main}.note").write_text(tlog, encoding="utf-8")
    report = Ledger.open(built.root).verify()
    rollbacks = problems_of(report.problems, "rollback")
    assert [(p.writer_id, p.file) for p in rollbacks] == [
        (built.bystander, "checkpoints/000000000004")
    ], report.problems
    assert "drops this writer log" in rollbacks[0].message


def pristine_latest(built: Built) -> LedgerCheckpoint:
    store = CheckpointStore(built.root, LEDGER_ID)
    latest = store.latest([published_verifier(built.root)])
    assert latest is not None and latest.number == 3
    return latest


def test_verify_of_the_untouched_copy_is_clean(built: Built) -> None:
    """The baseline every scenario above starts from."""
    report = Ledger.open(built.root).verify()
    assert report.ok, report.problems
    assert report.events == sum(BATCHES) + BYSTANDER_EVENTS + SHARED_WITH_BYSTANDER
    assert Ledger.open(built.root).checkpoint().number == 4
