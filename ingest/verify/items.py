"""One item's side of a run: its stored bytes by version ID, its case links, and (for one
item) that its leaves are provably under the latest checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from ingest.verify.log import Audit, Logged, follow_links
from integrity.errors import IntegrityError, LeafFormatError
from integrity.leaves import CustodyLeaf, parse_leaf
from integrity.merkle import MerkleTree, verify_inclusion
from integrity.mirror import SignedHead
from integrity.note import Checkpoint
from storage import verify_queries as q
from storage.errors import ObjectStoreError, StoreUnavailable
from storage.objects import ObjectStore
from storage.tables import Derivative, Item


class _Unreachable(Exception):
    """The store could not be reached for one object (not evidence of anything)."""


def _hash_object(store: ObjectStore, key: str, version_id: str) -> tuple[str, int] | str:
    """(SHA-256, size) of one stored version, streamed; or why it could not be read.
    Raises _Unreachable when the store is unavailable."""
    h = hashlib.sha256()
    size = 0
    try:
        for chunk in store.iter_bytes(key, version_id):
            h.update(chunk)
            size += len(chunk)
    except StoreUnavailable as e:
        raise _Unreachable(str(e)) from e
    except ObjectStoreError as e:
        return str(e)
    return h.hexdigest(), size


def check_original(audit: Audit, item: Item) -> bool:
    """False when the original could not be read (listed under could_not_check)."""
    logged = audit.logged.get(item.id)
    if logged is not None and logged.deleted:
        return True  # deleted at the end of its retention, and logged as such
    where = f"original {item.object_key}@{item.version_id}"
    if audit.skipped(item.id, item.object_key, item.version_id):
        return False
    try:
        got = _hash_object(audit.rt.store, item.object_key, item.version_id)
    except _Unreachable as e:
        audit.unavailable(item.id, item.object_key, item.version_id, e)
        return False
    if isinstance(got, str):
        audit.fail(item.id, "original_missing", f"{where}: {got}")
        return True
    digest, size = got
    # Against the log when its leaf could be read; index_vs_leaf covers index vs log.
    if logged is not None and logged.sha256 is not None:
        ref_sha, ref_size, ref = logged.sha256, logged.size, "its item leaf"
    else:
        ref_sha, ref_size, ref = item.sha256, item.size, "the index"
    if digest != ref_sha:
        audit.fail(item.id, "original_hash", f"{where} hashes to {digest}; {ref} says {ref_sha}")
    if size != ref_size:
        audit.fail(item.id, "original_size", f"{where} has {size} bytes; {ref} says {ref_size}")
    return True


def check_derivatives(audit: Audit, item_id: str, rows: Iterable[Derivative]) -> bool:
    """False when some derivative could not be read (listed under could_not_check)."""
    logged = audit.logged.get(item_id) or Logged()
    if logged.deleted:
        return True
    complete = True
    for d in rows:
        if d.log_index >= audit.size:
            continue  # made after this run read the log size
        where = f"derivative {d.role} {d.object_key}@{d.version_id}"
        if d.log_index not in logged.derivatives:
            # A row with no leaf of this item behind it: its bytes would be checked against
            # nothing but the row itself.
            audit.fail(
                item_id,
                "derivative_vs_leaf",
                f"{where}: leaf {d.log_index} is no derivative leaf of this item",
                d.log_index,
            )
            continue
        _, ref_sha, ref_size = logged.derivatives[d.log_index]
        if audit.skipped(item_id, d.object_key, d.version_id):
            complete = False
            continue
        try:
            got = _hash_object(audit.rt.store, d.object_key, d.version_id)
        except _Unreachable as e:
            audit.unavailable(item_id, d.object_key, d.version_id, e)
            complete = False
            continue
        if isinstance(got, str):
            audit.fail(item_id, "derivative_missing", f"{where}: {got}", d.log_index)
            continue
        digest, size = got
        if digest != ref_sha:
            audit.fail(
                item_id,
                "derivative_hash",
                f"{where} hashes to {digest}; its leaf {d.log_index} says {ref_sha}",
                d.log_index,
            )
        if size != ref_size:
            audit.fail(
                item_id,
                "derivative_size",
                f"{where} has {size} bytes; its leaf {d.log_index} says {ref_size}",
                d.log_index,
            )
    return complete


def check_links(audit: Audit, item_id: str, links: Iterable[str]) -> None:
    """The index's links must be the seal's cases plus link and minus unlink leaves."""
    logged = audit.logged.get(item_id) or Logged()
    if set(links) == logged.cases:
        return
    # A link (row and leaf in one transaction) may have come after the log was read:
    # look again at both in one snapshot, with the leaves appended since.
    with q.snapshot(audit.rt.engine) as conn:
        now_linked, later = q.links_and_later_leaves(conn, item_id=item_id, from_index=audit.size)
    explained = set(logged.cases)
    for data in later:
        try:
            leaf = parse_leaf(data)
        except LeafFormatError:
            continue
        if isinstance(leaf, CustodyLeaf):
            follow_links(explained, leaf)
    if now_linked != explained:
        audit.fail(
            item_id,
            "case_links",
            f"linked to {sorted(now_linked)}; the log explains {sorted(explained)} "
            f"(unexplained: {sorted(now_linked - explained)}, "
            f"missing: {sorted(explained - now_linked)})",
        )


def check_inclusion(
    audit: Audit, item_id: str, latest: SignedHead | None, walk_mirror: Callable[[], None]
) -> None:
    """Each of the item's leaves below the latest checkpoint is provably under its root.

    A proof is a proof wherever its hashes come from: if the rows give none (another
    item's leaf row was tampered with), the mirrored bundles may (``walk_mirror`` reads them).
    """
    if latest is None:
        return
    cp = latest.checkpoint
    leaves = sorted(set((audit.logged.get(item_id) or Logged()).leaves))
    for idx in (i for i in leaves if i < min(cp.size, audit.size)):
        found = audit.tree.leaf(idx)
        if cp.size <= audit.tree.size and _proves(audit.tree, idx, found, cp):
            continue
        if audit.mirror is None and not audit.mirror_incomplete:
            walk_mirror()
        if audit.mirror is not None and _proves(audit.mirror, idx, found, cp):
            continue
        if audit.mirror_incomplete:
            continue  # the copy that might prove it could not be read: unchecked, not failed
        audit.fail(
            item_id,
            "leaf_inclusion",
            f"leaf {idx} of item {item_id} is not in checkpoint {cp.size}",
            idx,
        )


def _proves(tree: MerkleTree, idx: int, found: bytes, cp: Checkpoint) -> bool:
    if tree.size < cp.size:
        return False
    try:
        verify_inclusion(
            leaf_hash=found,
            index=idx,
            size=cp.size,
            proof=tree.inclusion_proof(idx, cp.size),
            root=cp.root_hash,
        )
    except IntegrityError:
        return False
    return True
