"""RFC 6962 / RFC 9162 Merkle trees: hashing, stored nodes, compact ranges, proofs, verification.

Hashing (RFC 9162 §2.1.1): ``leaf = SHA-256(0x00 || entry)``, ``node = SHA-256(0x01 || l || r)``,
and the root of ``n`` leaves splits at the largest power of two below ``n``.

Node addressing
---------------
Node ``(level, index)`` is the root of the *perfect* subtree over the leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 nodes are the leaf hashes. Such a node
exists once the tree has ``(index + 1) * 2**level`` leaves and never changes afterwards, so it
is written once and stored forever ("stored node"). The other nodes of a tree whose size is not
a power of two lie on its right edge; they depend on the size and are never stored: they are
folded on the fly from at most ``log2 n`` stored nodes.

- A tree of size ``n`` has ``2n - popcount(n)`` stored nodes. Appending leaf ``n`` completes
  ``1 + trailing_ones(n)`` of them (two on average, ``log2 n + 1`` at most):
  :meth:`CompactRange.extend` returns exactly those, for any batch of leaves.
- :func:`stored_hash_index` numbers stored nodes densely in the order they are completed
  (the numbering of Go's ``sumdb/tlog``), so a storage layer may key them by one integer that
  only ever grows (an append-only B-tree), or by the ``(level, index)`` pair.
- Reading is batched: every function that needs stored nodes calls a reader
  ``get_nodes(ids) -> hashes`` exactly once, with a list of distinct ids, and expects the
  hashes in the same order (a storage layer implements it with one ``SELECT ... WHERE
  (level, idx) IN (...)``). An inclusion proof needs at most ``2 * ceil(log2 n)`` nodes, a
  consistency proof at most ``2 * ceil(log2 n) + 1``, a root ``popcount(n)``.

Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "GetNodes",
    "MemoryTree",
    "Node",
    "NodeId",
    "NodeReadError",
    "ProofError",
    "ProofPlan",
    "consistency_plan",
    "consistency_proof",
    "consistency_proof_length",
    "edge_node_ids",
    "inclusion_plan",
    "inclusion_proof",
    "inclusion_proof_length",
    "leaf_hash",
    "node_hash",
    "range_node_ids",
    "read_nodes",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "root_from_nodes",
    "split_stored_hash_index",
    "stored_hash_index",
    "stored_node_count",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree, ``SHA-256()`` (RFC 9162 §2.1.1)."""

NodeId = tuple[int, int]
"""``(level, index)`` of a stored node: the perfect subtree over ``[index << level, ...)``."""


@dataclass(frozen=True, slots=True)
class Node:
    """A stored node and its hash, as returned by :meth:`CompactRange.extend`."""

    level: int
    index: int
    hash: bytes

    @property
    def id(self) -> NodeId:
        """``(level, index)``."""
        return (self.level, self.index)


GetNodes = Callable[[list[NodeId]], Sequence[bytes]]
"""Batched node reader: the hashes of the requested stored nodes, in the order requested."""


class ProofError(ValueError):
    """A Merkle proof, or the sizes and hashes it is checked against, is invalid."""


class NodeReadError(LookupError):
    """A node reader returned the wrong number of hashes, or a hash of the wrong length."""


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


# --- addressing ------------------------------------------------------------------------------


def _check_node_id(level: int, index: int) -> None:
    if level < 0 or index < 0:
        raise ValueError(f"invalid node id ({level}, {index})")


def stored_hash_index(level: int, index: int) -> int:
    """Return the dense sequence number of stored node ``(level, index)``.

    Nodes are numbered in the order appends complete them: leaf ``n`` is followed by the
    nodes it completes, lowest level first. Hence the nodes of a tree of size ``n`` are
    exactly the numbers ``[0, stored_node_count(n))`` (as in Go's ``tlog.StoredHashIndex``).
    """
    _check_node_id(level, index)
    last = ((index + 1) << level) - 1  # the leaf whose append completes this node
    return 2 * last - last.bit_count() + level


