"""Merkle tree hashing and proofs as defined in RFC 9162 §2.1 (Certificate Transparency 2.0).

Leaves are hashed as SHA-256(0x00 || data) and interior nodes as SHA-256(0x01 || left || right)
(§2.1.1), so a leaf can never be passed off as a node. The verifiers implement the iterative
algorithms of §2.1.3.2 (inclusion) and §2.1.4.2 (consistency); they return ``None`` or raise
``ProofError`` naming what was expected and what was computed.

``MerkleTree`` keeps every perfect subtree hash, so it can answer for any historical size.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence

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


def _range_parts(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` that make up D[start:end], left to right, for a
    range whose start is a multiple of its largest power-of-two part (every range in PATH and
    PROOF is)."""
    parts: list[tuple[int, int]] = []
    pos, n = start, end - start
    while n:
        level = n.bit_length() - 1
        parts.append((level, pos >> level))
        pos += 1 << level
        n -= 1 << level
    return parts


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make PATH(index, D[0:size]), leaf sibling first."""
    lo, hi, ranges = 0, size, []
    while hi - lo > 1:
        mid = lo + _largest_power_of_two_below(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()  # collected root-first; the proof goes leaf-first
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make PROOF(size1, D[0:size2]); SUBPROOF unrolled."""
    lo, hi, m, complete, ranges = 0, size2, size1, True, []
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


