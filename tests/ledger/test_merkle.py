"""RFC 9162 Merkle trees: reference vectors, prover-vs-definition checks, properties, read costs."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError
from ledger.merkle import (
    EMPTY_ROOT,
    TILE_WIDTH,
    CompactRange,
    MemoryNodeStore,
    NodeID,
    NodeRun,
    ProofError,
    TileID,
    TileNodeReader,
    TreeBuilder,
    compact_range_ids,
    consistency_proof,
    consistency_proof_length,
    hash_children,
    inclusion_proof,
    inclusion_proof_length,
    root_from_leaves,
    root_from_nodes,
    tile_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "testdata" / "rfc9162"

# The reference tree of testdata/rfc9162/README.md.
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


REFERENCE_LEAF_HASHES = [leaf(d) for d in REFERENCE_LEAVES]


def random_leaves(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def build_store(leaf_hashes: Sequence[bytes], seed: int = 0) -> MemoryNodeStore:
    """A store filled through a builder fed in random batch sizes (including single appends)."""
    rng = random.Random(seed)
    store = MemoryNodeStore()
    builder = TreeBuilder()
    position = 0
    while position < len(leaf_hashes):
        take = rng.choice([1, 1, 2, 3, 7, 64, 300])
        batch = leaf_hashes[position : position + take]
        if len(batch) == 1 and rng.random() < 0.5:
            store.add_runs(builder.append(batch[0]))
        else:
            store.add_runs(builder.extend(batch))
        position += len(batch)
    return store


# ---------------------------------------------------------------- an independent RFC 9162 model
# Written straight from the recursive definitions of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, so
# the iterative, node-reading prover is checked against the text rather than against itself.


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = largest_power_of_two_below(len(hashes))
    return hash_children(mth(hashes[:k]), mth(hashes[k:]))


def rfc_path(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form PATH(m, D[lo:hi]), m relative to lo."""
    if hi - lo == 1:
        return []
    k = largest_power_of_two_below(hi - lo)
    if m < k:
        return [*rfc_path(m, lo, lo + k), (lo + k, hi)]
    return [*rfc_path(m - k, lo + k, hi), (lo, lo + k)]