def split_stored_hash_index(seq: int) -> NodeId:
    """Inverse of :func:`stored_hash_index`."""
    if seq < 0:
        raise ValueError(f"invalid stored hash index {seq}")
    # Appending leaf n writes the numbers [f(n), f(n + 1)) with f(n) = 2n - popcount(n),
    # which is strictly increasing: find the largest n with f(n) <= seq. As
    # f(n) >= 2n - bit_length(n), that n is at most (seq + bit_length(seq)) / 2.
    n = (seq + seq.bit_length()) // 2 + 1
    while 2 * n - n.bit_count() > seq:
        n -= 1
    level = seq - (2 * n - n.bit_count())
    return level, n >> level


def stored_node_count(size: int) -> int:
    """Return how many stored nodes (leaves included) a tree of ``size`` leaves has."""
    if size < 0:
        raise ValueError(f"negative tree size {size}")
    return 2 * size - size.bit_count()


def range_node_ids(begin: int, end: int) -> list[NodeId]:
    """Return the maximal perfect subtrees that cover leaves ``[begin, end)``, left to right."""
    if not 0 <= begin <= end:
        raise ValueError(f"invalid leaf range [{begin}, {end})")
    ids: list[NodeId] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        ids.append((level, begin >> level))
        begin += 1 << level
    return ids


def edge_node_ids(size: int) -> list[NodeId]:
    """Return the stored nodes that make up a tree of ``size``: one per set bit, largest first."""
    return range_node_ids(0, size)


def read_nodes(get_nodes: GetNodes, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
    """Call ``get_nodes`` once for the distinct ``ids`` and check what it returns."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    hashes = get_nodes(wanted)
    if len(hashes) != len(wanted):
        raise NodeReadError(f"asked the node reader for {len(wanted)} nodes, got {len(hashes)}")
    found: dict[NodeId, bytes] = {}
    for node_id, h in zip(wanted, hashes, strict=True):
        if len(h) != HASH_SIZE:
            raise NodeReadError(f"node {node_id} has a {len(h)}-byte hash")
        found[node_id] = bytes(h)
    return found


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine adjacent perfect subtrees, largest first, into the root of the range they cover.

    For a range starting at a multiple of its first subtree's size this is the RFC 6962 tree
    hash of the range: it splits at the largest power of two below the range's length, which
    is the first subtree, and recurses on the rest.
    """
    if not hashes:
        raise ValueError("cannot fold an empty list of hashes")
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


# --- appending -------------------------------------------------------------------------------


class CompactRange:
    """The right edge of a tree: the hashes of :func:`edge_node_ids` of its size.

    It is all a sealer needs to keep in memory (O(log n) hashes) to append leaves and compute
    roots, and all an auditor needs to recompute a root while streaming the leaves.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild a range from its size and edge hashes (as returned by :attr:`hashes`)."""
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} edge hashes, got {len(hashes)}")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"edge hashes must be {HASH_SIZE} bytes")
        rng = cls()
        rng._size = size
        rng._hashes = [bytes(h) for h in hashes]
        return rng

    @classmethod
    def from_nodes(cls, size: int, get_nodes: GetNodes) -> CompactRange:
        """Rebuild the range of a tree of ``size`` from stored nodes (one batched read)."""
        ids = edge_node_ids(size)
        nodes = read_nodes(get_nodes, ids)
        return cls.from_hashes(size, [nodes[node_id] for node_id in ids])

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Inverse of :meth:`to_bytes`."""
        if len(data) < 8 or (len(data) - 8) % HASH_SIZE:
            raise ValueError("malformed compact range encoding")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        return cls.from_hashes(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), 32)])

    def to_bytes(self) -> bytes:
        """Serialise as the 8-byte big-endian size followed by the edge hashes, largest first."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        return CompactRange.from_hashes(self._size, self._hashes)

    @property
    def size(self) -> int:
        """Number of leaves in the tree."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the edge hashes, in the order of :func:`edge_node_ids`."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[Node]:
        """Append one leaf hash; return the stored nodes it completes, the leaf first."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        index = self._size
        completed = [Node(0, index, bytes(leaf))]
        h = completed[0].hash
        level = 0
        while (index >> level) & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            completed.append(Node(level, index >> level, h))
        self._hashes.append(h)
        self._size = index + 1
        return completed

    def append_upper(self, leaf: bytes, min_level: int) -> list[tuple[int, bytes]]:
        """Append one leaf hash; return ``(level, hash)`` of the stored nodes it completes at
        ``min_level`` and above, lowest first (a sealer that stores only the upper levels)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        hashes = self._hashes
        index = self._size
        completed: list[tuple[int, bytes]] = []
        h = leaf
        level = 0
        while (index >> level) & 1:
            h = node_hash(hashes.pop(), h)
            level += 1
            if level >= min_level:
                completed.append((level, h))
        if min_level <= 0:
            completed.insert(0, (0, bytes(leaf)))
        hashes.append(h)
        self._size = index + 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[Node]:
        """Append leaf hashes in order; return every stored node completed, in completion order.

        The result is what a storage layer writes for the batch (its :func:`stored_hash_index`
        values are consecutive); it is the same whatever way a sequence of leaves is split
        into batches.
        """
        completed: list[Node] = []
        for leaf in leaves:
            completed.extend(self.append(leaf))
        return completed

    def push(self, leaf: bytes) -> None:
        """Append a leaf hash without reporting completed nodes (the streaming fast path)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        hashes = self._hashes
        n = self._size
        h = leaf
        while n & 1:
            h = node_hash(hashes.pop(), h)
            n >>= 1
        hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """Return the root hash of the tree."""
        return _fold_right(self._hashes) if self._hashes else EMPTY_ROOT


