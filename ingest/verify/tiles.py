"""The stored tree (``log_tree`` and ``log_tiles``) against the tree rebuilt from the leaf rows.

A process starts from the stored tree instead of re-hashing the log, and proves receipts and
signs checkpoints from its tiles; a tile that differs from the leaves is refused when a proof
touches it, and would stop the next signing. Here every stored tile is held against the
rebuilt tree, so a damaged one is named before it is used.

The run reads while others sign: a tile only ever grows (its first hashes never change), so
each stored hash is compared where the rebuilt tree has it; hashes for leaves this run did not
read are not judged. ``log_tree`` is read before the tiles, so every tile its size needs is
there (the signer writes both in one transaction).
"""

from __future__ import annotations

import bisect
import logging
from concurrent.futures import ThreadPoolExecutor

from ingest.verify.log import Audit
from integrity.merkle import HASH_SIZE, TILE_HEIGHT, TILE_WIDTH, TileKey, tile_width
from storage import keys
from storage import repository as repo
from storage.errors import NotFound, ObjectStoreError, StoreUnavailable

log = logging.getLogger(__name__)
MIRROR_READERS = 8
TILE_BYTES = TILE_WIDTH * HASH_SIZE


def check_tiles(audit: Audit) -> None:
    tree = audit.tree
    with audit.rt.reads() as session:
        try:
            size, root = repo.log_tree_state(session)
        except NotFound as e:
            audit.fail(None, "log_tree", str(e))
            return
        holes = bool(audit.placeholders) and audit.placeholders[0] < size
        if size <= tree.size and size and not holes and tree.root(size) != root:
            audit.fail(
                None,
                "log_tree",
                f"the stored tree's root at size {size} is {root.hex()}; the leaf rows give "
                f"{tree.root(size).hex()}",
            )
        seen: set[TileKey] = set()
        wide: dict[TileKey, int] = {}  # more hashes than the tree read first has there
        for level, idx, hashes in repo.iter_tiles(session):
            seen.add((level, idx))
            count = _check_tile(audit, (level, idx), hashes, stored_size=size)
            if count > tile_width(max(size, tree.size), (level, idx)):
                wide[(level, idx)] = count
        if wide:  # a signer may have moved on while the tiles were read: ask the tree again
            later = max(repo.log_tree_state(session)[0], tree.size)
            for (level, idx), count in wide.items():
                if count > tile_width(later, (level, idx)):
                    audit.fail(
                        None,
                        "log_tile",
                        f"tile {level}/{idx} holds {count} hashes, more than a tree of "
                        f"{later} leaves has there",
                    )
    missing = [key for key in _tiles_of(size) if key not in seen]
    if missing:
        shown = ", ".join(f"{level}/{idx}" for level, idx in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        audit.fail(None, "log_tile", f"the stored tree of {size} leaves lacks tiles {shown}{more}")


def _check_tile(audit: Audit, key: TileKey, hashes: bytes, *, stored_size: int) -> int:
    """Fail ``key`` if it is malformed, shorter than ``stored_size`` needs, or holds a hash
    the rebuilt tree has otherwise; returns how many hashes it holds (0: malformed)."""
    level, idx = key
    count, rest = divmod(len(hashes), HASH_SIZE)
    if rest or not 0 < count <= TILE_WIDTH:
        audit.fail(None, "log_tile", f"tile {level}/{idx} holds {len(hashes)} bytes")
        return 0
    needed = tile_width(stored_size, key)
    if count < needed:
        audit.fail(
            None,
            "log_tile",
            f"tile {level}/{idx} holds {count} hashes; the stored tree of {stored_size} "
            f"leaves needs {needed} there",
        )
        return count
    expected = audit.tree.nodes(level * TILE_HEIGHT, idx * TILE_WIDTH, count)
    judged = len(expected)  # the hashes of leaves signed after this run read the rows: unjudged
    if hashes[:judged] == expected:
        return count
    span = 1 << (level * TILE_HEIGHT)
    differing = (
        j // HASH_SIZE
        for j in range(0, judged, HASH_SIZE)
        if hashes[j : j + HASH_SIZE] != expected[j : j + HASH_SIZE]
    )
    # A hash over a leaf row that is gone (named ``leaf_missing`` already) proves nothing here.
    first = next(
        (j for j in differing if not _covers_hole(audit, (idx * TILE_WIDTH + j) * span, span)),
        None,
    )
    if first is None:
        return count
    node = idx * TILE_WIDTH + first
    audit.fail(
        None,
        "log_tile",
        f"tile {level}/{idx}, hash {first} (leaves {node * span}..{(node + 1) * span - 1}) "
        "differs from the leaf rows",
        idx=node * span if level == 0 else None,
    )
    return count


def _covers_hole(audit: Audit, start: int, span: int) -> bool:
    """Whether leaves ``start`` .. ``start + span - 1`` include one stood in by a placeholder."""
    at = bisect.bisect_left(audit.placeholders, start)
    return at < len(audit.placeholders) and audit.placeholders[at] < start + span


def _tiles_of(size: int) -> list[TileKey]:
    """The tiles a tree of ``size`` leaves keeps, level by level."""
    keys: list[TileKey] = []
    level = 0
    while size >> (level * TILE_HEIGHT):
        nodes = size >> (level * TILE_HEIGHT)
        keys += [(level, n) for n in range((nodes + TILE_WIDTH - 1) // TILE_WIDTH)]
        level += 1
    return keys


def check_mirrored_tiles(audit: Audit, signed_size: int) -> None:
    """The full tiles mirrored to the store, which readers who fetch tiles (C2SP tlog-tiles)
    and not rows prove with, against the tree rebuilt from the leaf rows: each full tile of
    the latest checkpoint (``signed_size``) must be there, holding the rebuilt hashes.

    The current version is what a reader fetches: it must hold the rebuilt hashes. Unless
    the bucket holds another log (``audit.other_logs``), whose tiles are put at the same keys
    (its checkpoints and leaf bundles are told apart by their signatures; tiles carry none):
    then any version of the key holding the rebuilt hashes will do."""
    size = min(signed_size, audit.tree.size)
    wanted = [
        tile
        for tile in _tiles_of(size)
        if tile_width(size, tile) == TILE_WIDTH and not _covers_hole(audit, *_leaves_of(tile))
    ]
    if not wanted or audit.skipped(None, keys.TILES_PREFIX, None):
        return
    with ThreadPoolExecutor(MIRROR_READERS) as pool:
        for tile, problem in zip(
            wanted, pool.map(lambda t: _mirrored(audit, t), wanted), strict=True
        ):
            if problem is not None:
                level, idx = tile
                audit.fail(None, "tile_mirror", f"{keys.tile_key(level, idx)}: {problem}")


def _mirrored(audit: Audit, tile: TileKey) -> str | None:
    """What is wrong with the mirrored copies of ``tile``, or None (also when they cannot be
    read now: listed as not checked)."""
    level, idx = tile
    key = keys.tile_key(level, idx)
    if audit.skipped(None, key, None):
        return None
    expected = audit.tree.nodes(level * TILE_HEIGHT, idx * TILE_WIDTH, TILE_WIDTH)
    start, count = _leaves_of(tile)
    leaves = f"leaves {start}..{start + count - 1}"
    store = audit.rt.store
    try:
        current = store.read_current(key, limit=TILE_BYTES + 1)
        if current == expected:
            return None
        if current is not None and not audit.other_logs:
            return f"the current version, what a reader fetches, is not the hashes of {leaves}"
        versions = [v for v in store.list_versions(key) if v.key == key]
        held: list[bool | None] = []
        if audit.other_logs and current is not None:
            held = [_holds(audit, key, v.version_id, expected) for v in versions
                    if v.size == TILE_BYTES]  # fmt: skip
            if True in held:
                log.warning("%s: the current version is another log's; this log's is under it",
                            key)  # fmt: skip
                return None
        unreadable = held.count(None)
    except StoreUnavailable as e:
        audit.unavailable(None, key, None, e)
        return None
    except ObjectStoreError as e:
        return f"unreadable: {e}"
    if versions and current is None:
        return f"hidden by a delete marker ({len(versions)} version(s) of {leaves} under it)"
    if not versions:
        return f"not mirrored ({leaves}, a full tile of the latest checkpoint)"
    unread = f", {unreadable} of them unreadable" if unreadable else ""
    return f"none of its {len(versions)} version(s) holds the hashes of {leaves}{unread}"


def _holds(audit: Audit, key: str, version_id: str, expected: bytes) -> bool | None:
    """Whether that version of ``key`` is ``expected``; None if it cannot be read."""
    try:
        return audit.rt.store.read_bytes(key, version_id) == expected
    except StoreUnavailable:
        raise
    except ObjectStoreError as e:
        log.warning("%s@%s unreadable: %s", key, version_id, e)
        return None


def _leaves_of(tile: TileKey) -> tuple[int, int]:
    """(first leaf, leaves) under a full ``tile``."""
    level, idx = tile
    span = TILE_WIDTH << (level * TILE_HEIGHT)
    return idx * span, span
