"""Seal: a local file plus its manifest becomes an item, or is refused with nothing visible.

Order (DESIGN.md, "The path of one upload"): get the bytes to their content address, hashed
on the way; refuse on a mismatch; put the version under COMPLIANCE retention (and the legal
hold its open cases call for); then, in one transaction (shared with the seals arriving at
the same moment, ``ingest.group_commit``), insert the item (the unique SHA-256 catches
duplicates), link its cases, append its item leaf and its ``sealed`` custody leaf, and queue
its pipeline job. Only after the commit is a receipt handed out.

No store call happens inside that transaction (it holds the log sequencer, and on SQLite the
one write lock): the Object Lock is set before it. A small file (at most ``SMALL_FILE``
bytes, one PUT) is read once into memory, hashed, refused before anything is stored if it is
not the manifest's, and put with its retention and legal hold on the PUT itself. A larger one
is streamed (unretained) while hashing, refused and deleted on a mismatch, and then retained
and held with separate calls. A version retained this way whose commit then fails, or that
loses the race to a concurrent seal of the same bytes, cannot be deleted: it stays, unseen
(no row points to it), until its retention ends.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ingest import custody, group_commit, metrics
from ingest.errors import EmptyFile, IngestError, IntegrityMismatch
from ingest.ledger import AppendedLeaf
from ingest.links import settle_case_units
from ingest.manifest import Manifest, check_case_id
from ingest.problems import ItemStatus, Problem, ProblemCode
from ingest.retention import (
    HoldPlan,
    category_retention,
    refuse_deleted,
    sync_item_hold,
    with_holds,
)
from ingest.runtime import Runtime
from ingest.sniff import sniff_file
from ingest.timeplace.clock import plausible
from integrity.hashing import sha256_file, sha256_stream
from integrity.leaves import canonical_json, custody_leaf, item_leaf
from integrity.merkle import leaf_hash
from storage import keys, people
from storage import repository as repo
from storage.errors import Conflict, ObjectStoreError
from storage.ids import new_id
from storage.objects import PART_SIZE, StoredObject, retain_until
from storage.tables import Case

log = logging.getLogger(__name__)

SMALL_FILE = PART_SIZE
"""Files up to this size go to the store in one PUT from memory (a PUT holds this much in
memory anyway), with their Object Lock on the PUT; larger ones are streamed."""
HOLD_RETRIES = 3
"""How often a seal re-applies the legal hold when a case's hold changed meanwhile."""


@dataclass(frozen=True)
class SealResult:
    item_id: str
    sha256: str
    size: int
    media_type: str
    status: str
    case_ids: list[str]
    log_index: int
    leaf: str
    """The exact item leaf data (canonical JSON) that ``log_index`` commits to."""
    duplicate: bool
    new_links: list[str] = field(default_factory=list)

    def document(self, *, receipt: str) -> dict[str, Any]:
        """What ``liuhen ingest --json`` and ``POST /v1/items`` say about one sealed item."""
        return {
            "id": self.item_id,
            "sha256": self.sha256,
            "size": self.size,
            "media_type": self.media_type,
            "status": self.status,
            "case_ids": self.case_ids,
            "duplicate": self.duplicate,
            "log_index": self.log_index,
            "leaf": self.leaf,
            "receipt": receipt,
        }


@dataclass(frozen=True)
class Vouched:
    """A device's signed manifest, kept with the item (``items.manifest["signed"]``); its
    signature is also in the item leaf (``manifest_signature``)."""

    manifest: str
    """The manifest's canonical JSON text, exactly the bytes signed."""
    signature: str
    """Base64 Ed25519 signature over ``manifest``."""
    public_key: str
    """Base64 raw Ed25519 public key of the device, the one the signature was checked with."""
    clock_offset_ms: int
    """Server time minus the device's clock when the upload began."""


