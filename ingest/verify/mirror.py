"""The WORM mirror in object storage (checkpoints, leaf bundles), read for the pure walk in
``integrity.mirror``. An object that cannot be reached is an outage: it is listed under
``could_not_check`` and what the mirror then lacks proves nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from ingest.ledger import LogCorrupt
from ingest.verify.checkpoints import open_checkpoint
from ingest.verify.log import Audit
from integrity.errors import ProofError
from integrity.mirror import BundleVersion, MirrorWalk, SignedHead, rebuild
from integrity.note import Verifier
from storage import keys
from storage.errors import ObjectStoreError, StoreUnavailable
from storage.objects import ObjectStore, ObjectVersion
from storage.tables import Checkpoint as CheckpointRow

log = logging.getLogger(__name__)

Unavailable = Callable[[ObjectVersion, StoreUnavailable], None]


def _loader(
    store: ObjectStore,
    v: ObjectVersion,
    unavailable: Unavailable | None,
    skip: Callable[[ObjectVersion], bool] | None,
) -> BundleVersion:
    span = keys.parse_leaf_bundle_key(v.key)
    assert span is not None  # noqa: S101 - only bundle keys are passed

    def load() -> bytes | None:
        if unavailable is not None and skip is not None and skip(v):
            return None
        try:
            return store.read_bytes(v.key, v.version_id)
        except StoreUnavailable as e:
            if unavailable is None:
                raise
            unavailable(v, e)
            return None
        except ObjectStoreError as e:
            log.warning("leaf bundle %s@%s unreadable: %s", v.key, v.version_id, e)
            return None

    return BundleVersion(span[0], span[1], f"{v.key}@{v.version_id}", v.modified, load)


def bundles(
    store: ObjectStore,
    unavailable: Unavailable | None = None,
    skip: Callable[[ObjectVersion], bool] | None = None,
) -> list[BundleVersion]:
    """Every stored version of every leaf bundle (read when the walk needs it). With
    ``unavailable``, an unreachable bundle is reported there instead of raised, and ``skip``
    may pass over the rest without trying."""
    return [
        _loader(store, v, unavailable, skip)
        for v in store.list_versions(keys.LEAF_BUNDLES_PREFIX)
        if keys.parse_leaf_bundle_key(v.key) is not None
    ]


def walk_mirror(audit: Audit, signed: Sequence[SignedHead]) -> None:
    """Rebuild what the leaf bundles hold, as far as the signed checkpoints vouch for."""

    def unavailable(v: ObjectVersion, e: StoreUnavailable) -> None:
        audit.mirror_incomplete = True
        audit.unavailable(None, v.key, v.version_id, e)

    def skip(v: ObjectVersion) -> bool:
        if audit.skipped(None, v.key, v.version_id):
            audit.mirror_incomplete = True
            return True
        return False

    if audit.skipped(None, keys.LEAF_BUNDLES_PREFIX, None):
        audit.mirror_incomplete = True
        return
    try:
        found = bundles(audit.rt.store, unavailable, skip)
    except StoreUnavailable as e:
        audit.mirror_incomplete = True
        audit.unavailable(None, keys.LEAF_BUNDLES_PREFIX, None, e)
        return
    walk = MirrorWalk(found, {s.checkpoint.size: s for s in signed}).run()
    audit.walk, audit.mirror = walk, walk.tree
    covered = [s.checkpoint.size for s in signed if s.checkpoint.size <= audit.size]
    if covered and walk.tree.size < max(covered) and not audit.mirror_incomplete:
        audit.fail(
            None,
            "leaf_mirror",
            f"the leaf bundles rebuild {walk.tree.size} leaves but checkpoint "
            f"{max(covered)} was signed: no "
            f"{keys.LEAF_BUNDLES_PREFIX}{walk.tree.size}-<last>.jsonl "
            "gives a root that a checkpoint signed",
        )


def mirrored_note(audit: Audit, row: CheckpointRow) -> str | None:
    """The pinned copy of a checkpoint in object storage; a checkpoint_mirror failure unless
    it equals the row's note (and nothing when it cannot be reached)."""
    key = keys.checkpoint_key(row.size)
    if not row.object_version:
        audit.fail(None, "checkpoint_mirror", f"checkpoint {row.size} was never mirrored")
        return None
    if audit.skipped(None, key, row.object_version):
        return None
    try:
        note = audit.rt.store.read_bytes(key, row.object_version).decode()
    except StoreUnavailable as e:
        audit.unavailable(None, key, row.object_version, e)
        return None
    except (ObjectStoreError, UnicodeDecodeError) as e:
        audit.fail(None, "checkpoint_mirror", f"{key}@{row.object_version}: {e}")
        return None
    if note != row.note:
        audit.fail(
            None,
            "checkpoint_mirror",
            f"{key}@{row.object_version} differs from checkpoint {row.size} in the index",
        )
    return note


