"""Merkle tree hashing and proofs as defined in RFC 9162 §2.1 (Certificate Transparency 2.0).

Leaves are hashed as SHA-256(0x00 || data) and interior nodes as SHA-256(0x01 || left || right)
(§2.1.1), so a leaf can never be passed off as a node. The verifiers implement the iterative
algorithms of §2.1.3.2 (inclusion) and §2.1.4.2 (consistency); they return ``None`` or raise
``ProofError`` naming what was expected and what was computed.

``MerkleTree`` keeps every perfect subtree hash, so it can answer for any historical size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from integrity.errors import ProofError

_sha256 = hashlib.sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root of the empty tree."""

MAX_TREE_SIZE = 2**64
"""Tree sizes and indices are uint64 in every interoperable format (checkpoints, tlog-proof)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 || d0) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """The Merkle Tree Hash of a list of leaf hashes; the empty tree hashes to ``EMPTY_ROOT``."""
    # Keep one perfect subtree per set bit of the count so far (largest first), then fold them
    # from the right: that is exactly the split at the largest power of two of §2.1.1.
    stack: list[tuple[int, bytes]] = []
    for h in hashes:
        level, node = 0, h
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
        stack.append((level, node))
    if not stack:
        return EMPTY_ROOT
    root = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return root


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has: siblings below the point where the paths to
    ``index`` and ``size - 1`` part, plus the left subtrees on the right border above it."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner + border


def _consistency_proof_length(size1: int, size2: int) -> int:
    """How many hashes PROOF(size1, D[size2]) has, for 0 < size1 < size2."""
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    known = 0 if size1 == 1 << shift else 1  # a perfect old tree is its own root, not sent
    return known + _inclusion_proof_length(size1 - 1, size2) - shift


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} has {len(h)} bytes, expected {HASH_SIZE}")


def _check_root(what: str, *, expected: bytes, computed: bytes) -> None:
    if expected != computed:
        raise ProofError(f"{what} mismatch: expected {expected.hex()}, computed {computed.hex()}")


def verify_inclusion(
    *, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    RFC 9162 §2.1.3.2. Raises ProofError on any mismatch.
    """
    if not 0 <= index < size < MAX_TREE_SIZE:
        raise ProofError(f"leaf index {index} is not inside a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _check_proof_hashes(proof)
    want = _inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofError(
            f"inclusion proof for index {index} in size {size}: "
            f"expected {want} hashes, got {len(proof)}"
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # climb the right border past absent right siblings
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # RFC 9162 step; the length check above already rules this out
        raise ProofError("inclusion proof is shorter than the path to the root")
    _check_root("root hash", expected=root, computed=r)


def verify_consistency(
    *, size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` leaves with ``root2`` extends the one of ``size1``.

    RFC 9162 §2.1.4.2. Proofs are defined for 0 < size1 ≤ size2: equal sizes need an empty
    proof and equal roots; a proof from the empty tree proves nothing and is refused.
    """
    if not 0 <= size1 <= size2 < MAX_TREE_SIZE:
        raise ProofError(f"size1 {size1} must not exceed size2 {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree (size1 = 0) proves nothing")
    _check_proof_hashes(proof)
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the proof has {len(proof)} hashes")
        _check_root("root2 (same size as root1)", expected=root1, computed=root2)
        return
    want = _consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofError(
            f"consistency proof from {size1} to {size2}: expected {want} hashes, got {len(proof)}"
        )
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)  # a perfect old tree is a node of the new one
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    _check_root("root1", expected=root1, computed=fr)
    _check_root("root2", expected=root2, computed=sr)


class MerkleTree:
    """An append-only RFC 9162 tree that can prove anything about any size it has had.

    ``_levels[k]`` holds, back to back, the hash of every complete perfect subtree of 2**k leaves
    (entry i covers leaves i*2**k .. (i+1)*2**k - 1). The Merkle Tree Hash of any range a proof
    needs starts on a boundary of its largest power-of-two part, so it is a right fold of at
    most log2(n) cached subtrees: roots and proofs cost O(log n) hashes at any historical size.

    Not thread-safe: callers serialise appends.
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> MerkleTree:
        """Rebuild a tree from its leaf hashes, in log order."""
        tree = cls()
        for h in hashes:
            tree.append(h)
        return tree

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash (not leaf data); return its index. O(1) hashes amortised."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash has {len(leaf_hash)} bytes, expected {HASH_SIZE}")
        index = self._size
        self._levels[0] += leaf_hash
        self._size += 1
        # Each time the count of nodes on level k turns even, a subtree on level k+1 completes;
        # its right child is the node just added.
        level, n, node = 0, self._size, leaf_hash
        while n % 2 == 0:
            row = self._levels[level]
            node = _sha256(NODE_PREFIX + row[-2 * HASH_SIZE : -HASH_SIZE] + node).digest()
            if level + 1 == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level + 1] += node
            level, n = level + 1, n // 2
        return index

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        self._check_size(index + 1)
        return self._perfect(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]) for the current or any earlier size (RFC 9162 §2.1.1)."""
        size = self._size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf sibling first."""
        size = self._size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not inside a tree of size {size}")
        lo, hi, path = 0, size, []
        while hi - lo > 1:
            mid = lo + _largest_power_of_two_below(hi - lo)
            if index < mid:
                path.append(self._range_hash(mid, hi))
                hi = mid
            else:
                path.append(self._range_hash(lo, mid))
                lo = mid
        path.reverse()  # collected root-first; the proof goes leaf-first
        return path

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1); empty when the sizes are equal."""
        size2 = self._size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"no consistency proof from size {size1} to size {size2}")
        # SUBPROOF(m, D[lo:hi], b), unrolled; m is counted from lo.
        lo, hi, m, complete, path = 0, size2, size1, True, []
        while m != hi - lo:
            k = _largest_power_of_two_below(hi - lo)
            if m <= k:
                path.append(self._range_hash(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range_hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            path.append(self._range_hash(lo, hi))
        path.reverse()
        return path

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside the tree's history (0..{self._size})")

    def _perfect(self, level: int, i: int) -> bytes:
        start = i * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range whose start is a multiple of its largest power of two
        part, which every range in PATH and PROOF is."""
        parts: list[bytes] = []
        pos, n = start, end - start
        while n:
            level = n.bit_length() - 1
            parts.append(self._perfect(level, pos >> level))
            pos += 1 << level
            n -= 1 << level
        root = parts.pop()
        while parts:
            root = node_hash(parts.pop(), root)
        return root
