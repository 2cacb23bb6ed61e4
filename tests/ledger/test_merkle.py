"""Merkle tree properties: roots, proofs from stored nodes, tampering, batching, read counts."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    Node,
    NodeId,
    NodeReadError,
    ProofError,
    consistency_plan,
    consistency_proof,
    consistency_proof_length,
    edge_node_ids,
    inclusion_plan,
    inclusion_proof,
    inclusion_proof_length,
    leaf_hash,
    node_hash,
    range_node_ids,
    read_nodes,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    root_from_nodes,
    split_stored_hash_index,
    stored_hash_index,
    stored_node_count,
    verify_consistency,
    verify_inclusion,
)

from . import reference

SETTINGS = settings(max_examples=60, deadline=None)


def _entries(seed: int, n: int) -> list[bytes]:
    return [f"entry {seed} {i}".encode() * (i % 3) for i in range(n)]


def _tree(entries: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for e in entries:
        tree.append(e)
    return tree


class Counting:
    """Wraps a node reader and records every call."""

    def __init__(self, reader: Callable[[list[NodeId]], list[bytes]]) -> None:
        self.reader = reader
        self.calls: list[list[NodeId]] = []

    def __call__(self, ids: list[NodeId]) -> list[bytes]:
        self.calls.append(list(ids))
        return self.reader(ids)


def _flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- roots -----------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.binary(max_size=12), max_size=150))
def test_roots_match_the_rfc_definition(entries: list[bytes]) -> None:
    tree = _tree(entries)
    assert tree.root() == reference.mth(entries)
    assert root_from_leaf_hashes(leaf_hash(e) for e in entries) == reference.mth(entries)
    for size in {0, len(entries) // 2, len(entries)}:
        assert tree.root(size) == reference.mth(entries[:size])


def test_empty_tree_root() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert MemoryTree().root() == EMPTY_ROOT
    assert root_from_nodes(0, Counting(MemoryTree().get_nodes)) == EMPTY_ROOT


def test_hash_domain_separation() -> None:
    left, right = b"l" * 32, b"r" * 32
    assert leaf_hash(left + right) != node_hash(left, right)
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


# --- proofs from stored nodes ----------------------------------------------------------------


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 260), st.data())
def test_inclusion_proofs(seed: int, total: int, data: st.DataObject) -> None:
    entries = _entries(seed, total)
    tree = _tree(entries)
    size = data.draw(st.integers(1, total), label="size")  # a past size: the store has grown
    index = data.draw(st.integers(0, size - 1), label="index")
    reader = Counting(tree.get_nodes)
    proof = inclusion_proof(index, size, reader)
    assert proof == reference.path(index, entries[:size])
    assert len(proof) == inclusion_proof_length(index, size)
    root = reference.mth(entries[:size])
    verify_inclusion(leaf_hash(entries[index]), index, size, proof, root)
    assert root_from_nodes(size, tree.get_nodes) == root
    # One batched read, no duplicates, and only nodes that existed at that size.
    assert len(reader.calls) == (1 if proof else 0)
    for ids in reader.calls:
        assert len(ids) == len(set(ids))
        assert all(((i + 1) << level) <= size for level, i in ids)


@SETTINGS
@given(st.integers(0, 2**16), st.integers(1, 260), st.data())
def test_consistency_proofs(seed: int, total: int, data: st.DataObject) -> None:
    entries = _entries(seed, total)
    tree = _tree(entries)
    size2 = data.draw(st.integers(1, total), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    reader = Counting(tree.get_nodes)
    proof = consistency_proof(size1, size2, reader)
    assert proof == reference.proof(size1, entries[:size2])
    assert len(proof) == consistency_proof_length(size1, size2)
    verify_consistency(
        size1, size2, proof, reference.mth(entries[:size1]), reference.mth(entries[:size2])
    )
    assert len(reader.calls) == (1 if proof else 0)
    for ids in reader.calls:
        assert len(ids) == len(set(ids))
        assert all(((i + 1) << level) <= size2 for level, i in ids)


def test_every_proof_of_small_trees() -> None:
    # Exhaustive over all sizes up to 40: complements the random cases.
    entries = _entries(7, 40)
    tree = _tree(entries)
    for size in range(1, 41):
        root = tree.root(size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == reference.path(index, entries[:size])
            verify_inclusion(tree.leaf_hash(index), index, size, proof, root)
            assert root_from_inclusion_proof(tree.leaf_hash(index), index, size, proof) == root
        for size1 in range(1, size + 1):
            proof = tree.consistency_proof(size1, size)
            assert proof == reference.proof(size1, entries[:size])
            verify_consistency(size1, size, proof, tree.root(size1), root)


@SETTINGS
@given(st.integers(1, 200), st.data())
def test_tampered_inclusion_proofs_fail(size: int, data: st.DataObject) -> None:
    tree = _tree(_entries(size, size))
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf, proof, root = tree.leaf_hash(index), tree.inclusion_proof(index, size), tree.root()
    verify_inclusion(leaf, index, size, proof, root)
    target = data.draw(st.sampled_from(["leaf", "root", *(["proof"] if proof else [])]))
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == "leaf":
        leaf = _flip(leaf, bit)
    elif target == "root":
        root = _flip(root, bit)
    else:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)


@SETTINGS
@given(st.integers(1, 200), st.data())
def test_tampered_consistency_proofs_fail(size2: int, data: st.DataObject) -> None:
    tree = _tree(_entries(size2, size2))
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof, root1, root2 = tree.consistency_proof(size1, size2), tree.root(size1), tree.root()
    verify_consistency(size1, size2, proof, root1, root2)
    target = data.draw(st.sampled_from(["root1", "root2", *(["proof"] if proof else [])]))
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == "root1":
        root1 = _flip(root1, bit)
    elif target == "root2":
        root2 = _flip(root2, bit)
    else:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)


def test_structurally_wrong_proofs_fail() -> None:
    tree = _tree(_entries(1, 11))
    leaf, proof, root = tree.leaf_hash(5), tree.inclusion_proof(5), tree.root()
    for bad in ([*proof, proof[0]], proof[:-1], [*proof[:-1], proof[-1][:31]], []):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 5, 11, bad, root)
    with pytest.raises(ProofError, match="not below"):
        verify_inclusion(leaf, 11, 11, proof, root)
    with pytest.raises(ProofError, match="negative"):
        verify_inclusion(leaf, -1, 11, proof, root)
    with pytest.raises(ProofError, match="leaf hash"):
        verify_inclusion(leaf + b"\x00", 5, 11, proof, root)
    with pytest.raises(ProofError, match="does not lead"):
        verify_inclusion(tree.leaf_hash(4), 5, 11, proof, root)  # a sibling's leaf
    cproof = tree.consistency_proof(3, 11)
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 11, cproof, EMPTY_ROOT, root)
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(11, 3, cproof, root, tree.root(3))
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(3, 11, cproof[:-1], tree.root(3), root)
    with pytest.raises(ProofError, match="empty consistency proof"):
        verify_consistency(11, 11, cproof, root, root)
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(11, 11, [], root, tree.root(3))


def test_plans_reject_impossible_requests() -> None:
    for index, size in ((0, 0), (5, 5), (-1, 3)):
        with pytest.raises(ValueError, match="outside"):
            inclusion_plan(index, size)
    for size1, size2 in ((0, 4), (5, 4), (-1, 1)):
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_plan(size1, size2)
    assert consistency_plan(4, 4).ids == []


# --- appending and addressing ----------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.binary(min_size=32, max_size=32), max_size=150),
    st.lists(st.integers(0, 150), max_size=10),
)
def test_batched_append_equals_one_by_one(leaves: list[bytes], cuts: list[int]) -> None:
    single = CompactRange()
    one_by_one: list[Node] = []
    for leaf in leaves:
        one_by_one += single.append(leaf)
    batched = CompactRange()
    batched_nodes: list[Node] = []
    bounds = sorted({0, len(leaves), *(c for c in cuts if c <= len(leaves))})
    for start, end in itertools.pairwise(bounds):
        before = batched.size
        new = batched.extend(leaves[start:end])
        # A batch writes exactly the nodes completed by it, in dense stored-index order.
        assert len(new) == stored_node_count(end) - stored_node_count(before)
        assert [stored_hash_index(n.level, n.index) for n in new] == list(
            range(stored_node_count(before), stored_node_count(end))
        )
        batched_nodes += new
        assert batched.root() == root_from_leaf_hashes(leaves[:end])
    assert batched_nodes == one_by_one
    assert batched.hashes == single.hashes
    assert batched.root() == single.root() == root_from_leaf_hashes(leaves)
    # What was written is exactly the set of stored nodes of the final size.
    ids = {n.id for n in one_by_one}
    assert len(ids) == len(one_by_one) == stored_node_count(len(leaves))
    assert all(((i + 1) << level) <= len(leaves) for level, i in ids)


def test_a_single_append_writes_at_most_log_n_plus_one_nodes() -> None:
    rng = CompactRange()
    for n in range(2000):
        written = rng.append(hashlib.sha256(n.to_bytes(4, "big")).digest())
        assert len(written) == 1 + (n ^ (n + 1)).bit_length() - 1  # 1 + trailing ones of n
        assert len(written) <= n.bit_length() + 1


def test_stored_hash_index_is_a_dense_bijection() -> None:
    seen = []
    for n in range(3000):
        for level in range((n ^ (n + 1)).bit_length()):
            seen.append(stored_hash_index(level, n >> level))
    assert seen == list(range(len(seen)))
    for seq in range(len(seen)):
        level, index = split_stored_hash_index(seq)
        assert stored_hash_index(level, index) == seq


@SETTINGS
@given(st.integers(0, 50), st.integers(0, 2**50))
def test_stored_hash_index_round_trips(level: int, index: int) -> None:
    seq = stored_hash_index(level, index)
    assert split_stored_hash_index(seq) == (level, index)
    assert stored_hash_index(level, index + 1) > seq


def test_addressing_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="invalid node id"):
        stored_hash_index(-1, 0)
    with pytest.raises(ValueError, match="invalid stored hash index"):
        split_stored_hash_index(-1)
    with pytest.raises(ValueError, match="negative"):
        stored_node_count(-1)
    with pytest.raises(ValueError, match="invalid leaf range"):
        range_node_ids(5, 4)


def test_range_node_ids_cover_the_range_with_maximal_subtrees() -> None:
    assert edge_node_ids(13) == [(3, 0), (2, 2), (0, 12)]
    assert range_node_ids(5, 16) == [(0, 5), (1, 3), (3, 1)]
    for begin in range(0, 40):
        for end in range(begin, 70):
            covered: list[int] = []
            for level, index in range_node_ids(begin, end):
                covered += range(index << level, (index + 1) << level)
            assert covered == list(range(begin, end))


def test_compact_range_serialisation_and_rebuild() -> None:
    tree = MemoryTree()
    tree.append_leaf_hashes(hashlib.sha256(bytes([i])).digest() for i in range(77))
    rng = CompactRange.from_nodes(77, tree.get_nodes)
    assert rng.root() == tree.root()
    assert CompactRange.from_bytes(rng.to_bytes()).hashes == rng.hashes
    copy = rng.copy()
    copy.push(b"\x07" * 32)
    assert copy.size == 78
    assert rng.size == 77
    with pytest.raises(ValueError, match="edge hashes"):
        CompactRange.from_hashes(77, rng.hashes[:-1])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange.from_hashes(1, [b"short"])
    with pytest.raises(ValueError, match="malformed"):
        CompactRange.from_bytes(rng.to_bytes()[:-1])
    with pytest.raises(ValueError, match="32 bytes"):
        rng.append(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        rng.push(b"short")


def test_node_readers_are_checked() -> None:
    tree = _tree(_entries(3, 10))
    with pytest.raises(NodeReadError, match="2 nodes, got 1"):
        read_nodes(lambda ids: [b"\x00" * 32], [(0, 1), (0, 2)])
    with pytest.raises(NodeReadError, match="31-byte"):
        read_nodes(lambda ids: [b"\x00" * 31], [(0, 1)])
    with pytest.raises(KeyError):
        tree.get_nodes([(2, 2)])  # leaves 8..11: not stored in a tree of 10
    assert read_nodes(tree.get_nodes, []) == {}
    with pytest.raises(NodeReadError, match="was not read"):
        inclusion_plan(0, 10).assemble({})
    with pytest.raises(ValueError, match="outside"):
        tree.root(11)


# --- read counts at ten million entries ------------------------------------------------------

TEN_MILLION = 10_000_000


class SyntheticStore:
    """A consistent tree of any size where every leaf is the same, except ``special``.

    A perfect subtree without the special leaf has a hash that depends on its level only, so
    any node is computed in O(level) hashes: proofs at ten million entries verify for real.
    """

    def __init__(self, special: int) -> None:
        self.special = special
        self.special_leaf = leaf_hash(b"the special entry")
        self.uniform = [leaf_hash(b"an ordinary entry")]
        for _ in range(64):
            self.uniform.append(node_hash(self.uniform[-1], self.uniform[-1]))
        self.calls: list[list[NodeId]] = []

    def node(self, level: int, index: int) -> bytes:
        if index != self.special >> level:
            return self.uniform[level]
        h = self.special_leaf
        for k in range(level):
            if (self.special >> k) & 1:
                h = node_hash(self.uniform[k], h)
            else:
                h = node_hash(h, self.uniform[k])
        return h

    def get_nodes(self, ids: list[NodeId]) -> list[bytes]:
        self.calls.append(list(ids))
        return [self.node(level, index) for level, index in ids]


def _read_bound(n: int) -> int:
    return 2 * math.ceil(math.log2(n)) + 1


def test_proof_reads_are_logarithmic_at_ten_million() -> None:
    rnd = random.Random(20261123)
    indexes = [0, 1, TEN_MILLION // 2, TEN_MILLION - 2, TEN_MILLION - 1, 8_388_607, 8_388_608]
    indexes += [rnd.randrange(TEN_MILLION) for _ in range(40)]
    worst = 0
    for index in indexes:
        store = SyntheticStore(index)
        root = root_from_nodes(TEN_MILLION, store.get_nodes)
        assert len(store.calls) == 1
        assert len(store.calls[0]) == bin(TEN_MILLION).count("1")
        store.calls.clear()
        proof = inclusion_proof(index, TEN_MILLION, store.get_nodes)
        assert len(store.calls) == 1
        worst = max(worst, len(store.calls[0]))
        assert len(store.calls[0]) <= _read_bound(TEN_MILLION)
        verify_inclusion(store.special_leaf, index, TEN_MILLION, proof, root)
        with pytest.raises(ProofError):  # the same proof does not place it elsewhere
            verify_inclusion(store.special_leaf, index ^ 1, TEN_MILLION, proof, root)
    assert worst > math.log2(TEN_MILLION)  # the bound is not vacuous: right-edge nodes count


def test_consistency_reads_are_logarithmic_at_ten_million() -> None:
    rnd = random.Random(9162)
    sizes = [(1, TEN_MILLION), (TEN_MILLION - 1, TEN_MILLION), (4_194_304, TEN_MILLION)]
    sizes += [(m, TEN_MILLION) for m in (rnd.randrange(1, TEN_MILLION) for _ in range(30))]
    sizes += [(rnd.randrange(1, 5_000_000), rnd.randrange(5_000_000, TEN_MILLION))]
    for size1, size2 in sizes:
        store = SyntheticStore(rnd.randrange(size1))
        root1 = root_from_nodes(size1, store.get_nodes)
        root2 = root_from_nodes(size2, store.get_nodes)
        store.calls.clear()
        proof = consistency_proof(size1, size2, store.get_nodes)
        assert len(store.calls) == 1
        assert len(store.calls[0]) <= _read_bound(size2)
        verify_consistency(size1, size2, proof, root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root2, root1)


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=300),
    count=st.integers(min_value=1, max_value=200),
    min_level=st.integers(min_value=0, max_value=9),
)
def test_append_upper_reports_the_completed_nodes_from_a_level_up(start, count, min_level):
    """What a sealer that stores only the upper levels writes: exactly the nodes `append`
    completes at `min_level` and above, and the same tree afterwards."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(start + count)]
    full, upper = CompactRange(), CompactRange()
    for leaf in leaves[:start]:
        full.push(leaf)
        upper.push(leaf)
    for leaf in leaves[start:]:
        expected = [(n.level, n.hash) for n in full.append(leaf) if n.level >= min_level]
        assert upper.append_upper(leaf, min_level) == expected
    assert upper.to_bytes() == full.to_bytes()


def test_append_upper_checks_the_leaf_length():
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append_upper(b"short", 0)
