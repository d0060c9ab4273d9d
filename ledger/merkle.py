"""RFC 9162 (RFC 6962) Merkle trees over leaf hashes: roots, proofs from stored nodes, verifiers.

A writer log is a Merkle tree whose leaves are the events' leaf hashes (``SHA-256(0x00 || data)``,
computed in :mod:`ledger.hashing`); an interior node is ``SHA-256(0x01 || left || right)`` and the
empty tree's root is ``SHA-256("")``.

Storage model. A node is named by ``NodeID(level, index)``: the perfect subtree of ``2**level``
leaves starting at leaf ``index * 2**level`` (level 0 = the leaf hashes themselves). Once all its
leaves exist a node never changes, so a store can persist every node as it completes (a
:class:`TreeBuilder` emits them in :class:`NodeRun` batches) and answer proofs for *any* tree
size up to the stored one by reading only the O(log n) nodes the proof needs
(:class:`NodeReader`). A tree whose size is not a power of two also has "ephemeral" right-border
nodes; they are never stored, only recomputed from the perfect subtrees under them (still
O(log n) reads).

Tiles. Nodes complete left to right within each level, so a level is an append-only array and
fixed-width chunks of it make a good storage unit: a full tile never changes. The width,
:data:`TILE_WIDTH`, is C2SP tlog-tiles'; unlike tlog-tiles every level is kept (about two hashes
per leaf in all), so serving a proof needs no hashing beyond the right border.
:func:`NodeRun.tile_chunks` splits emitted nodes by tile, and :class:`TileNodeReader` serves
proofs from a tile fetch function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_WIDTH",
    "CompactRange",
    "MemoryNodeStore",
    "NodeID",
    "NodeReader",
    "NodeRun",
    "ProofError",
    "TileChunk",
    "TileID",
    "TileNodeReader",
    "TreeBuilder",
    "compact_range_ids",
    "consistency_proof",
    "consistency_proof_length",
    "hash_children",
    "inclusion_proof",
    "inclusion_proof_length",
    "root_from_leaves",
    "root_from_nodes",
    "tile_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in every leaf hash, node hash and root (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree (RFC 9162 §2.1.1: the hash of the empty string)."""

TILE_WIDTH = 256
"""Hashes per tile: nodes ``[k * 256, (k + 1) * 256)`` of one level form tile ``k`` of it."""

_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def hash_children(left: bytes, right: bytes) -> bytes:
    """Interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


# --------------------------------------------------------------------------- node addressing


@dataclass(frozen=True, slots=True)
class NodeID:
    """The perfect subtree of ``2**level`` leaves starting at leaf ``index * 2**level``."""

    level: int
    index: int

    def leaf_range(self) -> tuple[int, int]:
        """The half-open range of leaf indices this node covers."""
        return self.index << self.level, (self.index + 1) << self.level


@dataclass(frozen=True, slots=True)
class NodeRun:
    """Consecutive nodes of one level that just completed: ``hashes[i]`` is (level, start + i)."""

    level: int
    start: int
    hashes: tuple[bytes, ...]

    def node_ids(self) -> list[NodeID]:
        """The ids of the nodes in this run, in order."""
        return [NodeID(self.level, self.start + i) for i in range(len(self.hashes))]

    def tile_chunks(self) -> list[TileChunk]:
        """Split the run at tile boundaries, so each piece lands in a single tile."""
        chunks: list[TileChunk] = []
        position = 0
        while position < len(self.hashes):
            node_index = self.start + position
            tile_index, offset = divmod(node_index, TILE_WIDTH)
            take = min(TILE_WIDTH - offset, len(self.hashes) - position)
            chunks.append(
                TileChunk(
                    TileID(self.level, tile_index),
                    offset,
                    self.hashes[position : position + take],
                )
            )
            position += take
        return chunks


@dataclass(frozen=True, slots=True)
class TileID:
    """Tile ``index`` of a level: its nodes ``[index * TILE_WIDTH, (index + 1) * TILE_WIDTH)``."""

    level: int
    index: int


@dataclass(frozen=True, slots=True)
class TileChunk:
    """Hashes to write into one tile, starting at position ``offset`` within it."""

    tile: TileID
    offset: int
    hashes: tuple[bytes, ...]


def tile_of(node: NodeID) -> tuple[TileID, int]:
    """The tile holding ``node`` and the node's position within that tile."""
    tile_index, offset = divmod(node.index, TILE_WIDTH)
    return TileID(node.level, tile_index), offset