def late_upload_problem(
    manifest: Manifest,
    *,
    received_at: datetime,
    limit: timedelta,
    clock_offset_ms: int | None = None,
) -> Problem | None:
    """``late_upload`` when the item arrives more than ``limit`` after its capture ended (the
    capture start when no end is known). The capture times are the device's clock: with its
    offset measured at upload (server − device), the end is put on the server's clock first,
    so a camera set a day behind is not late for it, nor one set ahead on time."""
    ended = _plausible(manifest.capture_end) or _plausible(manifest.capture_start)
    if ended is None:
        return None
    on_server_clock = False
    if clock_offset_ms:
        try:
            corrected = ended + timedelta(milliseconds=clock_offset_ms)
        except OverflowError:  # a device clock set to year 1 or 9999: its offset means nothing
            corrected = ended
        # An offset from a clock that was itself absurd is no correction: the device's word.
        if corrected != ended and plausible(corrected):
            ended, on_server_clock = corrected, True
    if received_at - ended <= limit:
        return None
    hours = (received_at - ended).total_seconds() / 3600
    where = " (on the server's clock)" if on_server_clock else ""
    return Problem(
        "intake",
        ProblemCode.LATE_UPLOAD,
        f"received {hours:.1f} h after the capture ended{where}; uploads are due within "
        f"{limit.total_seconds() / 3600:g} h",
    )


def _plausible(value: datetime | None) -> datetime | None:
    """The device's time when it could be one (``timeplace.plausible``): a clock reset to
    year 1 or 9999 is kept in the manifest, not taken for when or how late it was."""
    return value if value is not None and plausible(value) else None


@metrics.seal_observed
def seal_file(
    rt: Runtime,
    path: Path,
    manifest: Manifest,
    *,
    actor: str,
    now: datetime | None = None,
    unit: str | None = None,
    vouched: Vouched | None = None,
) -> SealResult:
    """Seal ``path`` as evidence. Raises IntakeRefused subclasses for what is not evidence.

    ``unit`` is the unit of whoever hands it in (an officer's, a device's): the item's unit,
    and the unit of any of its cases that has none yet. ``vouched``: the device's signed
    manifest (tus uploads), kept with the item."""
    now = now or datetime.now(UTC)
    for case_id in manifest.case_ids:
        check_case_id(case_id, rt.settings.case_id_pattern)
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("the file is empty: there is nothing to preserve")
    if manifest.size is not None and manifest.size != size:
        raise IntegrityMismatch(f"declared size {manifest.size} bytes, received {size} bytes")
    media_type = sniff_file(path)
    # A small file is read once and hashed in memory, so a mismatch is refused before anything
    # is stored and the bytes put are the bytes hashed; a larger one is streamed.
    data = path.read_bytes() if size <= SMALL_FILE else None
    if data is not None:
        if len(data) != size:
            raise IntegrityMismatch(f"size changed while reading: {size} → {len(data)}")
        actual, _ = sha256_stream(io.BytesIO(data))
        expected = manifest.sha256 or actual
        _check(expected, actual, size, len(data))
    else:
        expected = manifest.sha256 or sha256_file(path)[0]

    sealed_before, lock = _look(rt, expected, manifest, now=now)
    if sealed_before:
        # A retry or the same file by another path: confirm the bytes, then just link.
        if data is None:
            actual, _ = sha256_file(path) if manifest.sha256 else (expected, size)
            _check(expected, actual, size, size)
        return _link_existing(
            rt, expected, manifest, actor=actor, now=now, unit=unit, vouched=vouched
        )

    key = keys.original_key(expected)
    if data is not None:
        # Retention and legal hold travel on the PUT: one store call, no unretained version.
        stored = rt.store.put_bytes(
            key, data, content_type=media_type, retain_until=lock.until, legal_hold=lock.held
        )
        # A store that says it kept other bytes gets no item (its version is retained: it
        # stays, unseen).
        _check(expected, stored.sha256, size, stored.size)
    else:
        stored = rt.store.put_file(key, path, content_type=media_type)
        if stored.sha256 != expected or stored.size != size:
            _discard(rt, stored)
            _check(expected, stored.sha256, size, stored.size)
    return _commit_or_join(
        rt,
        stored,
        manifest,
        media_type=media_type,
        actor=actor,
        now=now,
        unit=unit,
        vouched=vouched,
        lock=lock,
        locked_on_put=data is not None,
    )


