"""Verification of signed checkpoints against the recomputed Merkle roots of the writer logs.

Checks: every ledger checkpoint's signature and number, its link to the previous one, each writer
checkpoint's signature, origin and agreement with the ledger checkpoint, that no writer log shrank
(rollback) or changed under a checkpoint (fork: the root recomputed from the data at the signed
size differs), and RFC 9162 consistency proofs from each checkpoint to the next.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .checkpoints import (
    GENESIS_LINK,
    CheckpointStore,
    LedgerCheckpoint,
    WriterState,
    parse_ledger_text,
)
from .errors import LedgerError, NoteError, ProofError
from .layout import WriterLayout
from .merkle import EMPTY_ROOT, TreeBuilder, consistency_proof, verify_consistency
from .note import Verifier, open_note
from .report import IntegrityProblem
from .tree import WriterTree, open_writer_tree

__all__ = ["RootRecorder", "check_checkpoints", "checkpointed_sizes"]


@dataclass
class RootRecorder:
    """Builds a writer log's tree from recomputed leaves, noting the root at chosen sizes."""

    sizes: list[int]
    builder: TreeBuilder = field(default_factory=TreeBuilder)
    roots: dict[int, bytes] = field(default_factory=dict)
    intact: bool = True  # False once leaves went missing: later roots cannot be known

    def __post_init__(self) -> None:
        self.sizes = sorted(set(self.sizes))
        if self.sizes and self.sizes[0] == 0:
            self.roots[0] = EMPTY_ROOT
            self.sizes.pop(0)

    @property
    def size(self) -> int:
        """Leaves fed so far (feeding stops once every signed size has its root)."""
        return self.builder.size

    def feed(self, leaves: Sequence[bytes]) -> None:
        """Append the next leaves of the log (in seq order)."""
        if not self.intact or not self.sizes:
            return  # damaged, or every signed size already has its root: nothing left to learn
        start = 0
        while self.sizes and self.builder.size + len(leaves) - start >= self.sizes[0]:
            take = self.sizes[0] - self.builder.size
            self.builder.extend(leaves[start : start + take])
            start += take
            self.roots[self.sizes.pop(0)] = self.builder.root()
        if start < len(leaves):
            self.builder.extend(leaves[start:])

    def feed_blob(self, blob: bytes) -> None:
        """Append leaves given as one concatenation of 32-byte hashes."""
        if self.intact and self.sizes:
            self.feed([blob[i : i + 32] for i in range(0, len(blob), 32)])


def _unsigned_text(note: str) -> str:
    text, _, _ = note.partition("\n\n")
    return text + "\n"


def checkpointed_sizes(store: CheckpointStore) -> dict[str, list[int]]:
    """Every size each writer log was checkpointed at (read without trusting signatures)."""
    sizes: dict[str, list[int]] = {}
    for number in store.numbers():
        try:
            parsed = parse_ledger_text(_unsigned_text(store.note_text(number)), "")
        except (LedgerError, NoteError, ValueError):
            continue  # reported by check_checkpoints
        for writer in parsed.writers:
            sizes.setdefault(writer.writer_id, []).append(writer.tree_size)
    return sizes


def check_checkpoints(
    store: CheckpointStore,
    verifiers: Sequence[Verifier],
    recorders: dict[str, RootRecorder],
    layouts: Iterable[WriterLayout],
) -> list[IntegrityProblem]:
    """Every problem with the checkpoints, given each writer log's recomputed roots."""
    problems: list[IntegrityProblem] = []
    previous: LedgerCheckpoint | None = None
    trees = _Trees(layouts)
    for expected, number in enumerate(store.numbers(), start=1):
        where = f"checkpoints/{number:012d}"
        if number != expected:
            problems.append(
                IntegrityProblem(
                    "-", "checkpoint-missing", f"checkpoint {expected} is missing", where
                )
            )
        try:
            note = store.note_text(number)
            checkpoint = parse_ledger_text(open_note(note, verifiers).text, note)
        except (LedgerError, NoteError, ValueError) as err:
            problems.append(
                IntegrityProblem("-", "checkpoint-signature", f"checkpoint {number}: {err}", where)
            )
            previous = None
            continue
        link = previous.digest if previous is not None else GENESIS_LINK
        if (number == 1 or previous is not None) and checkpoint.previous != link:
            problems.append(
                IntegrityProblem(
                    "-",
                    "checkpoint-chain",
                    f"checkpoint {number} does not link to checkpoint {number - 1}",
                    where,
                )
            )
        problems.extend(_check_writers(store, verifiers, checkpoint, previous, recorders, trees))
        previous = checkpoint
    return problems