class NodeReader(Protocol):
    """Read access to stored perfect-subtree hashes (see the module docstring)."""

    def read_nodes(self, node_ids: Sequence[NodeID]) -> Sequence[bytes]:
        """Hashes of the given nodes, in the same order; raise LookupError if one is not stored."""
        ...


class MemoryNodeStore:
    """An in-memory NodeReader: one growing list of hashes per level."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def add_runs(self, runs: Iterable[NodeRun]) -> None:
        """Store nodes emitted by a TreeBuilder; runs must continue each level contiguously."""
        for run in runs:
            while len(self._levels) <= run.level:
                self._levels.append([])
            level = self._levels[run.level]
            if run.start != len(level):
                raise ValueError(
                    f"run at level {run.level} starts at node {run.start}, "
                    f"but the level holds {len(level)} nodes"
                )
            level.extend(run.hashes)

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of the given nodes, in order; KeyError names the first one not stored."""
        levels = self._levels
        hashes: list[bytes] = []
        for node in node_ids:
            if node.level >= len(levels) or not 0 <= node.index < len(levels[node.level]):
                raise KeyError(f"node {node} is not stored")
            hashes.append(levels[node.level][node.index])
        return hashes

    @property
    def leaf_count(self) -> int:
        """Number of leaf hashes stored (level 0)."""
        return len(self._levels[0]) if self._levels else 0


class TileNodeReader:
    """A NodeReader over tiles: fetches each tile a request touches once, then slices it.

    ``fetch_tile`` returns the tile's hashes concatenated (``32 * k`` bytes for a tile holding
    ``k`` nodes; the rightmost tile of a level may be partial) and raises LookupError if absent.
    """

    def __init__(self, fetch_tile: Callable[[TileID], bytes]) -> None:
        self._fetch_tile = fetch_tile

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of the given nodes, in order, reading each distinct tile once."""
        tiles: dict[TileID, bytes] = {}
        hashes: list[bytes] = []
        for node in node_ids:
            tile, offset = tile_of(node)
            data = tiles.get(tile)
            if data is None:
                data = tiles[tile] = self._fetch_tile(tile)
            begin = offset * HASH_SIZE
            if begin + HASH_SIZE > len(data):
                raise KeyError(f"node {node} is not stored (tile {tile} holds fewer nodes)")
            hashes.append(data[begin : begin + HASH_SIZE])
        return hashes


# --------------------------------------------------------------------------- roots and builder


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash (RFC 9162 §2.1.1) of the given leaf hashes."""
    level = list(leaf_hashes)
    _check_hashes(level, "leaf hash")
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        # Pairing left to right and carrying an odd last node up unchanged is the RFC's
        # "split at the largest power of two" recursion, done level by level.
        parents = _hash_pairs(level)
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
    return level[0]


def _hash_pairs(nodes: Sequence[bytes]) -> list[bytes]:
    """Parents of nodes (0, 1), (2, 3), ...; an odd last node is left for the caller."""
    pairs = iter(nodes)
    sha256, prefix = _sha256, _NODE_PREFIX
    # strict=False: an odd last node has no partner yet and is deliberately dropped here.
    return [
        sha256(prefix + left + right).digest() for left, right in zip(pairs, pairs, strict=False)
    ]