@dataclass(frozen=True)
class _Lock:
    """The Object Lock a new original gets before its item is committed."""

    until: datetime
    """End of its COMPLIANCE retention (its category's, from arrival)."""
    held: bool
    """Whether it is under legal hold: one of its cases is open (``retention``)."""


_HoldChanged = group_commit.HoldChanged


def _look(rt: Runtime, sha256: str, manifest: Manifest, *, now: datetime) -> tuple[bool, _Lock]:
    """Before anything is stored, in one read: whether these bytes are sealed already (a
    cheap look that saves re-sending a retry; the unique constraint decides), and the Object
    Lock a new original of them gets."""
    important = bool(getattr(manifest, "important", False))
    until = retain_until(category_retention(rt.settings, important=important), now=now)
    case_ids = sorted(set(manifest.case_ids))
    with rt.reads() as session:
        item = repo.find_item_by_sha256(session, sha256=sha256)
        if item is not None:
            refuse_deleted(item)  # before anything is stored
        held = bool(people.open_cases(session, case_ids=case_ids)) if case_ids else False
    return item is not None, _Lock(until, held)


@metrics.seal_observed
def seal_stored(
    rt: Runtime,
    stored: StoredObject,
    manifest: Manifest,
    *,
    media_type: str,
    actor: str,
    now: datetime | None = None,
    unit: str | None = None,
    vouched: Vouched | None = None,
) -> SealResult:
    """Seal bytes already written (unretained) under their content address: a tus upload that
    was streamed to the store as it arrived. Their hash, taken as they were sent, must be the
    manifest's; otherwise the version is deleted and the seal refused, as in ``seal_file``."""
    now = now or datetime.now(UTC)
    expected = manifest.sha256
    if expected is None or stored.key != keys.original_key(expected):
        _discard(rt, stored)
        raise IntegrityMismatch(f"{stored.key} is not the content address the manifest names")
    if stored.sha256 != expected or (manifest.size is not None and stored.size != manifest.size):
        _discard(rt, stored)
        _check(expected, stored.sha256, manifest.size or stored.size, stored.size)
    try:
        sealed_before, lock = _look(rt, expected, manifest, now=now)
    except BaseException:
        _discard(rt, stored)
        raise
    if sealed_before:
        _discard(rt, stored)
        return _link_existing(
            rt, expected, manifest, actor=actor, now=now, unit=unit, vouched=vouched
        )
    return _commit_or_join(
        rt,
        stored,
        manifest,
        media_type=media_type,
        actor=actor,
        now=now,
        unit=unit,
        vouched=vouched,
        lock=lock,
        locked_on_put=False,
    )