READERS = 8
"""Checkpoint copies read at once when looking for those with no row."""


def unrowed_checkpoints(audit: Audit, rows: Sequence[CheckpointRow]) -> list[SignedHead]:
    """Checkpoints of this log in the mirror that no index row names: a checkpoint row can be
    deleted, its WORM copy cannot. Each must agree with the leaf rows like any other, so a
    history rewritten after its rows were deleted is found (a copy left by a signing that
    lost its race agrees). Versions that the log key does not open, or of another origin,
    are another log's (a bucket may be shared) and are passed over."""
    if audit.skipped(None, keys.CHECKPOINTS_PREFIX, None):
        return []
    known = {(keys.checkpoint_key(r.size), r.object_version) for r in rows}
    try:
        versions = [
            v
            for v in audit.rt.store.list_versions(keys.CHECKPOINTS_PREFIX)
            if keys.parse_checkpoint_key(v.key) is not None and (v.key, v.version_id) not in known
        ]
    except StoreUnavailable as e:
        audit.unavailable(None, keys.CHECKPOINTS_PREFIX, None, e)
        return []

    def read(v: ObjectVersion) -> tuple[ObjectVersion, str | None]:
        if audit.skipped(None, v.key, v.version_id):
            return v, None
        try:
            return v, audit.rt.store.read_bytes(v.key, v.version_id).decode()
        except StoreUnavailable as e:
            audit.unavailable(None, v.key, v.version_id, e)
        except (ObjectStoreError, UnicodeDecodeError):
            pass  # not a note at all: proves nothing
        return v, None

    found: list[SignedHead] = []
    with ThreadPoolExecutor(READERS) as pool:
        for v, note in pool.map(read, versions):
            opened = open_checkpoint(audit, note) if note is not None else None
            if opened is None:
                continue
            if isinstance(opened, str) or opened.origin != audit.rt.settings.log.origin:
                audit.other_logs = True
                continue
            if opened.size != keys.parse_checkpoint_key(v.key):
                audit.fail(
                    None,
                    "checkpoint_mirror",
                    f"{v.key}@{v.version_id} holds a checkpoint of size {opened.size}",
                )
                continue
            found.append(SignedHead(opened, v.modified))
    return found


def pinned_note(audit: Audit, row: CheckpointRow) -> str | None:
    """The mirrored copy of a checkpoint, if it can be read (no failure either way)."""
    if not row.object_version:
        return None
    key = keys.checkpoint_key(row.size)
    if audit.skipped(None, key, row.object_version):
        return None
    try:
        return audit.rt.store.read_bytes(key, row.object_version).decode()
    except StoreUnavailable as e:
        audit.unavailable(None, key, row.object_version, e)
        return None
    except (ObjectStoreError, UnicodeDecodeError):
        return None


def rebuild_leaves_from_objects(
    store: ObjectStore, *, verifier_key: str | None = None, origin: str | None = None
) -> list[str]:
    """The log's leaf data, in order, from object storage alone (the index lost).

    Checkpoints come from ``log/checkpoints/`` and vouch for the leaf bundles. With
    ``verifier_key`` (the published log key) only checkpoints it signed count; without it
    they are taken unverified, and a bucket holding two different checkpoints of one size is
    refused as ambiguous. Raises LogCorrupt when the bundles do not reach the latest
    checkpoint; StoreUnavailable when the store cannot be read.
    """
    verifier = Verifier.from_key(verifier_key) if verifier_key else None
    notes: list[tuple[bytes, datetime | None]] = []
    for v in store.list_versions(keys.CHECKPOINTS_PREFIX):
        if keys.parse_checkpoint_key(v.key) is None:
            continue
        try:
            notes.append((store.read_bytes(v.key, v.version_id), v.modified))
        except StoreUnavailable:
            raise
        except ObjectStoreError:
            continue
    try:
        return rebuild(
            notes,
            bundles(store),
            verifier=verifier,
            origin=origin,
        )
    except ProofError as e:
        raise LogCorrupt(str(e)) from e