def _subtree_ids(begin: int, end: int) -> list[NodeID]:
    """Perfect subtrees tiling leaves [begin, end), left to right, each as big as alignment lets."""
    ids: list[NodeID] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        ids.append(NodeID(level, begin >> level))
        begin += 1 << level
    return ids


def compact_range_ids(tree_size: int) -> list[NodeID]:
    """The O(log n) perfect subtrees that make up a tree of ``tree_size`` leaves, left to right."""
    _check_size(tree_size, "tree_size")
    return _subtree_ids(0, tree_size)


def _fold_from_right(hashes: Sequence[bytes]) -> bytes:
    """Hash of adjacent perfect subtrees given left to right, each at least as tall as the next."""
    # RFC 9162 puts the largest power of two on the left, so the subtrees combine right to left.
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = hash_children(left, root)
    return root


def root_from_nodes(tree_size: int, node: NodeReader) -> bytes:
    """Root of the tree's first ``tree_size`` leaves, from O(log n) stored nodes."""
    ids = compact_range_ids(tree_size)
    if not ids:
        return EMPTY_ROOT
    return _fold_from_right(_read(node, ids))


@dataclass(frozen=True, slots=True)
class CompactRange:
    """A tree's O(log n) summary: the perfect subtree hashes covering ``[0, size)``, left to right.

    Enough to compute the root and to keep appending; persist it to resume a builder cheaply.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_size(self.size, "size")
        expected = self.size.bit_count()
        if len(self.hashes) != expected:
            raise ValueError(
                f"a compact range of size {self.size} has {expected} hashes, got {len(self.hashes)}"
            )
        _check_hashes(self.hashes, "compact range hash")

    def node_ids(self) -> list[NodeID]:
        """The nodes whose hashes this range holds, left to right."""
        return compact_range_ids(self.size)

    def root(self) -> bytes:
        """Merkle tree hash of the tree this range summarizes."""
        return _fold_from_right(self.hashes) if self.hashes else EMPTY_ROOT


class TreeBuilder:
    """Appends leaf hashes, emits every node as it completes, and knows the current root.

    State is O(log n): for each level whose bit is set in the size, the hash of the rightmost
    complete node on that level, which is still waiting for its right sibling.
    """

    def __init__(self) -> None:
        self._size = 0
        # _pending[level] is meaningful only while bit `level` of _size is set.
        self._pending: list[bytes] = []

    @classmethod
    def from_compact_range(cls, compact_range: CompactRange) -> TreeBuilder:
        """A builder continuing the tree that ``compact_range`` summarizes."""
        builder = cls()
        for node_id, node_hash in zip(compact_range.node_ids(), compact_range.hashes, strict=True):
            builder._set_pending(node_id.level, node_hash)
        builder._size = compact_range.size
        return builder

    @classmethod
    def resume(cls, tree_size: int, node: NodeReader) -> TreeBuilder:
        """A builder continuing a stored tree of ``tree_size`` leaves, from O(log n) node reads."""
        ids = compact_range_ids(tree_size)
        hashes = _read(node, ids) if ids else []
        return cls.from_compact_range(CompactRange(tree_size, tuple(hashes)))

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> list[NodeRun]:
        """Append one leaf hash; return the nodes it completed (see ``extend``)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash has {len(leaf_hash)} bytes, expected {HASH_SIZE}")
        # Same result as extend((leaf_hash,)), without its per-level list handling.
        index = self._size
        runs = [NodeRun(0, index, (leaf_hash,))]
        node_hash, level = leaf_hash, 0
        while index & 1:
            node_hash = hash_children(self._pending[level], node_hash)
            index >>= 1
            level += 1
            runs.append(NodeRun(level, index, (node_hash,)))
        self._set_pending(level, node_hash)
        self._size += 1
        return runs

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[NodeRun]:
        """Append leaf hashes; return the nodes they completed, one run per level, lowest first.

        Level 0's run is the leaf hashes themselves, so a store that persists every run can
        answer any later proof. Prefer one call per batch: the work is done level by level.
        """
        new_nodes = list(leaf_hashes)
        if not new_nodes:
            return []
        _check_hashes(new_nodes, "leaf hash")
        pending = self._pending
        runs: list[NodeRun] = []
        start = self._size  # index, on the current level, of the first node in new_nodes
        level = 0
        while new_nodes:
            runs.append(NodeRun(level, start, tuple(new_nodes)))
            if start & 1:
                # The first new node is a right child; its left sibling is the pending one.
                nodes = [pending[level], *new_nodes]
                start -= 1
            else:
                nodes = new_nodes
            if len(nodes) & 1:
                self._set_pending(level, nodes[-1])
            new_nodes = _hash_pairs(nodes)
            start >>= 1
            level += 1
        self._size += len(runs[0].hashes)
        return runs

    def root(self) -> bytes:
        """Merkle tree hash of the leaves appended so far."""
        return self.compact_range().root()

    def compact_range(self) -> CompactRange:
        """The current O(log n) summary, e.g. to persist alongside a checkpoint."""
        levels = [level for level in range(self._size.bit_length()) if self._size >> level & 1]
        return CompactRange(self._size, tuple(self._pending[level] for level in reversed(levels)))

    def _set_pending(self, level: int, node_hash: bytes) -> None:
        pending = self._pending
        while len(pending) <= level:
            pending.append(b"")
        pending[level] = node_hash