def _commit_or_join(
    rt: Runtime,
    stored: StoredObject,
    manifest: Manifest,
    *,
    media_type: str,
    actor: str,
    now: datetime,
    unit: str | None,
    vouched: Vouched | None,
    lock: _Lock,
    locked_on_put: bool,
) -> SealResult:
    """Lock the uploaded version (unless its PUT did), then commit it as a new item; when
    someone sealed the same bytes meanwhile (the unique SHA-256), theirs stands: drop ours
    (if it can still be dropped) and link to it. Nothing half-stored is visible."""
    try:
        if not locked_on_put:
            rt.store.retain(stored.key, stored.version_id, lock.until)
            if lock.held:
                rt.store.legal_hold(stored.key, stored.version_id, True)
        for attempt in range(HOLD_RETRIES + 1):
            try:
                return _commit_new(
                    rt,
                    stored,
                    manifest,
                    media_type=media_type,
                    actor=actor,
                    now=now,
                    unit=unit,
                    vouched=vouched,
                    lock=lock,
                )
            except _HoldChanged as e:
                # Rolled back; the store is called outside the transaction, then again.
                if attempt == HOLD_RETRIES:  # not Conflict: that means "the item exists"
                    raise IngestError(
                        f"the cases' legal hold kept changing while {stored.key} was sealed; "
                        "nothing was committed: send it again"
                    ) from None
                rt.store.legal_hold(stored.key, stored.version_id, e.held)
                lock = replace(lock, held=e.held)
        raise AssertionError("unreachable")  # pragma: no cover
    except Conflict:
        _discard(rt, stored)
        return _link_existing(
            rt, stored.sha256, manifest, actor=actor, now=now, unit=unit, vouched=vouched
        )
    except BaseException:
        _discard(rt, stored)
        raise


def _check(expected: str, actual: str, declared_size: int, actual_size: int) -> None:
    if expected != actual:
        raise IntegrityMismatch(
            f"SHA-256 mismatch: the manifest says {expected}, the received bytes hash to {actual}"
        )
    if declared_size != actual_size:
        raise IntegrityMismatch(f"size changed while reading: {declared_size} → {actual_size}")


def _discard(rt: Runtime, stored: StoredObject) -> None:
    """Remove a version no row points to. Refused if already retained: then it stays, unseen."""
    with contextlib.suppress(ObjectStoreError):
        rt.store.remove_version(stored.key, stored.version_id)


def _commit_new(
    rt: Runtime,
    stored: StoredObject,
    manifest: Manifest,
    *,
    media_type: str,
    actor: str,
    now: datetime,
    unit: str | None,
    vouched: Vouched | None = None,
    lock: _Lock,
) -> SealResult:
    until = lock.until
    case_ids = sorted(set(manifest.case_ids))
    offset_ms = (
        round((now - manifest.device_time).total_seconds() * 1000) if manifest.device_time else None
    )
    kept = manifest.model_dump(mode="json")
    if vouched is not None:
        offset_ms = vouched.clock_offset_ms
        kept["signed"] = {
            "manifest": vouched.manifest,
            "signature": vouched.signature,
            "public_key": vouched.public_key,
        }
    late = late_upload_problem(
        manifest,
        received_at=now,
        limit=timedelta(seconds=rt.settings.intake.late_upload_after_s),
        clock_offset_ms=offset_ms,
    )
    item_id = new_id()
    item_fields = item_leaf(
        sha256=stored.sha256,
        size=stored.size,
        media_type=media_type,
        device_id=manifest.device_id,
        officer_id=manifest.officer_id,
        case_ids=case_ids,
        received_at=now,
        original_name=manifest.file_name,
        manifest_signature=manifest.signature,
    )
    details = {"case_ids": case_ids, "version_id": stored.version_id}
    # A new item has no custody leaf yet: its first one chains to the item leaf.
    sealed_leaf = custody_leaf(
        item_id=item_id,
        item_sha256=stored.sha256,
        action="sealed",
        actor=actor,
        at=now,
        reason=None,
        prev=leaf_hash(canonical_json(item_fields)).hex(),
        details=details,
    )
    plan = group_commit.Plan(
        item_id=item_id,
        item_fields=item_fields,
        sealed_leaf=sealed_leaf,
        row={
            "id": item_id,
            "sha256": stored.sha256,
            "size": stored.size,
            "media_type": media_type,
            "original_name": manifest.file_name,
            "object_key": stored.key,
            "version_id": stored.version_id,
            "retain_until": until,
            "device_id": manifest.device_id,
            "officer_id": manifest.officer_id,
            "status": ItemStatus.SEALED,
            "problems": [late.as_dict()] if late else [],
            "received_at": now,
            # The device's word until the pipeline finds better (DESIGN.md order of trust).
            "captured_at": _plausible(manifest.capture_start),
            "captured_at_source": "manifest" if _plausible(manifest.capture_start) else None,
            "captured_end": _plausible(manifest.capture_end),
            "device_clock_offset_ms": offset_ms,
            "manifest": kept,
        },
        custody={
            "item_id": item_id,
            "action": "sealed",
            "actor": actor,
            "at": now,
            "reason": None,
            "details": details,
        },
        device_id=manifest.device_id,
        officer_id=manifest.officer_id,
        case_ids=case_ids,
        actor=actor,
        unit=unit,
        now=now,
        held=lock.held,
    )
    leaf = group_commit.committer(rt).commit(rt, plan, one=_commit_one, many=_commit_many)
    return SealResult(
        item_id=item_id,
        sha256=stored.sha256,
        size=stored.size,
        media_type=media_type,
        status=ItemStatus.SEALED,
        case_ids=case_ids,
        log_index=leaf.index,
        leaf=leaf.data,
        duplicate=False,
        new_links=case_ids,
    )


