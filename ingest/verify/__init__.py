"""``liuhen verify``: check what liuhen holds against its own tamper-evident log.

The log is the reference. What the index says about an item (the SHA-256 and size of its
bytes, its case links, its custody events, its derivatives) must be what the log says; the
log must be what its signed checkpoints say; and the copies mirrored into object storage under
Object Lock (checkpoints, leaf bundles) must agree with both. Nothing cached is trusted: every
run rebuilds the Merkle tree from the leaf rows, hashing their data again.

A run reports, it never stops at the first problem. Each ``Failure`` has a stable code, the
item it concerns (None for the log as a whole) and, for a leaf, its index. An object the
store cannot serve right now (``StoreUnavailable``: refused connection, timeout, 5xx) is no
evidence of anything: it is listed under ``could_not_check`` and never counted as a failure;
a store or database that is down altogether gives a report of that alone. Then the run is
itself logged: every item it checked in full gets a ``verify`` custody event with the result.

Layout: ``log`` (leaf rows), ``checkpoints`` (signatures, roots, consistency, the log's
end), ``mirror`` (the WORM copies), ``items`` (bytes, links, inclusion), ``report`` (results,
the custody record). Leaf data is read with
``integrity.leaves.parse_leaf``, the mirror walked by ``integrity.mirror``.

Codes (``Failure.what``):
    leaf_missing, leaf_hash      a leaf row is absent / its stored hash is not its data's
    leaf_order                   a leaf row holds the leaf logged at another index
    leaf_data                    a leaf row differs from the copy the checkpoints vouch for
    leaf_format                  a leaf row is not a leaf that ``integrity.leaves`` builds
    leaf_row                     a leaf row's kind / item_id columns are not what its data says
    log_size                     log_state, the leaf rows and the checkpoints disagree
    leaf_mirror                  the leaf bundles in object storage do not rebuild the log
    log_tree, log_tile           the stored tree (its root, a tile) differs from the leaf rows
    tile_mirror                  a full tile in object storage is missing or not the leaf rows
    checkpoint_signature         a checkpoint does not verify with the log key
    log_key                      the log key verifies none of the checkpoints (key replaced?)
    checkpoint_origin, checkpoint_root, checkpoint_consistency, checkpoint_mirror
    original_missing, original_hash, original_size     the stored bytes vs the item leaf
    index_vs_leaf                an item row differs from its item leaf
    case_links                   links not explained by the item leaf and link/unlink leaves
    custody_chain, custody_row   a broken ``prev`` chain / a custody row unlike its leaf
    derivative_missing, derivative_hash, derivative_size, derivative_vs_leaf
    leaf_inclusion               (one item) a leaf is not provably in the latest checkpoint
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import InterfaceError, OperationalError

from ingest.runtime import Runtime
from ingest.verify import checkpoints, items, mirror, tiles
from ingest.verify.log import Audit
from ingest.verify.mirror import rebuild_leaves_from_objects
from ingest.verify.report import CouldNotCheck, Failure, Report, make_report, record
from integrity.mirror import SignedHead
from storage import repository as repo
from storage import verify_queries as q
from storage.errors import IndexUnavailable, StoreUnavailable
from storage.tables import Checkpoint as CheckpointRow

__all__ = [
    "CouldNotCheck",
    "Failure",
    "Report",
    "outage_report",
    "rebuild_leaves_from_objects",
    "verify_all",
    "verify_item",
]

Progress = Callable[[int, int], None]
BATCH = 2000


def outage_report(error: BaseException) -> Report | None:
    """The report of a run that could not start or finish because the object store or the
    database is unavailable; None when ``error`` is not such an outage."""
    if isinstance(error, StoreUnavailable):
        service = "object store"
    elif isinstance(error, IndexUnavailable | OperationalError | InterfaceError):
        service = "database"
    else:
        return None
    reason = f"{service} unavailable: {error}".splitlines()[0][:500]
    return Report(
        ok=False,
        checked=0,
        failures=[],
        could_not_check=[CouldNotCheck(None, None, None, reason)],
    )


def _guarded(audit: Audit, run: Callable[[Audit], Report]) -> Report:
    """``run(audit)``; when a service goes away partway, what was found before is kept: a
    difference already found is still one (exit 1), with the outage listed beside it."""
    try:
        return run(audit)
    except (StoreUnavailable, IndexUnavailable, OperationalError, InterfaceError) as e:
        report = outage_report(e)
        assert report is not None  # noqa: S101 - every caught class is an outage
        if not audit.failures:
            return report
        return make_report(audit.failures, audit.unchecked + report.could_not_check, checked=0)


def verify_all(rt: Runtime, *, actor: str, progress: Progress | None = None) -> Report:
    """Check everything: every leaf, checkpoint and mirrored copy (those no index row names
    too), every item's bytes (by version ID), custody chain, case links and derivatives. Then
    log a ``verify`` custody event per item checked in full. ``progress(done, total)`` is
    called as items are re-hashed."""
    return _guarded(Audit(rt, focus=None), lambda a: _verify_all(a, actor=actor, progress=progress))


def _verify_all(audit: Audit, *, actor: str, progress: Progress | None) -> Report:
    rt = audit.rt
    with rt.sessions() as session:
        audit.size = repo.log_size(session)
        total = q.count_items_below(session, below=audit.size)
        rows = list(repo.checkpoints(session))
    signed = checkpoints.signed_checkpoints(
        audit, rows, lambda row: mirror.mirrored_note(audit, row)
    )
    unrowed = mirror.unrowed_checkpoints(audit, rows)
    signed = sorted(signed + unrowed, key=lambda s: s.checkpoint.size)
    mirror.walk_mirror(audit, signed)
    audit.read_log(lambda session, start, stop: q.pointers_between(session, start=start, stop=stop))
    audit.name_bad_leaves()
    checkpoints.check_checkpoints(audit, signed)
    tiles.check_tiles(audit)
    # The tiles of the latest stored checkpoint: a signing that died partway left copies
    # without a row, and perhaps without all their tiles (the next checkpoint puts them).
    tiles.check_mirrored_tiles(
        audit, max((r.size for r in rows if r.size <= audit.size), default=0)
    )
    done = 0
    checked: list[str] = []
    after = ""
    while True:
        with rt.sessions() as session:
            batch, links = q.items_after(session, after=after, below=audit.size, limit=BATCH)
            derivatives = q.derivatives_of_items(session, item_ids=[i.id for i in batch])
        if not batch:
            break
        for item in batch:
            complete = items.check_original(audit, item)
            complete &= items.check_derivatives(audit, item.id, derivatives[item.id])
            items.check_links(audit, item.id, links[item.id])
            if complete:
                checked.append(item.id)
            done += 1
            if progress is not None:
                progress(done, total)
        after = batch[-1].id
    appendable = checkpoints.check_end(audit, signed)
    report = audit.report(len(checked))
    record(rt, report, checked, actor=actor, scope="all", appendable=appendable)
    return report


def verify_item(rt: Runtime, item_id: str, *, actor: str) -> Report:
    """Check one item: its original and derivatives, custody chain, case links, and that its
    leaves are in the latest checkpoint. Then log a ``verify`` custody event for it (unless
    something of it could not be read).

    Raises storage NotFound for an unknown item.
    """
    return _guarded(Audit(rt, focus=item_id), lambda a: _verify_item(a, item_id, actor=actor))


def _verify_item(audit: Audit, item_id: str, *, actor: str) -> Report:
    rt = audit.rt
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        audit.size = repo.log_size(session)
        derivatives = list(repo.derivatives_of(session, item_id=item_id))
        rows = q.LeafPointers(
            items={item.log_index: item},
            custody={e.log_index: e for e in repo.custody_of(session, item_id=item_id)},
            derivatives={d.log_index: d for d in derivatives},
        )
        links = repo.case_ids_of(session, item_id=item_id)
        latest_row = repo.latest_checkpoint(session)
    audit.read_log(lambda _session, _start, _stop: rows)
    audit.name_bad_leaves()
    complete = items.check_original(audit, item)
    complete &= items.check_derivatives(audit, item_id, derivatives)
    items.check_links(audit, item_id, links)
    latest = _latest_signed(audit, latest_row, item_id)

    def walk() -> None:
        with rt.sessions() as session:
            cps = list(repo.checkpoints(session))
        signed = checkpoints.signed_checkpoints(
            audit, cps, lambda row: mirror.mirrored_note(audit, row)
        )
        mirror.walk_mirror(audit, signed)

    items.check_inclusion(audit, item_id, latest, walk)
    appendable = checkpoints.check_end(audit, [latest] if latest else [])
    complete = complete and not audit.unchecked
    report = audit.report(1 if complete else 0)
    record(
        rt, report, [item_id] if complete else [], actor=actor, scope="item", appendable=appendable
    )
    return report


def _latest_signed(audit: Audit, row: CheckpointRow | None, item_id: str) -> SignedHead | None:
    """The latest checkpoint, from the index or else its mirrored copy, if either verifies."""
    if row is None:
        return None
    opened = checkpoints.open_checkpoint(audit, row.note)
    if isinstance(opened, str):
        pinned = mirror.pinned_note(audit, row)
        if pinned is not None and not isinstance(
            copy := checkpoints.open_checkpoint(audit, pinned), str
        ):
            opened = copy
    if isinstance(opened, str):
        audit.fail(
            item_id,
            "checkpoint_signature",
            f"cannot prove inclusion: the latest checkpoint ({row.size}) does not verify: {opened}",
        )
        return None
    return SignedHead(opened, row.created_at)
