"""Storing what the pipeline made for an item: upload each derivative under its Object Lock,
then index and log all of them in one transaction that makes no store call.

That transaction holds the log sequencer (and on SQLite the one write lock) from its first
append to its commit, so every seal in the deployment waits for it: the retention and the
legal hold travel on the PUT, before it, as at intake (``ingest.intake``), and one sequencer
update covers all of an item's new leaves instead of one transaction per derivative.

The legal hold is read before the uploads and again under the sequencer, where a hold or a
release (``retention.sync_item_hold``, which takes the sequencer first) cannot change it: if
it changed meanwhile, the transaction rolls back, the store is told outside it, and the commit
is tried again. A version locked this way whose commit then loses (another run stored the
role first) cannot be deleted; it stays, unseen (no row points to it), until its retention
ends: the price of never holding the sequencer over a store call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest import media
from ingest.errors import IngestError
from ingest.problems import Problem
from ingest.runtime import Runtime
from integrity.leaves import derivative_leaf
from storage import keys, people
from storage import repository as repo
from storage.db import transaction
from storage.errors import Conflict, ObjectStoreError, StoreUnavailable
from storage.objects import StoredObject, retain_until

HOLD_RETRIES = 3
"""How often the commit is tried again when the item's legal hold changed meanwhile."""


@dataclass(frozen=True)
class Uploaded:
    derived: media.Derived
    stored: StoredObject


class _HoldChanged(Exception):
    def __init__(self, held: bool) -> None:
        super().__init__(f"the legal hold is now {'on' if held else 'off'}")
        self.held = held


def store_new(
    rt: Runtime,
    *,
    item_id: str,
    parent_sha256: str,
    have: set[str],
    derived: list[media.Derived],
    now: datetime | None = None,
) -> list[Problem]:
    """Store the derivatives whose role is not in ``have`` (the roles the item has), add the
    roles stored to ``have`` and return the problems met (a store that refused one).

    An unreachable store raises (the job is retried), after what was uploaded before it
    went away is committed: the retry does not upload it again."""
    now = now or datetime.now(UTC)
    until = retain_until(rt.settings.retention, now=now)
    with rt.reads() as session:
        held = people.item_hold_state(session, item_id=item_id)
    problems: list[Problem] = []
    uploaded: list[Uploaded] = []
    try:
        for d in derived:
            if d.role in have:
                continue  # stored by an earlier run: idempotent
            key = keys.derivative_key(item_id, d.role, d.ext)
            try:
                stored = rt.store.put_file(
                    key, d.path, content_type=d.media_type, retain_until=until, legal_hold=held
                )
            except StoreUnavailable:
                raise
            except ObjectStoreError as e:
                problems.append(Problem.from_error("store", e, f"could not store {d.role}: {e}"))
                continue
            uploaded.append(Uploaded(d, stored))
    except StoreUnavailable:
        with contextlib.suppress(StoreUnavailable):
            _index(rt, item_id, parent_sha256, uploaded, held=held, have=have, now=now)
        raise
    _index(rt, item_id, parent_sha256, uploaded, held=held, have=have, now=now)
    return problems


def _index(
    rt: Runtime,
    item_id: str,
    parent_sha256: str,
    uploaded: list[Uploaded],
    *,
    held: bool,
    have: set[str],
    now: datetime,
) -> None:
    """Commit ``uploaded`` in one transaction; a role another run committed first is theirs
    (ours is dropped if it can be), a hold that changed is applied and the commit tried again."""
    pending = list(uploaded)
    changes = 0
    while pending:
        try:
            _commit(rt, item_id, parent_sha256, pending, held=held, now=now)
        except _HoldChanged as e:
            changes += 1
            if changes > HOLD_RETRIES:
                raise IngestError(
                    f"the legal hold of item {item_id} kept changing while its derivatives were "
                    "stored; nothing was committed (the job is tried again)"
                ) from None
            for up in pending:  # outside the transaction: nothing holds the sequencer
                rt.store.legal_hold(up.stored.key, up.stored.version_id, e.held)
            held = e.held
            continue
        except Conflict:
            with rt.reads() as session:
                stored_first = {d.role for d in repo.derivatives_of(session, item_id=item_id)}
            lost = [up for up in pending if up.derived.role in stored_first]
            if not lost:
                raise  # not a role stored meanwhile: do not guess
            for up in lost:
                _discard(rt, up.stored)
            have.update(stored_first)
            pending = [up for up in pending if up.derived.role not in stored_first]
            continue
        have.update(up.derived.role for up in pending)
        return


def _commit(
    rt: Runtime,
    item_id: str,
    parent_sha256: str,
    pending: list[Uploaded],
    *,
    held: bool,
    now: datetime,
) -> None:
    recipes = [up.derived.recipe.as_dict() for up in pending]
    leaves = [
        (
            "derivative",
            item_id,
            derivative_leaf(
                item_id=item_id,
                sha256=up.stored.sha256,
                size=up.stored.size,
                parent_sha256=parent_sha256,
                role=up.derived.role,
                recipe=recipe,
            ),
        )
        for up, recipe in zip(pending, recipes, strict=True)
    ]
    with transaction(rt.sessions) as session:
        appended = rt.ledger.append_many(session, leaves, now=now)
        repo.insert_derivatives(
            session,
            rows=[
                {
                    "item_id": item_id,
                    "role": up.derived.role,
                    "object_key": up.stored.key,
                    "version_id": up.stored.version_id,
                    "sha256": up.stored.sha256,
                    "size": up.stored.size,
                    "media_type": up.derived.media_type,
                    "recipe": recipe,
                    "created_at": now,
                    "log_index": leaf.index,
                }
                for up, recipe, leaf in zip(pending, recipes, appended, strict=True)
            ],
        )
        # Under the sequencer, which a hold or release takes before it reads our rows.
        now_held = people.item_hold_state(session, item_id=item_id)
        if now_held != held:
            raise _HoldChanged(now_held)


def _discard(rt: Runtime, stored: StoredObject) -> None:
    """Remove an upload no row points to (refused once retained: then it stays, unseen)."""
    with contextlib.suppress(ObjectStoreError):
        rt.store.remove_version(stored.key, stored.version_id)
