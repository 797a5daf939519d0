"""``liuhen log mirror-tiles``: put again the mirrored tiles that ``verify --all`` names
(``tile_mirror``), from the leaf rows.

Readers who fetch tiles (C2SP tlog-tiles) prove with ``log/tile/…`` in the store, not with the
index. A full tile there that is missing, hidden by a delete marker or overwritten cannot be
taken back under Object Lock, but a new current version can be put over it. Its hashes come
from the leaf rows, re-hashed, and only once they give the latest checkpoint's signed root:
nothing the signature does not vouch for is published.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.runtime import Runtime
from ingest.signing import LogCorrupt
from integrity.merkle import HASH_SIZE, TILE_HEIGHT, TILE_WIDTH, MerkleTree, leaf_hash
from storage import keys
from storage import repository as repo
from storage.objects import retain_until

BATCH = 10_000
"""Leaf rows read at a time."""


@dataclass(frozen=True)
class TilesMirrored:
    size: int
    """The checkpoint whose full tiles were checked (0: no checkpoint yet)."""
    checked: int
    put: list[str]
    """The keys put again, in order."""


def mirror_tiles(rt: Runtime) -> TilesMirrored:
    """Check every full tile of the latest checkpoint in the store and put the ones whose
    current version is not the leaf rows' hashes. Raises LogCorrupt when the leaf rows do not
    give that checkpoint (``liuhen verify --all`` says where)."""
    with rt.reads() as session:
        row = repo.latest_checkpoint(session)
    if row is None:
        return TilesMirrored(0, 0, [])
    latest = rt.ledger.signer.open(row)  # LogCorrupt unless it opens with the log key
    size, root = latest.checkpoint.size, latest.checkpoint.root_hash
    tree = _tree_of_rows(rt, size)
    if tree.root() != root:
        raise LogCorrupt(
            f"the leaf rows do not give the root of checkpoint {size}: no tile is put from "
            "them (liuhen verify --all shows where they differ)"
        )
    tiles = [
        (level, index)
        for level in range(_levels(size))
        for index in range((size >> (level * TILE_HEIGHT)) // TILE_WIDTH)
    ]
    until = retain_until(rt.ledger.signer.retention)
    put: list[str] = []
    for level, index in tiles:
        key = keys.tile_key(level, index)
        hashes = tree.nodes(level * TILE_HEIGHT, index * TILE_WIDTH, TILE_WIDTH)
        if rt.store.read_current(key, limit=TILE_WIDTH * HASH_SIZE + 1) != hashes:
            rt.store.put_bytes(
                key, hashes, content_type="application/octet-stream", retain_until=until
            )
            put.append(key)
    return TilesMirrored(size, len(tiles), put)


def _tree_of_rows(rt: Runtime, size: int) -> MerkleTree:
    """The tree of leaf rows 0..size-1, each row's hash taken again from its data."""
    tree = MerkleTree()
    for start in range(0, size, BATCH):
        with rt.reads() as session:
            rows = repo.leaf_rows_between(session, start=start, stop=min(start + BATCH, size))
        for idx, digest, data in rows:
            if idx != tree.size or leaf_hash(data.encode()) != digest:
                what = "missing" if idx != tree.size else "not its data's hash"
                raise LogCorrupt(
                    f"leaf {tree.size} is {what}: no tile is put from the leaf rows "
                    "(liuhen verify --all shows where they differ)"
                )
            tree.append(digest)
    if tree.size != size:
        raise LogCorrupt(f"the index holds {tree.size} of checkpoint {size}'s leaves")
    return tree


def _levels(size: int) -> int:
    """Tile levels with at least one full tile at ``size`` leaves."""
    level = 0
    while size >> (level * TILE_HEIGHT) >= TILE_WIDTH:
        level += 1
    return level