# --------------------------------------------------------------------------- proofs


def _sibling_ranges(level: int, index: int, tree_size: int) -> list[tuple[int, int]]:
    """Leaf ranges of the siblings met walking from node (level, index) up to the root.

    Bottom-up, which is the RFC 9162 order of proof hashes. A sibling lying wholly beyond the
    tree does not exist (the node is carried up unchanged); one cut by the tree's end is the
    ephemeral right-border subtree over the leaves that remain.
    """
    ranges: list[tuple[int, int]] = []
    root_level = (tree_size - 1).bit_length()
    while level < root_level:
        begin = (index ^ 1) << level
        if begin < tree_size:
            ranges.append((begin, min(begin + (1 << level), tree_size)))
        index >>= 1
        level += 1
    return ranges


def _consistency_start(size1: int) -> tuple[NodeID, bool]:
    """Where a consistency proof from ``size1`` starts, and whether that node's hash is sent.

    It is the largest perfect subtree ending at leaf ``size1``, the last piece of the old tree
    that is also a subtree of the new one. When it is the whole old tree its hash is root1,
    which the verifier already has, so the proof omits it (RFC 9162 §2.1.4.1).
    """
    level = (size1 & -size1).bit_length() - 1
    node = NodeID(level, (size1 >> level) - 1)
    return node, node.index != 0


def inclusion_proof_length(leaf_index: int, tree_size: int) -> int:
    """Number of hashes in the inclusion proof of ``leaf_index`` in a tree of ``tree_size``."""
    _check_index(leaf_index, tree_size)
    return len(_sibling_ranges(0, leaf_index, tree_size))


def consistency_proof_length(size1: int, size2: int) -> int:
    """Number of hashes in the consistency proof between sizes ``0 < size1 <= size2``."""
    _check_sizes(size1, size2)
    if size1 == size2:
        return 0
    start, sends_start = _consistency_start(size1)
    return int(sends_start) + len(_sibling_ranges(start.level, start.index, size2))


