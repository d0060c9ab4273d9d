"""Making signed checkpoints, and inclusion and consistency proofs against them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc

from .canonical import format_micros
from .checkpoints import CheckpointStore, LedgerCheckpoint, WriterState
from .errors import LedgerError, ProofError
from .idlookup import find_rows
from .keys import KeyStore
from .layout import WriterLayout, segments_in_force, try_lock, wal_tail
from .merkle import (
    consistency_proof,
    inclusion_proof,
    root_from_nodes,
    verify_consistency,
    verify_inclusion,
)
from .segments import read_rows
from .tree import WriterTree, open_writer_tree
from .writer import WriterLog

__all__ = ["InclusionProof", "create_checkpoint", "prove_inclusion", "settle_idle_logs"]


@dataclass(frozen=True)
class InclusionProof:
    """Proof that an event is leaf ``leaf_index`` of its writer log at a signed tree size."""

    event_id: str
    writer_id: str
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    root: bytes
    checkpoint: str  # the writer log's signed tlog-checkpoint note
    ledger_checkpoint: int

    def to_json(self) -> dict[str, object]:
        """JSON-ready form: hashes in hex (the checkpoint note carries its root in base64)."""
        return {
            "event_id": self.event_id,
            "writer_id": self.writer_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "proof": [node.hex() for node in self.proof],
            "root": self.root.hex(),
            "checkpoint": self.checkpoint,
            "ledger_checkpoint": self.ledger_checkpoint,
        }


def settle_idle_logs(layouts: Sequence[WriterLayout], ledger_id: str) -> None:
    """Recover and flush this ledger's writer logs that no live process holds."""
    for layout in layouts:
        if layout.home_ledger() != ledger_id:
            continue
        fd = try_lock(layout.lock)
        if fd is None:
            continue  # a live appender: its WAL events are covered from the WAL itself
        try:
            WriterLog(layout, fd).close()
        except LedgerError:
            continue  # a damaged log: verify reports it; the checkpoint covers what is readable


def create_checkpoint(
    layouts: Sequence[WriterLayout],
    keys: KeyStore,
    store: CheckpointStore,
    now_micros: int,
    only_if_changed: bool = False,
) -> LedgerCheckpoint:
    """Sign the current state of every writer log as the next ledger checkpoint.

    Refuses when a writer log is no longer an extension of the previous checkpoint (a rollback
    or a fork): signing over it would hide the damage.
    """
    signer = keys.signer()
    previous = store.latest(keys.verifiers())
    trees = {layout.writer_id: open_writer_tree(layout) for layout in layouts}
    if previous is not None:
        for old in previous.writers:
            try:
                _check_extends(old, trees.get(old.writer_id), previous.number)
            except (LedgerError, LookupError):
                # Before calling it a fork, rebuild the derived tree files from the segments.
                layout = next((w for w in layouts if w.writer_id == old.writer_id), None)
                if layout is None:
                    raise
                trees[old.writer_id] = open_writer_tree(layout, rebuild=True)
                _check_extends(old, trees[old.writer_id], previous.number)
    states = [WriterState(t.writer_id, t.size, t.root) for t in trees.values()]
    unchanged = previous is not None and set(previous.writers) == set(states)
    if only_if_changed and unchanged and previous is not None:
        return previous
    return store.write(signer, states, format_micros(now_micros), previous)


def _check_extends(old: WriterState, tree: WriterTree | None, number: int) -> None:
    if tree is None or tree.size < old.tree_size:
        held = tree.size if tree else 0
        raise LedgerError(
            f"writer log {old.writer_id} holds {held} events but checkpoint {number} signed "
            f"{old.tree_size}: refusing to sign a rollback (run 'chainsight verify')"
        )
    if old.tree_size == 0:
        return
    if root_from_nodes(old.tree_size, tree.reader) != old.root:
        raise LedgerError(
            f"writer log {old.writer_id} no longer has the root signed in checkpoint {number}: "
            "refusing to sign a fork (run 'chainsight verify')"
        )
    proof = consistency_proof(old.tree_size, tree.size, tree.reader)
    try:
        verify_consistency(old.tree_size, tree.size, proof, old.root, tree.root)
    except ProofError as err:
        raise LedgerError(
            f"writer log {old.writer_id} is not consistent with checkpoint {number}: {err}"
        ) from err


def prove_inclusion(
    layouts: Sequence[WriterLayout], keys: KeyStore, store: CheckpointStore, event_id: str
) -> InclusionProof:
    """An inclusion proof of an event (its logical copy) against the newest covering checkpoint."""
    writer_id, seq, leaf = _locate(layouts, event_id)
    verifiers = keys.verifiers()
    for number in reversed(store.numbers()):
        checkpoint = store.load(number, verifiers)
        state = checkpoint.writer(writer_id)
        if state is None or state.tree_size <= seq:
            continue
        layout = next(w for w in layouts if w.writer_id == writer_id)
        try:
            proof = _proof_from_tree(open_writer_tree(layout), leaf, seq, state)
        except (ProofError, LookupError):
            # The stored tree is derived data: rebuild it from the segments once and retry.
            proof = _proof_from_tree(open_writer_tree(layout, rebuild=True), leaf, seq, state)
        note = store.note_text(number, writer_id)
        return InclusionProof(
            event_id, writer_id, seq, state.tree_size, leaf, tuple(proof), state.root, note, number
        )
    raise LedgerError(
        f"event {event_id} (writer {writer_id}, seq {seq}) is not covered by a signed checkpoint "
        "yet: run 'chainsight checkpoint'"
    )


def _proof_from_tree(tree: WriterTree, leaf: bytes, seq: int, state: WriterState) -> list[bytes]:
    proof = inclusion_proof(seq, state.tree_size, tree.reader)
    verify_inclusion(leaf, seq, state.tree_size, proof, state.root)
    return proof


def _locate(layouts: Sequence[WriterLayout], event_id: str) -> tuple[str, int, bytes]:
    """The logical copy of an event: earliest observed_time, then writer_id, then seq."""
    rows: list[dict[str, Any]] = []
    for layout in layouts:
        for segment in segments_in_force(layout)[0]:
            stored = read_rows(segment, find_rows(segment, event_id), _ROW_COLUMNS)
            rows += [
                {**r, "writer_id": layout.writer_id, "seq": segment.first_seq + row}
                for row, r in stored.items()
                if r["event_id"] == event_id  # the index only points; the segment decides
            ]
        tail = wal_tail(layout)
        if tail is not None:
            rows += tail.filter(pc.field("event_id") == event_id).select(_COLUMNS).to_pylist()
    if not rows:
        raise LedgerError(f"no event with event_id {event_id!r} in this ledger")
    best = min(rows, key=lambda r: (r["observed_time"], r["writer_id"], r["seq"]))
    return best["writer_id"], best["seq"], bytes(best["leaf_hash"])


_COLUMNS = ["writer_id", "seq", "leaf_hash", "observed_time"]
_ROW_COLUMNS = ["event_id", "observed_time", "leaf_hash"]