def _commit_many(rt: Runtime, plans: list[group_commit.Plan]) -> list[AppendedLeaf]:
    """Seals that arrived together, in one transaction (``ingest.group_commit``): their item
    leaves."""
    return [item for item, _ in group_commit.write_many(rt, plans)]


def _commit_one(rt: Runtime, plan: group_commit.Plan) -> AppendedLeaf:
    """One new item's sealing transaction (alone, or after its batch failed): its item leaf."""
    return _commit_many(rt, [plan])[0]


def _link_existing(
    rt: Runtime,
    sha256: str,
    manifest: Manifest,
    *,
    actor: str,
    now: datetime,
    unit: str | None = None,
    vouched: Vouched | None = None,
) -> SealResult:
    def work(session: Session, plan: HoldPlan) -> SealResult:
        # The cases before the sequencer, as ``links.link`` and a group commit take them.
        repo.insert_missing(session, Case, sorted(set(manifest.case_ids)), now=now)
        repo.reserve_log_indexes(session, 0)  # a purge cannot delete it between look and link
        item = repo.find_item_by_sha256(session, sha256=sha256)
        if item is None:  # pragma: no cover - the constraint said it exists
            raise Conflict(f"item {sha256} vanished")
        refuse_deleted(item)
        new_links = []
        for case_id in sorted(set(manifest.case_ids)):
            if repo.link_case(session, item_id=item.id, case_id=case_id, actor=actor, now=now):
                new_links.append(case_id)
                custody.record(
                    session,
                    rt.ledger,
                    item=item,
                    action="link",
                    actor=actor,
                    now=now,
                    details={"case_id": case_id},
                    reason="linked when the same bytes arrived again",
                )
        settle_case_units(session, item=item, case_ids=new_links, unit=unit)
        if new_links:
            sync_item_hold(
                session, item, plan, ledger=rt.ledger, actor=actor, now=now, log_it=False
            )
        custody.record(
            session,
            rt.ledger,
            item=item,
            action="received_again",
            actor=actor,
            now=now,
            details={
                "device_id": manifest.device_id,
                "officer_id": manifest.officer_id,
                "file_name": manifest.file_name,
                # The second device's word for the same bytes, checkable like the first's.
                **(
                    {"manifest": vouched.manifest, "manifest_signature": vouched.signature}
                    if vouched
                    else {}
                ),
            },
        )
        leaf = repo.get_leaf(session, index=item.log_index)
        case_ids = repo.case_ids_of(session, item_id=item.id)
        return SealResult(
            item_id=item.id,
            sha256=item.sha256,
            size=item.size,
            media_type=item.media_type,
            status=item.status,
            case_ids=case_ids,
            log_index=item.log_index,
            leaf=leaf.data,
            duplicate=True,
            new_links=new_links,
        )

    return with_holds(rt, work)