def rfc_subproof(m: int, lo: int, hi: int, whole: bool) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH form SUBPROOF(m, D[lo:hi], b), m relative to lo."""
    if m == hi - lo:
        return [] if whole else [(lo, hi)]
    k = largest_power_of_two_below(hi - lo)
    if m <= k:
        return [*rfc_subproof(m, lo, lo + k, whole), (lo + k, hi)]
    return [*rfc_subproof(m - k, lo + k, hi, False), (lo, lo + k)]


Expr = Any  # a label string, or a (left, right) pair of expressions; None if not expressible


def mth_expr(lo: int, hi: int, labels: dict[tuple[int, int], str]) -> Expr:
    """MTH(D[lo:hi]) as an expression over labelled ranges: what a verifier computes."""
    if (lo, hi) in labels:
        return labels[(lo, hi)]
    if hi - lo <= 1:
        return None
    k = largest_power_of_two_below(hi - lo)
    left, right = mth_expr(lo, lo + k, labels), mth_expr(lo + k, hi, labels)
    return None if left is None or right is None else (left, right)


def inclusion_shape(index: int, size: int) -> tuple[int, Expr]:
    """Proof length and the root as an expression of the leaf and proof positions."""
    ranges = rfc_path(index, 0, size)
    labels = {r: f"p{i}" for i, r in enumerate(ranges)}
    labels[(index, index + 1)] = "leaf"
    return len(ranges), mth_expr(0, size, labels)


def consistency_shape(size1: int, size2: int) -> tuple[int, Expr, Expr]:
    """Proof length and both roots as expressions of the proof positions (and of root1)."""
    ranges = rfc_subproof(size1, 0, size2, True)
    labels = {r: f"p{i}" for i, r in enumerate(ranges)}
    if size1 & (size1 - 1) == 0:
        labels[(0, size1)] = "root1"
    return len(ranges), mth_expr(0, size1, labels), mth_expr(0, size2, labels)


def inclusion_should_verify(index: int, size: int, true_index: int, true_size: int) -> bool:
    """Whether a genuine proof for (true_index, true_size) also proves (index, size).

    The verifier recomputes the root from the proof; it can only land on the same root if the
    claimed position yields the very same computation (anything else needs a SHA-256
    collision). Tree size is not committed to by the root itself: that is the signed
    checkpoint's job, which binds the size to the root.
    """
    if not 0 <= index < size:
        return False
    return inclusion_shape(index, size) == inclusion_shape(true_index, true_size)


def consistency_should_verify(size1: int, size2: int, true1: int, true2: int) -> bool:
    """Whether a genuine proof for (true1, true2) also proves (size1, size2); see above."""
    if not 0 < size1 <= size2:
        return False
    if size1 == size2 or true1 == true2:
        return size1 == size2 and true1 == true2 and size1 == true1
    return consistency_shape(size1, size2) == consistency_shape(true1, true2)


def verifies_inclusion(*args: Any) -> bool:
    try:
        verify_inclusion(*args)
    except ProofError:
        return False
    return True


def verifies_consistency(*args: Any) -> bool:
    try:
        verify_consistency(*args)
    except ProofError:
        return False
    return True


def flip_bit(value: bytes, bit: int) -> bytes:
    mutated = bytearray(value)
    mutated[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(mutated)


# ---------------------------------------------------------------- the RFC 9162 vector suite


def b64(value: str) -> bytes:
    return base64.b64decode(value)


def load_vectors(kind: str, only_happy_paths: bool = False) -> list[Any]:
    pattern = "happy-path.json" if only_happy_paths else "*.json"
    files = sorted((VECTORS / kind).rglob(pattern))
    assert files, f"no {kind} vectors under {VECTORS}"
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def test_vector_suite_travels_with_its_licence() -> None:
    assert "Apache License" in (VECTORS / "LICENSE").read_text()
    assert "Apache" in (VECTORS / "README.md").read_text()
    assert len(list(VECTORS.rglob("*.json"))) == 196


@pytest.mark.parametrize("vector", load_vectors("inclusion"))
def test_inclusion_vectors(vector: dict[str, Any]) -> None:
    args = (
        b64(vector["leafHash"]),
        vector["leafIdx"],
        vector["treeSize"],
        [b64(p) for p in vector["proof"] or []],
        b64(vector["root"]),
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("vector", load_vectors("consistency"))
def test_consistency_vectors(vector: dict[str, Any]) -> None:
    args = (
        vector["size1"],
        vector["size2"],
        [b64(p) for p in vector["proof"] or []],
        b64(vector["root1"]),
        b64(vector["root2"]),
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def reference_store() -> MemoryNodeStore:
    store = MemoryNodeStore()
    store.add_runs(TreeBuilder().extend(REFERENCE_LEAF_HASHES))
    return store


@pytest.mark.parametrize("vector", load_vectors("inclusion", only_happy_paths=True))
def test_prover_reproduces_inclusion_happy_paths(vector: dict[str, Any]) -> None:
    size = vector["treeSize"]
    # Every happy path is over the README's reference tree.
    assert b64(vector["root"]).hex() == REFERENCE_ROOTS[size]
    assert b64(vector["leafHash"]) == REFERENCE_LEAF_HASHES[vector["leafIdx"]]
    proof = inclusion_proof(vector["leafIdx"], size, reference_store())
    assert proof == [b64(p) for p in vector["proof"] or []]


@pytest.mark.parametrize("vector", load_vectors("consistency", only_happy_paths=True))
def test_prover_reproduces_consistency_happy_paths(vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    assert b64(vector["root1"]).hex() == REFERENCE_ROOTS[size1]
    assert b64(vector["root2"]).hex() == REFERENCE_ROOTS[size2]
    proof = consistency_proof(size1, size2, reference_store())
    assert proof == [b64(p) for p in vector["proof"] or []]


@pytest.mark.parametrize("size", range(len(REFERENCE_ROOTS)))
def test_reference_roots(size: int) -> None:
    hashes = REFERENCE_LEAF_HASHES[:size]
    assert root_from_leaves(hashes).hex() == REFERENCE_ROOTS[size]
    builder = TreeBuilder()
    store = MemoryNodeStore()
    store.add_runs(builder.extend(hashes))
    assert builder.root().hex() == REFERENCE_ROOTS[size]
    assert root_from_nodes(size, store).hex() == REFERENCE_ROOTS[size]


def test_reference_roots_through_single_appends() -> None:
    builder = TreeBuilder()
    assert builder.root().hex() == REFERENCE_ROOTS[0]
    for size, leaf_hash in enumerate(REFERENCE_LEAF_HASHES, start=1):
        builder.append(leaf_hash)
        assert builder.root().hex() == REFERENCE_ROOTS[size]


def test_proof_errors_are_ledger_errors() -> None:
    assert issubclass(ProofError, LedgerError)
    assert ProofError.status == 400


# ---------------------------------------------------------------- edge cases, by hand


def test_inclusion_rejects_index_at_or_beyond_size() -> None:
    with pytest.raises(ProofError, match="beyond"):
        verify_inclusion(leaf(b""), 1, 1, [], leaf(b""))
    with pytest.raises(ProofError, match="beyond"):
        verify_inclusion(leaf(b""), 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match=">= 0"):
        verify_inclusion(leaf(b""), -1, 1, [], leaf(b""))


def test_inclusion_names_wrong_proof_length() -> None:
    hashes = random_leaves(5, 1)
    store = build_store(hashes)
    proof = inclusion_proof(2, 5, store)
    root = mth(hashes)
    with pytest.raises(ProofError, match="needs 3"):
        verify_inclusion(hashes[2], 2, 5, proof[:-1], root)
    with pytest.raises(ProofError, match="needs 3"):
        verify_inclusion(hashes[2], 2, 5, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="bytes"):
        verify_inclusion(hashes[2], 2, 5, [proof[0][:31], *proof[1:]], root)


def test_consistency_edge_cases() -> None:
    hashes = random_leaves(6, 2)
    root3, root6 = mth(hashes[:3]), mth(hashes)
    with pytest.raises(ProofError, match="smaller"):
        verify_consistency(6, 3, [], root6, root3)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 6, [], EMPTY_ROOT, root6)
    verify_consistency(3, 3, [], root3, root3)
    with pytest.raises(ProofError, match="differ"):
        verify_consistency(3, 3, [], root3, root6)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(3, 3, [root3], root3, root3)
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(3, 6, [], root3, root6)


def test_prover_argument_errors() -> None:
    store = build_store(random_leaves(4, 3))
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(4, 4, store)
    with pytest.raises(ValueError, match="0 < size1"):
        consistency_proof(0, 4, store)
    with pytest.raises(ValueError, match="0 < size1"):
        consistency_proof(3, 2, store)
    assert consistency_proof(4, 4, store) == []
    with pytest.raises(KeyError):
        inclusion_proof(0, 5, store)  # the store only holds 4 leaves


def test_builder_rejects_bad_leaf_hashes() -> None:
    builder = TreeBuilder()
    with pytest.raises(ValueError, match="#1 has 31 bytes"):
        builder.extend([bytes(32), bytes(31)])
    with pytest.raises(ValueError, match="31 bytes"):
        builder.append(bytes(31))
    assert builder.size == 0
    assert builder.extend([]) == []


def test_store_rejects_gaps() -> None:
    store = MemoryNodeStore()
    with pytest.raises(ValueError, match="starts at node 1"):
        store.add_runs([NodeRun(0, 1, (bytes(32),))])


# ---------------------------------------------------------------- exhaustive small trees


@pytest.mark.parametrize("size", range(1, 34))
def test_every_proof_in_small_trees_matches_the_rfc_definition(size: int) -> None:
    hashes = random_leaves(size, size)
    store = build_store(hashes, seed=size)
    for tree_size in range(1, size + 1):
        root = mth(hashes[:tree_size])
        assert root_from_nodes(tree_size, store) == root
        for index in range(tree_size):
            proof = inclusion_proof(index, tree_size, store)
            assert proof == [mth(hashes[a:b]) for a, b in rfc_path(index, 0, tree_size)]
            assert len(proof) == inclusion_proof_length(index, tree_size)
            verify_inclusion(hashes[index], index, tree_size, proof, root)
        for size1 in range(1, tree_size + 1):
            proof = consistency_proof(size1, tree_size, store)
            expected = rfc_subproof(size1, 0, tree_size, True) if size1 < tree_size else []
            assert proof == [mth(hashes[a:b]) for a, b in expected]
            assert len(proof) == consistency_proof_length(size1, tree_size)
            verify_consistency(size1, tree_size, proof, mth(hashes[:size1]), root)


# ---------------------------------------------------------------- properties


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[bytes], MemoryNodeStore, int]:
    stored = draw(st.integers(min_value=1, max_value=300))
    seed = draw(st.integers(min_value=0, max_value=2**32))
    hashes = random_leaves(stored, seed)
    return hashes, build_store(hashes, seed), seed


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(tree=trees(), data=st.data())
def test_inclusion_proofs_verify_and_every_single_bit_change_is_caught(
    tree: tuple[list[bytes], MemoryNodeStore, int], data: st.DataObject
) -> None:
    hashes, store, seed = tree
    rng = random.Random(seed)
    # Proofs are served for any size up to what is stored, not only the latest.
    size = data.draw(st.integers(min_value=1, max_value=len(hashes)), label="tree_size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="leaf_index")
    root = mth(hashes[:size])
    leaf_hash = hashes[index]
    proof = inclusion_proof(index, size, store)
    verify_inclusion(leaf_hash, index, size, proof, root)

    for position in range(len(proof)):
        for bit in {0, 255, rng.randrange(256)}:
            mutated = list(proof)
            mutated[position] = flip_bit(mutated[position], bit)
            assert not verifies_inclusion(leaf_hash, index, size, mutated, root)
    bit = rng.randrange(256)
    assert not verifies_inclusion(leaf_hash, index, size, proof, flip_bit(root, bit))
    assert not verifies_inclusion(flip_bit(leaf_hash, bit), index, size, proof, root)
    for bit in range(size.bit_length() + 2):
        other_index = index ^ (1 << bit)
        assert not verifies_inclusion(leaf_hash, other_index, size, proof, root)
        assert not inclusion_should_verify(other_index, size, index, size)
        # The root does not commit to the tree size, so a size whose tree has this leaf at the
        # same place in the same shape still verifies; the model says exactly when.
        other_size = size ^ (1 << bit)
        assert verifies_inclusion(leaf_hash, index, other_size, proof, root) == (
            inclusion_should_verify(index, other_size, index, size)
        )


@PROPERTY_SETTINGS
@given(tree=trees(), data=st.data())
def test_consistency_proofs_verify_and_every_single_bit_change_is_caught(
    tree: tuple[list[bytes], MemoryNodeStore, int], data: st.DataObject
) -> None:
    hashes, store, seed = tree
    rng = random.Random(seed)
    size2 = data.draw(st.integers(min_value=1, max_value=len(hashes)), label="size2")
    size1 = data.draw(st.integers(min_value=1, max_value=size2), label="size1")
    root1, root2 = mth(hashes[:size1]), mth(hashes[:size2])
    proof = consistency_proof(size1, size2, store)
    verify_consistency(size1, size2, proof, root1, root2)

    for position in range(len(proof)):
        for bit in {0, 255, rng.randrange(256)}:
            mutated = list(proof)
            mutated[position] = flip_bit(mutated[position], bit)
            assert not verifies_consistency(size1, size2, mutated, root1, root2)
    bit = rng.randrange(256)
    assert not verifies_consistency(size1, size2, proof, flip_bit(root1, bit), root2)
    assert not verifies_consistency(size1, size2, proof, root1, flip_bit(root2, bit))
    for bit in range(size2.bit_length() + 2):
        for other1, other2 in ((size1 ^ (1 << bit), size2), (size1, size2 ^ (1 << bit))):
            assert verifies_consistency(other1, other2, proof, root1, root2) == (
                consistency_should_verify(other1, other2, size1, size2)
            ), (other1, other2)


def test_every_single_bit_change_of_index_or_size_in_small_trees() -> None:
    """Exhaustive companion of the two properties above, for every proof in trees up to 48."""
    hashes = random_leaves(48, 8)
    store = build_store(hashes)
    roots = [mth(hashes[:size]) for size in range(49)]
    for size2 in range(1, 49):
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, store)
            for bit in range(7):
                for other1, other2 in ((size1 ^ (1 << bit), size2), (size1, size2 ^ (1 << bit))):
                    assert verifies_consistency(
                        other1, other2, proof, roots[size1], roots[size2]
                    ) == consistency_should_verify(other1, other2, size1, size2)
        for index in range(size2):
            proof = inclusion_proof(index, size2, store)
            for bit in range(7):
                assert not verifies_inclusion(
                    hashes[index], index ^ (1 << bit), size2, proof, roots[size2]
                )
                other_size = size2 ^ (1 << bit)
                assert verifies_inclusion(
                    hashes[index], index, other_size, proof, roots[size2]
                ) == inclusion_should_verify(index, other_size, index, size2)


def test_size_changes_that_keep_the_proof_shape_do_verify() -> None:
    """Documents why the properties above consult the model for size changes."""
    hashes = random_leaves(7, 4)
    store = build_store(hashes)
    root6 = mth(hashes[:6])
    proof = inclusion_proof(0, 6, store)
    # Leaf 0 sits at the same place, under the same siblings, in trees of sizes 6 and 7.
    verify_inclusion(hashes[0], 0, 7, proof, root6)
    assert inclusion_should_verify(0, 7, 0, 6)


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=700), st.integers(min_value=0, max_value=2**32))
def test_batched_and_single_appends_emit_the_same_nodes(count: int, seed: int) -> None:
    hashes = random_leaves(count, seed)
    single, batched = TreeBuilder(), TreeBuilder()
    single_nodes: dict[NodeID, bytes] = {}
    batched_nodes: dict[NodeID, bytes] = {}
    for leaf_hash in hashes:
        for run in single.append(leaf_hash):
            single_nodes.update(zip(run.node_ids(), run.hashes, strict=True))
    rng = random.Random(seed)
    position = 0
    while position < count:
        take = rng.randint(1, 80)
        for run in batched.extend(hashes[position : position + take]):
            batched_nodes.update(zip(run.node_ids(), run.hashes, strict=True))
        position += take
        assert batched.root() == mth(hashes[:position])
    assert single_nodes == batched_nodes
    assert single.root() == batched.root() == mth(hashes)
    # Exactly the complete perfect subtrees, each with its true hash.
    expected = {
        NodeID(level, index)
        for level in range(count.bit_length())
        for index in range(count >> level)
    }
    assert set(single_nodes) == expected
    for node_id in rng.sample(sorted(expected, key=lambda n: (n.level, n.index)), min(20, count)):
        begin, end = node_id.leaf_range()
        assert single_nodes[node_id] == mth(hashes[begin:end])


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=2**32))
def test_builder_resumes_from_compact_range_and_from_store(total: int, seed: int) -> None:
    hashes = random_leaves(total, seed)
    cut = random.Random(seed).randint(0, total)
    first = TreeBuilder()
    store = MemoryNodeStore()
    store.add_runs(first.extend(hashes[:cut]))
    compact = first.compact_range()
    assert compact.size == cut
    assert [n.level for n in compact.node_ids()] == sorted(
        (level for level in range(cut.bit_length()) if cut >> level & 1), reverse=True
    )
    for resumed in (
        TreeBuilder.from_compact_range(compact),
        TreeBuilder.resume(cut, store),
    ):
        assert resumed.root() == mth(hashes[:cut])
        resumed.extend(hashes[cut:])
        assert resumed.size == total
        assert resumed.root() == mth(hashes)
    store.add_runs(TreeBuilder.resume(cut, store).extend(hashes[cut:]))
    assert root_from_nodes(total, store) == mth(hashes)


def test_compact_range_validates() -> None:
    with pytest.raises(ValueError, match="has 2 hashes"):
        CompactRange(5, (bytes(32),))
    with pytest.raises(ValueError, match="33 bytes"):
        CompactRange(1, (bytes(33),))
    assert CompactRange(0, ()).root() == EMPTY_ROOT


# ---------------------------------------------------------------- read costs


class CountingReader:
    """Wraps a NodeReader, counting reads and checking only complete nodes are asked for."""

    def __init__(self, inner: Any, tree_size: int) -> None:
        self.inner = inner
        self.tree_size = tree_size
        self.reads = 0
        self.calls = 0

    def read_nodes(self, node_ids: Sequence[NodeID]) -> Sequence[bytes]:
        self.calls += 1
        self.reads += len(node_ids)
        for node_id in node_ids:
            assert node_id.leaf_range()[1] <= self.tree_size, f"{node_id} is not complete"
        result: Sequence[bytes] = self.inner.read_nodes(node_ids)
        return result


class SyntheticNodes:
    """Any node's 'hash' made up on demand, to measure read costs on huge trees without storage."""

    def read_nodes(self, node_ids: Sequence[NodeID]) -> list[bytes]:
        return [hashlib.sha256(b"%d/%d" % (n.level, n.index)).digest() for n in node_ids]