def root_from_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """Return the root of the tree with the given leaf hashes, in O(log n) memory."""
    rng = CompactRange()
    for h in leaves:
        rng.push(h)
    return rng.root()


def root_from_nodes(size: int, get_nodes: GetNodes) -> bytes:
    """Return the root of the tree of ``size`` (now or any earlier size) from stored nodes."""
    return CompactRange.from_nodes(size, get_nodes).root()


# --- proofs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProofPlan:
    """Which stored nodes a proof needs, and how to assemble the proof from them.

    Each group yields one proof hash: a single stored node, or, for a node on the right edge
    of the tree, the perfect subtrees covering it (largest first), folded together. A storage
    layer may merge :attr:`ids` with other reads before calling :meth:`assemble`.
    """

    groups: tuple[tuple[NodeId, ...], ...]

    @property
    def ids(self) -> list[NodeId]:
        """The distinct stored nodes to read, in proof order."""
        return list(dict.fromkeys(node_id for group in self.groups for node_id in group))

    def assemble(self, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
        """Build the proof from the nodes read."""
        try:
            return [_fold_right([nodes[n] for n in group]) for group in self.groups]
        except KeyError as exc:
            raise NodeReadError(f"node {exc.args[0]} was not read") from None

    def fetch(self, get_nodes: GetNodes) -> list[bytes]:
        """Read the nodes (one call to ``get_nodes``) and assemble the proof."""
        return self.assemble(read_nodes(get_nodes, self.ids))


def _path_groups(level: int, index: int, size: int) -> list[tuple[NodeId, ...]]:
    """Return the audit path of node ``(level, index)`` in a tree of ``size``, bottom-up.

    At each level the path holds the sibling of the current node, clipped to ``[0, size)``:
    a left sibling is always perfect; a right sibling that starts at or beyond ``size`` is
    absent; one that straddles ``size`` is the (single) right-edge node, covered by perfect
    subtrees.
    """
    groups: list[tuple[NodeId, ...]] = []
    while index or (1 << level) < size:
        start = (index ^ 1) << level
        if start < size:
            groups.append(tuple(range_node_ids(start, min(start + (1 << level), size))))
        index >>= 1
        level += 1
    return groups


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Plan the inclusion proof (RFC 9162 §2.1.3.1) of leaf ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    return ProofPlan(tuple(_path_groups(0, index, size)))


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """Plan the consistency proof (RFC 9162 §2.1.4.1) from ``size1`` to ``size2``.

    The proof is the largest perfect subtree that ends at ``size1`` (left out when ``size1``
    is a power of two: it is then the old root, which the verifier has) followed by that
    subtree's audit path in the tree of ``size2``. Equal sizes give an empty proof.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return ProofPlan(())
    level = (size1 & -size1).bit_length() - 1
    index = (size1 >> level) - 1
    groups = _path_groups(level, index, size2)
    if index:
        groups.insert(0, ((level, index),))
    return ProofPlan(tuple(groups))


def inclusion_proof(index: int, size: int, get_nodes: GetNodes) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in the tree of ``size`` (one node read)."""
    return inclusion_plan(index, size).fetch(get_nodes)


def consistency_proof(size1: int, size2: int, get_nodes: GetNodes) -> list[bytes]:
    """Return the consistency proof from ``size1`` to ``size2`` (one node read)."""
    return consistency_plan(size1, size2).fetch(get_nodes)


def inclusion_proof_length(index: int, size: int) -> int:
    """Return the number of hashes in the inclusion proof of ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(size1: int, size2: int) -> int:
    """Return the number of hashes in the consistency proof from ``size1`` to ``size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return 0
    shift = (size1 & -size1).bit_length() - 1
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    seed = 0 if size1 == 1 << shift else 1
    return seed + inner - shift + border


# --- verification ----------------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1-4).

    Raises :class:`ProofError` if the index, size, leaf hash or proof are malformed.
    """
    if index < 0 or size < 0:
        raise ProofError(f"negative leaf index {index} or tree size {size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    _check_hash(leaf, "leaf hash")
    want = inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofError(
            f"the inclusion proof of index {index} in a tree of size {size} has {want} hashes,"
            f" not {len(proof)}"
        )
    _check_proof_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:  # pragma: no cover - excluded by the length check above
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # pragma: no cover - excluded by the length check above
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` with ``root`` (RFC 9162
    §2.1.3.2); raise :class:`ProofError` if not."""
    _check_hash(root, "root hash")
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError(
            f"the inclusion proof of index {index} does not lead to the root of size {size}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the tree of ``size1`` with
    ``root1`` (RFC 9162 §2.1.4.2); raise :class:`ProofError` if not.

    ``size1 == 0`` is rejected: every tree extends the empty one, so such a check proves
    nothing and is a caller bug. Equal sizes need an empty proof and equal roots.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"negative tree size {size1} or {size2}")
    if size1 == 0:
        raise ProofError("size1 is 0: consistency with the empty tree proves nothing")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == size2:
        # Only equality matters here; the vectors accept any byte strings (as Go does).
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if not hmac.compare_digest(root1, root2):
            raise ProofError(f"two different roots for the same tree size {size1}")
        return
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    want = consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofError(
            f"the consistency proof from size {size1} to {size2} has {want} hashes,"
            f" not {len(proof)}"
        )
    _check_proof_hashes(proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # pragma: no cover - excluded by the length check above
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # pragma: no cover - excluded by the length check above
        raise ProofError("the consistency proof is too short")
    if not hmac.compare_digest(fr, root1):
        raise ProofError(f"the consistency proof does not lead to the root of size {size1}")
    if not hmac.compare_digest(sr, root2):
        raise ProofError(f"the consistency proof does not lead to the root of size {size2}")


# --- in-memory tree --------------------------------------------------------------------------


class MemoryTree:
    """A log held in memory: every stored node, filled through :class:`CompactRange`.

    It serves proofs through the same batched reader a database implements, which makes it
    the reference storage for tests.
    """

    def __init__(self) -> None:
        self._range = CompactRange()
        self._nodes: dict[NodeId, bytes] = {}

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    @property
    def nodes(self) -> dict[NodeId, bytes]:
        """A copy of every stored node."""
        return dict(self._nodes)

    def append(self, entry: bytes) -> int:
        """Append an entry; return its leaf index."""
        return self.append_leaf_hashes([leaf_hash(entry)])

    def append_leaf_hashes(self, leaves: Iterable[bytes]) -> int:
        """Append leaf hashes as one batch; return the index of the last one."""
        for node in self._range.extend(leaves):
            self._nodes[node.id] = node.hash
        return self.size - 1

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash at ``index``."""
        return self._nodes[(0, index)]

    def get_nodes(self, ids: list[NodeId]) -> list[bytes]:
        """The batched node reader; raises :class:`KeyError` for a node that is not stored."""
        return [self._nodes[node_id] for node_id in ids]

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the current tree, or of an earlier ``size``."""
        if size is None:
            return self._range.root()
        return root_from_nodes(self._check_size(size), self.get_nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of ``index`` in the tree of ``size`` (default: current)."""
        size = self.size if size is None else self._check_size(size)
        return inclusion_proof(index, size, self.get_nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` to ``size2`` (default: current)."""
        size2 = self.size if size2 is None else self._check_size(size2)
        return consistency_proof(size1, size2, self.get_nodes)

    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is outside [0, {self.size}]")
        return size