def inclusion_proof(leaf_index: int, tree_size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof for ``leaf_index`` in the first ``tree_size`` leaves."""
    _check_index(leaf_index, tree_size)
    return _hash_ranges(_sibling_ranges(0, leaf_index, tree_size), node)


def consistency_proof(size1: int, size2: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between tree sizes ``size1`` and ``size2``.

    Requires ``0 < size1 <= size2`` (RFC 9162 defines no proof from the empty tree, which every
    tree extends); ``size1 == size2`` gives the empty proof.
    """
    _check_sizes(size1, size2)
    if size1 == size2:
        return []
    start, sends_start = _consistency_start(size1)
    ranges = _sibling_ranges(start.level, start.index, size2)
    if sends_start:
        ranges.insert(0, start.leaf_range())
    return _hash_ranges(ranges, node)


def _hash_ranges(ranges: Sequence[tuple[int, int]], node: NodeReader) -> list[bytes]:
    """Hash of each leaf range, from one batched read of the perfect subtrees under them."""
    pieces = [_subtree_ids(begin, end) for begin, end in ranges]
    hashes = _read(node, [node_id for piece in pieces for node_id in piece])
    result: list[bytes] = []
    position = 0
    for piece in pieces:
        result.append(_fold_from_right(hashes[position : position + len(piece)]))
        position += len(piece)
    return result


def _read(node: NodeReader, ids: Sequence[NodeID]) -> list[bytes]:
    hashes = list(node.read_nodes(ids))
    if len(hashes) != len(ids):
        raise ValueError(f"node reader returned {len(hashes)} hashes for {len(ids)} nodes")
    for node_id, node_hash in zip(ids, hashes, strict=True):
        if len(node_hash) != HASH_SIZE:
            raise ValueError(f"node reader returned {len(node_hash)} bytes for node {node_id}")
    return hashes


# --------------------------------------------------------------------------- verifiers


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof per RFC 9162 §2.1.3.2; raise ProofError if it does not verify."""
    if leaf_index < 0 or tree_size < 0:
        raise ProofError(f"leaf index {leaf_index} and tree size {tree_size} must be >= 0")
    if leaf_index >= tree_size:
        raise ProofError(f"leaf index {leaf_index} is beyond a tree of size {tree_size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _check_proof_hashes(proof)
    expected = len(_sibling_ranges(0, leaf_index, tree_size))
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes; leaf {leaf_index} "
            f"in a tree of size {tree_size} needs {expected}"
        )
    # The algorithm of §2.1.3.2 as written; its own bounds checks are redundant after the length
    # check above but kept so the code can be read against the RFC line by line.
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the given root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check a consistency proof per RFC 9162 §2.1.4.2; raise ProofError if it does not verify.

    ``size1 == 0`` is rejected: RFC 9162 defines consistency only for ``0 < size1``, since every
    tree extends the empty one and there is nothing to prove (callers holding an empty earlier
    checkpoint should check its root is EMPTY_ROOT themselves). ``size1 == size2`` verifies
    exactly when the proof is empty and the roots are equal.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes {size1} and {size2} must be >= 0")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree (size1 = 0) is meaningless")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal, so the consistency proof must be empty")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_proof_hashes(proof)
    expected = consistency_proof_length(size1, size2)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof has {len(proof)} hashes; sizes {size1} -> {size2} need {expected}"
        )
    # §2.1.4.2 steps 2-7.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to root1 (size {size1})")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to root2 (size {size2})")


# --------------------------------------------------------------------------- argument checks


def _check_size(size: int, name: str) -> None:
    if size < 0:
        raise ValueError(f"{name} must be >= 0, got {size}")


def _check_index(leaf_index: int, tree_size: int) -> None:
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf index {leaf_index} is not in a tree of size {tree_size}")


def _check_sizes(size1: int, size2: int) -> None:
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency needs 0 < size1 <= size2, got {size1} and {size2}")


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    lengths = set(map(len, hashes))  # C-speed on the append hot path
    if not lengths or lengths == {HASH_SIZE}:
        return
    for position, value in enumerate(hashes):
        if len(value) != HASH_SIZE:
            raise ValueError(f"{what} #{position} has {len(value)} bytes, expected {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(f"proof hash #{position} has {len(value)} bytes, expected {HASH_SIZE}")