def _check_writers(
    store: CheckpointStore,
    verifiers: Sequence[Verifier],
    checkpoint: LedgerCheckpoint,
    previous: LedgerCheckpoint | None,
    recorders: dict[str, RootRecorder],
    trees: _Trees,
) -> list[IntegrityProblem]:
    problems: list[IntegrityProblem] = []
    number = checkpoint.number
    where = f"checkpoints/{number:012d}"
    if previous is not None:
        for dropped in previous.writers:
            if checkpoint.writer(dropped.writer_id) is None:
                problems.append(
                    IntegrityProblem(
                        dropped.writer_id,
                        "rollback",
                        f"checkpoint {number} drops this writer log",
                        where,
                    )
                )
    for state in checkpoint.writers:
        writer_id = state.writer_id
        try:
            tlog = store.writer_checkpoint(number, writer_id, verifiers)
            if tlog.tree_size != state.tree_size or tlog.root_hash != state.root:
                raise NoteError("its size or root differs from the ledger checkpoint")
        except (LedgerError, NoteError) as err:
            problems.append(
                IntegrityProblem(
                    writer_id, "checkpoint-signature", f"writer checkpoint {number}: {err}", where
                )
            )
        old = previous.writer(writer_id) if previous is not None else None
        if old is not None and old.tree_size > state.tree_size:
            problems.append(
                IntegrityProblem(
                    writer_id,
                    "rollback",
                    f"checkpoint {number} has {state.tree_size} events, checkpoint "
                    f"{previous.number if previous else '?'} had {old.tree_size}",
                    where,
                )
            )
        problems.extend(_check_root(writer_id, number, state.tree_size, state.root, recorders))
        if old is not None and 0 < old.tree_size < state.tree_size and writer_id in trees:
            problems.extend(
                _check_consistency(trees, writer_id, number, old, state.tree_size, state.root)
            )
    return problems


def _check_root(
    writer_id: str, number: int, size: int, root: bytes, recorders: dict[str, RootRecorder]
) -> list[IntegrityProblem]:
    where = f"checkpoints/{number:012d}"
    recorder = recorders.get(writer_id)
    if recorder is None or (
        recorder.intact and recorder.size < size and size not in recorder.roots
    ):
        held = recorder.size if recorder else 0
        return [
            IntegrityProblem(
                writer_id,
                "rollback",
                f"checkpoint {number} signed {size} events, but the log now holds {held}: "
                "events were removed after they were checkpointed",
                where,
                held,
            )
        ]
    recomputed = recorder.roots.get(size)
    if recomputed is None:
        return []  # the log is damaged before this size; that damage is reported already
    if recomputed != root:
        return [
            IntegrityProblem(
                writer_id,
                "checkpoint-mismatch",
                f"the log's first {size} events no longer have the root signed in checkpoint "
                f"{number} ({base64.b64encode(root).decode()}): the log was rewritten or forked",
                where,
            )
        ]
    return []


class _Trees:
    """Each writer log's stored tree, opened once per verification however many checkpoints."""

    def __init__(self, layouts: Iterable[WriterLayout]) -> None:
        self._layouts = {layout.writer_id: layout for layout in layouts}
        self._opened: dict[str, WriterTree] = {}

    def __contains__(self, writer_id: str) -> bool:
        return writer_id in self._layouts

    def get(self, writer_id: str) -> WriterTree:
        tree = self._opened.get(writer_id)
        if tree is None:
            tree = self._opened[writer_id] = open_writer_tree(self._layouts[writer_id])
        return tree


def _check_consistency(
    trees: _Trees, writer_id: str, number: int, old: WriterState, size2: int, root2: bytes
) -> list[IntegrityProblem]:
    try:
        tree = trees.get(writer_id)
        proof = consistency_proof(old.tree_size, size2, tree.reader)
        verify_consistency(old.tree_size, size2, proof, old.root, root2)
    except (ProofError, LookupError, ValueError) as err:
        return [
            IntegrityProblem(
                writer_id,
                "checkpoint-inconsistent",
                f"no valid consistency proof from size {old.tree_size} to checkpoint {number}'s "
                f"size {size2}: {err}",
                f"checkpoints/{number:012d}",
            )
        ]
    return []
