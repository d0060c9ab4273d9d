"""Each writer log's RFC 9162 Merkle tree, stored as one append-only file of hashes per level.

The files are derived data: they are (re)built from the segments' ``leaf_hash`` column, and a
proof reads O(log n) nodes from them. Leaves acknowledged but still only in the WAL are added in
memory on top of the stored tree.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from .durable import write_atomically
from .hashing import leaf_hash
from .layout import WriterLayout, segments_in_force, unflushed_frames
from .merkle import HASH_SIZE, NodeID, NodeReader, NodeRun, TreeBuilder
from .segments import SegmentFile, hash_at

__all__ = ["TreeStore", "WriterTree", "open_writer_tree"]


class TreeStore:
    """A writer log's stored tree: ``tree/level-NN.bin``, node i of a level at byte 32*i."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _level(self, level: int) -> Path:
        return self.directory / f"level-{level:02d}.bin"

    @property
    def size(self) -> int:
        """How many leaves the stored tree holds."""
        try:
            return self._level(0).stat().st_size // HASH_SIZE
        except FileNotFoundError:
            return 0

    def consistent(self) -> bool:
        """Whether every level holds exactly the complete nodes of the stored leaves."""
        size = self.size
        level = 0
        while (size >> level) > 0 or self._level(level).exists():
            path = self._level(level)
            stored = path.stat().st_size if path.exists() else 0
            if stored != (size >> level) * HASH_SIZE:
                return False
            level += 1
        return True

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        """The hashes of stored nodes (one pread each)."""
        found = []
        handles: dict[int, int] = {}
        try:
            for node in node_ids:
                fd = handles.get(node.level)
                if fd is None:
                    try:
                        fd = handles[node.level] = os.open(self._level(node.level), os.O_RDONLY)
                    except FileNotFoundError:
                        raise LookupError(f"no stored node at level {node.level}") from None
                value = os.pread(fd, HASH_SIZE, node.index * HASH_SIZE)
                if len(value) != HASH_SIZE:
                    raise LookupError(f"node {node} is not stored")
                found.append(value)
        finally:
            for fd in handles.values():
                os.close(fd)
        return found

    def append_runs(self, runs: Sequence[NodeRun]) -> None:
        """Append newly completed nodes (each run continues its level's file) durably."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for run in runs:
            path = self._level(run.level)
            with open(path, "ab") as out:
                if out.tell() != run.start * HASH_SIZE:
                    raise ValueError(f"{path.name} does not end where node {run.start} goes")
                out.write(b"".join(run.hashes))
                out.flush()
                os.fsync(out.fileno())

    def clear(self) -> None:
        """Delete the stored tree (it is rebuilt from the segments)."""
        for path in self.directory.glob("level-*.bin"):
            path.unlink()


class _TailNodes:
    """In-memory nodes completed after the stored tree: each level starts where the file ends."""

    def __init__(self) -> None:
        self._levels: dict[int, tuple[int, list[bytes]]] = {}

    def add_runs(self, runs: Sequence[NodeRun]) -> None:
        for run in runs:
            start, hashes = self._levels.setdefault(run.level, (run.start, []))
            if start + len(hashes) != run.start:
                raise ValueError(f"level {run.level}: run at {run.start} does not continue")
            hashes.extend(run.hashes)

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        found = []
        for node in node_ids:
            start, hashes = self._levels.get(node.level, (0, []))
            if not start <= node.index < start + len(hashes):
                raise LookupError(f"node {node} is not stored")
            found.append(hashes[node.index - start])
        return found


class _Layered:
    """Stored nodes for the stored leaves, in-memory nodes for the rest."""

    def __init__(self, stored: TreeStore, stored_size: int, memory: _TailNodes) -> None:
        self._stored = stored
        self._stored_size = stored_size
        self._memory = memory

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        on_disk = [n for n in node_ids if n.leaf_range()[1] <= self._stored_size]
        from_disk = dict(zip(on_disk, self._stored.read_nodes(on_disk), strict=True))
        in_memory = [n for n in node_ids if n not in from_disk]
        from_memory = dict(zip(in_memory, self._memory.read_nodes(in_memory), strict=True))
        return [from_disk.get(n) or from_memory[n] for n in node_ids]


class WriterTree:
    """A writer log's tree over every acknowledged event: stored nodes plus the WAL's leaves."""

    def __init__(self, writer_id: str, size: int, reader: NodeReader, root: bytes) -> None:
        self.writer_id = writer_id
        self.size = size
        self.reader = reader
        self.root = root


@contextmanager
def _tree_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_writer_tree(layout: WriterLayout, rebuild: bool = False) -> WriterTree:
    """Bring the stored tree up to the segments, and add the WAL's leaves in memory.

    The stored tree is trusted only while its anchor (the chained hash of its last leaf's event,
    which commits to every leaf before it) still matches the segments; ``rebuild`` forces a
    rebuild, for a caller whose proof from the stored nodes failed.
    """
    store = TreeStore(layout.directory / "tree")
    segments, _ = segments_in_force(layout)
    flushed = segments[-1].last_seq + 1 if segments else 0
    with _tree_lock(store.directory):
        if rebuild or not _anchored(store, segments, flushed):
            store.clear()  # a crash mid-append, or the log rewritten: rebuild from the data
        if store.size < flushed:
            builder = TreeBuilder.resume(store.size, store)
            for leaves in _segment_leaves(segments, store.size):
                store.append_runs(builder.extend(leaves))
            _write_anchor(store, flushed, hash_at(segments, flushed - 1) or b"")
        stored_size = store.size
    builder = TreeBuilder.resume(stored_size, store)
    memory = _TailNodes()
    for frame in unflushed_frames(layout, segments):
        skip = max(0, builder.size - frame.first_seq)
        memory.add_runs(builder.extend(leaf_hash(line) for line in frame.lines[skip:]))
    reader = _Layered(store, stored_size, memory)
    return WriterTree(layout.writer_id, builder.size, reader, builder.root())


_ANCHOR = "anchor.json"


def _anchored(store: TreeStore, segments: Sequence[SegmentFile], flushed: int) -> bool:
    """Whether the stored tree is whole and still describes a prefix of these segments."""
    size = store.size
    if size == 0:
        return True
    if size > flushed or not store.consistent():
        return False
    try:
        anchor = orjson.loads((store.directory / _ANCHOR).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return False
    if anchor.get("size") != size:
        return False
    return bool((hash_at(segments, size - 1) or b"").hex() == anchor.get("hash"))


def _write_anchor(store: TreeStore, size: int, chained: bytes) -> None:
    write_atomically(store.directory / _ANCHOR, orjson.dumps({"size": size, "hash": chained.hex()}))


def _segment_leaves(segments: Sequence[SegmentFile], start: int) -> Iterator[list[bytes]]:
    """The stored leaf hashes of every event from seq ``start`` on, segment by segment."""
    for segment in segments:
        if segment.last_seq < start:
            continue
        column = pq.read_table(segment.path, columns=["leaf_hash"]).column("leaf_hash")
        leaves = column.to_pylist()
        yield leaves[max(0, start - segment.first_seq) :]