def read_bound(tree_size: int) -> int:
    # Siblings on the path plus the pieces of at most one ephemeral right-border subtree.
    return 2 * max(1, (tree_size - 1).bit_length()) + 1


def test_proofs_read_logarithmically_many_nodes() -> None:
    hashes = random_leaves(1000, 5)
    store = build_store(hashes)
    for tree_size in (1, 2, 3, 255, 256, 257, 999, 1000):
        bound = read_bound(tree_size)
        for index in range(0, tree_size, max(1, tree_size // 50)):
            reader = CountingReader(store, tree_size)
            inclusion_proof(index, tree_size, reader)
            assert reader.reads <= bound and reader.calls == 1
        for size1 in range(1, tree_size + 1, max(1, tree_size // 50)):
            reader = CountingReader(store, tree_size)
            consistency_proof(size1, tree_size, reader)
            assert reader.reads <= bound and reader.calls <= 1
        reader = CountingReader(store, tree_size)
        assert root_from_nodes(tree_size, reader) == mth(hashes[:tree_size])
        assert reader.reads == tree_size.bit_count()


def test_proofs_in_a_ten_million_leaf_tree_read_few_nodes() -> None:
    rng = random.Random(6)
    for tree_size in (10_000_000, 10_000_001, 2**24, 2**24 - 1, 2**40 + 12345):
        bound = read_bound(tree_size)
        for _ in range(50):
            reader = CountingReader(SyntheticNodes(), tree_size)
            index = rng.randrange(tree_size)
            proof = inclusion_proof(index, tree_size, reader)
            assert len(proof) == inclusion_proof_length(index, tree_size)
            assert reader.reads <= bound
            reader = CountingReader(SyntheticNodes(), tree_size)
            size1 = rng.randrange(1, tree_size + 1)
            consistency_proof(size1, tree_size, reader)
            assert reader.reads <= bound
        resumed = TreeBuilder.resume(tree_size, CountingReader(SyntheticNodes(), tree_size))
        assert resumed.size == tree_size
        assert len(compact_range_ids(tree_size)) == tree_size.bit_count()


# ---------------------------------------------------------------- tiles


def test_tile_reader_serves_the_same_proofs() -> None:
    hashes = random_leaves(1500, 7)
    tiles: dict[TileID, bytearray] = {}
    builder = TreeBuilder()
    position = 0
    while position < len(hashes):
        for run in builder.extend(hashes[position : position + 333]):
            for chunk in run.tile_chunks():
                assert chunk.offset + len(chunk.hashes) <= TILE_WIDTH
                data = tiles.setdefault(chunk.tile, bytearray())
                assert len(data) == 32 * chunk.offset  # tiles fill left to right, no gaps
                data.extend(b"".join(chunk.hashes))
        position += 333
    assert len(tiles[TileID(0, 0)]) == 32 * TILE_WIDTH
    fetched: list[TileID] = []

    def fetch(tile: TileID) -> bytes:
        fetched.append(tile)
        if tile not in tiles:
            raise KeyError(tile)
        return bytes(tiles[tile])

    reader = TileNodeReader(fetch)
    store = build_store(hashes)
    for index in (0, 1, 255, 256, 1000, 1499):
        fetched.clear()
        assert inclusion_proof(index, 1500, reader) == inclusion_proof(index, 1500, store)
        assert len(fetched) == len(set(fetched))  # each tile fetched once per proof
    assert consistency_proof(700, 1500, reader) == consistency_proof(700, 1500, store)
    assert root_from_nodes(1500, reader) == mth(hashes)
    assert tile_of(NodeID(3, 513)) == (TileID(3, 2), 1)
    with pytest.raises(KeyError):
        reader.read_nodes([NodeID(0, 1500)])