class ProvingTree(ABC):
    """What every tree here answers: roots and proofs for any size it has had.

    A subclass says how to find one perfect subtree hash (``_perfect``) and may fetch the ones
    a proof needs in one go (``_want``); the RFC's algorithms are written once, here.
    """

    @property
    @abstractmethod
    def size(self) -> int:
        """How many leaves the tree holds."""

    @abstractmethod
    def _perfect(self, level: int, i: int) -> bytes:
        """The hash of the perfect subtree of 2**level leaves starting at leaf i * 2**level."""

    def _want(self, nodes: Sequence[tuple[int, int]]) -> None:  # noqa: B027 - optional hook
        """A hint: these perfect subtrees are about to be read (default: nothing to fetch)."""

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        self._check_size(index + 1)
        return self._perfect(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]) for the current or any earlier size (RFC 9162 §2.1.1)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._hash_ranges([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf sibling first."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not inside a tree of size {size}")
        return self._hash_ranges(_inclusion_ranges(index, size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1); empty when the sizes are equal."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"no consistency proof from size {size1} to size {size2}")
        return self._hash_ranges(_consistency_ranges(size1, size2))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is outside the tree's history (0..{self.size})")

    def _hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH of each range: a right fold of its perfect subtrees."""
        plans = [_range_parts(start, end) for start, end in ranges]
        self._want([part for plan in plans for part in plan])
        hashes = []
        for plan in plans:
            parts = [self._perfect(level, i) for level, i in plan]
            root = parts.pop()
            while parts:
                root = node_hash(parts.pop(), root)
            hashes.append(root)
        return hashes


class MerkleTree(ProvingTree):
    """An append-only RFC 9162 tree held in memory.

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

    def _perfect(self, level: int, i: int) -> bytes:
        start = i * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def nodes(self, level: int, start: int, count: int) -> bytes:
        """The hashes of the complete subtrees ``start`` .. ``start + count - 1`` on tree
        level ``level``, back to back (fewer where the tree has not completed them): the
        contents of a tile, to hold a stored one against."""
        if level >= len(self._levels):
            return b""
        row = self._levels[level]
        return bytes(row[start * HASH_SIZE : (start + count) * HASH_SIZE])


TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
"""C2SP tlog-tiles: a tile spans 8 tree levels and holds up to 256 hashes of its bottom level."""

TileKey = tuple[int, int]
"""(tile level L, tile index N): the hashes of tree level 8·L numbered 256·N .. 256·N + 255."""

TileReader = Callable[[Sequence[TileKey]], Mapping[TileKey, bytes]]
"""Fetches stored tiles by key (absent keys are left out of the answer)."""


def _fold(row: bytes, levels: int) -> bytes:
    """Hash a row of 2**levels adjacent node hashes up ``levels`` levels, to one node."""
    for _ in range(levels):
        row = b"".join(
            _sha256(NODE_PREFIX + row[j : j + 2 * HASH_SIZE]).digest()
            for j in range(0, len(row), 2 * HASH_SIZE)
        )
    return row


def tile_width(size: int, key: TileKey) -> int:
    """How many hashes tile ``key`` holds in a tree of ``size`` leaves (0 if none yet)."""
    level, index = key
    count = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


class TiledTree(ProvingTree):
    """An RFC 9162 tree kept as C2SP tlog-tiles (c2sp.org/tlog-tiles) and read on demand.

    Tile (L, N) holds, back to back, the hashes of the nodes on tree level 8·L numbered
    256·N .. 256·N + 255: level-0 tiles hold leaf hashes, level-1 tiles the roots of full
    level-0 tiles, and so on; the rightmost tile of each level is partial. Any perfect subtree
    sits at most 7 levels above one tile row, so a root or a proof reads O(log n) tiles (in
    one ``read`` call) and hashes at most 255 times per tile level. Opening a tree of any size
    reads nothing: a process that keeps its tiles in the index starts in constant time.

    Appending touches only the rightmost tile of each level; ``changed()`` returns them.
    Not thread-safe: one tree per unit of work.
    """

    def __init__(self, size: int, read: TileReader) -> None:
        if not 0 <= size < MAX_TREE_SIZE:
            raise ValueError(f"tree size {size} is out of range")
        self._size = size
        self._read = read
        self._tiles: dict[TileKey, bytes] = {}
        self._growing: dict[TileKey, bytearray] = {}
        self._nodes: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return self._size

    def changed(self) -> dict[TileKey, bytes]:
        """The tiles appending has changed or made, as they are now."""
        return {key: bytes(tile) for key, tile in self._growing.items()}

    def append_many(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add leaf hashes (not leaf data) in log order."""
        self._fetch(self._edge())
        for h in leaf_hashes:
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hash has {len(h)} bytes, expected {HASH_SIZE}")
            self._add(0, self._size, h)
            self._size += 1

    def leaves(self, start: int, stop: int) -> list[bytes]:
        """The leaf hashes start..stop - 1, their tiles read in one go."""
        self._check_size(stop)
        if start >= stop:
            return []
        self._want([*((0, i) for i in range(start, stop, TILE_WIDTH)), (0, stop - 1)])
        return [self._perfect(0, i) for i in range(start, stop)]

    def _edge(self) -> list[TileKey]:
        """The partial tile of each level: the only ones an append reads."""
        keys, level = [], 0
        while count := self._size >> (TILE_HEIGHT * level):
            if count % TILE_WIDTH:
                keys.append((level, count // TILE_WIDTH))
            level += 1
        return keys

    def _add(self, level: int, index: int, node: bytes) -> None:
        """Put ``node`` as entry ``index`` of tile row ``level``; carry full tiles upwards."""
        key, offset = (level, index // TILE_WIDTH), index % TILE_WIDTH
        tile = self._growing.get(key)
        if tile is None:
            tile = bytearray(self._tiles.get(key, b"") if offset else b"")
            self._growing[key] = tile
        if len(tile) != offset * HASH_SIZE:
            raise ProofError(
                f"tile {level}/{key[1]} holds {len(tile) // HASH_SIZE} hashes, "
                f"a tree of {self._size} leaves needs {offset}"
            )
        tile += node
        if offset + 1 == TILE_WIDTH:
            self._add(level + 1, key[1], _fold(bytes(tile), TILE_HEIGHT))

    @staticmethod
    def _tile_of(level: int, i: int) -> tuple[TileKey, int, int]:
        """Where node (level, i) lies: its tile, the first entry of its row, how many levels up."""
        tile_level, up = divmod(level, TILE_HEIGHT)
        first = i << up
        return (tile_level, first // TILE_WIDTH), first % TILE_WIDTH, up

    def _want(self, nodes: Sequence[tuple[int, int]]) -> None:
        self._fetch({self._tile_of(level, i)[0] for level, i in nodes})

    def _fetch(self, keys: Iterable[TileKey]) -> None:
        missing = sorted(k for k in keys if k not in self._tiles and k not in self._growing)
        if not missing:
            return
        got = self._read(missing)
        for key in missing:
            tile = got.get(key)
            if tile is None:
                raise ProofError(f"tile {key[0]}/{key[1]} is missing")
            self._tiles[key] = bytes(tile)

    def _perfect(self, level: int, i: int) -> bytes:
        node = self._nodes.get((level, i))
        if node is not None:
            return node
        key, first, up = self._tile_of(level, i)
        self._fetch([key])
        tile = self._growing[key] if key in self._growing else self._tiles[key]
        start, stop = first * HASH_SIZE, (first + (1 << up)) * HASH_SIZE
        if len(tile) < stop:
            raise ProofError(
                f"tile {key[0]}/{key[1]} holds {len(tile) // HASH_SIZE} hashes, "
                f"node ({level}, {i}) needs {stop // HASH_SIZE}"
            )
        node = _fold(bytes(tile[start:stop]), up)
        self._nodes[(level, i)] = node
        return node
