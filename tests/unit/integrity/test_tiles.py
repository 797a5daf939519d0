"""The tiled tree (C2SP tlog-tiles kept in a store) answers exactly what the in-memory tree
answers, at every size it has had, however its appends were split and stored."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

import pytest

from integrity.errors import ProofError
from integrity.merkle import (
    TILE_WIDTH,
    MerkleTree,
    TiledTree,
    TileKey,
    root_from_leaf_hashes,
    tile_width,
    verify_inclusion,
)


def _hashes(n: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(n)]


class Store:
    """Tiles in a dict, as the index keeps them; counts reads."""

    def __init__(self) -> None:
        self.tiles: dict[TileKey, bytes] = {}
        self.reads = 0

    def read(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        self.reads += 1
        return {k: self.tiles[k] for k in keys if k in self.tiles}

    def grow(self, size: int, hashes: Sequence[bytes]) -> int:
        tree = TiledTree(size, self.read)
        tree.append_many(hashes)
        self.tiles.update(tree.changed())
        return tree.size


def test_roots_and_proofs_match_the_memory_tree_at_every_size() -> None:
    hashes = _hashes(70_000)  # past 256**2: three tile levels
    memory = MerkleTree.from_leaf_hashes(hashes)
    store, size, rng = Store(), 0, random.Random(5)
    cuts = [*sorted(rng.sample(range(1, len(hashes)), 40)), len(hashes)]
    for cut in cuts:
        size = store.grow(size, hashes[size:cut])
    assert size == len(hashes)
    assert set(store.tiles) >= {(0, 0), (1, 0), (2, 0)}
    for key, tile in store.tiles.items():
        assert len(tile) == 32 * tile_width(size, key)
    for _ in range(300):
        n = rng.randrange(1, size + 1)
        tree = TiledTree(size, store.read)
        assert tree.root(n) == memory.root(n)
        i = rng.randrange(n)
        assert tree.inclusion_proof(i, n) == memory.inclusion_proof(i, n)
        m = rng.randrange(1, n + 1)
        assert tree.consistency_proof(m, n) == memory.consistency_proof(m, n)
        assert tree.leaf(i) == hashes[i]


@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 257, 511, 512, 1000])
def test_small_sizes_and_tile_boundaries(n: int) -> None:
    hashes = _hashes(n, seed=n)
    store = Store()
    half = store.grow(0, hashes[: n // 2])
    assert store.grow(half, hashes[n // 2 :]) == n
    tree = TiledTree(n, store.read)
    assert tree.root() == root_from_leaf_hashes(hashes)
    memory = MerkleTree.from_leaf_hashes(hashes)
    for i in range(0, n, max(1, n // 17)):
        assert tree.inclusion_proof(i) == memory.inclusion_proof(i)


def test_a_proof_reads_its_tiles_in_one_go() -> None:
    store = Store()
    size = store.grow(0, _hashes(3 * TILE_WIDTH + 5))
    tree = TiledTree(size, store.read)
    tree.inclusion_proof(7, size)
    assert store.reads == 1


def test_opening_reads_nothing() -> None:
    store = Store()
    TiledTree(10**12, store.read)
    assert store.reads == 0


def test_a_missing_or_short_tile_is_refused() -> None:
    store = Store()
    size = store.grow(0, _hashes(300))
    del store.tiles[(0, 0)]
    with pytest.raises(ProofError, match="tile 0/0 is missing"):
        TiledTree(size, store.read).inclusion_proof(3)
    store = Store()
    size = store.grow(0, _hashes(300))
    store.tiles[(0, 1)] = store.tiles[(0, 1)][:-32]
    with pytest.raises(ProofError, match="tile 0/1 holds 43 hashes"):
        TiledTree(size, store.read).append_many(_hashes(1, seed=9))
    with pytest.raises(ProofError, match="needs"):
        TiledTree(size, store.read).root()


def test_a_tampered_tile_gives_proofs_that_fail() -> None:
    hashes = _hashes(600)
    store = Store()
    size = store.grow(0, hashes)
    good = TiledTree(size, store.read).root()
    tile = bytearray(store.tiles[(0, 1)])
    tile[0] ^= 1  # leaf 256
    store.tiles[(0, 1)] = bytes(tile)
    proof = TiledTree(size, store.read).inclusion_proof(257)
    with pytest.raises(ProofError, match="root hash mismatch"):
        verify_inclusion(leaf_hash=hashes[257], index=257, size=size, proof=proof, root=good)
    store.tiles[(1, 0)] = bytes(32) + store.tiles[(1, 0)][32:]
    assert TiledTree(size, store.read).root() != good


def test_bad_leaf_hash_is_refused() -> None:
    with pytest.raises(ValueError, match="31 bytes"):
        TiledTree(0, Store().read).append_many([b"x" * 31])
