"""Group commit: new items sealed at the same moment share one sealing transaction.

The sealing transaction holds the log sequencer (on SQLite the one write lock) from its first
append to its commit, so every seal of the deployment waits for it, and on PostgreSQL each of
its statements is a round trip during which the row stays locked. While one runs, the seals
arriving in that process queue here; the next transaction takes all of them: one sequencer
update, one insert per table, one commit. The first seal to find no transaction running leads
(it runs the batch for everyone in it), so a lone seal commits at once, as before.

A batch is all or nothing, and it is only a shortcut: when it fails (two seals of the same
new bytes, a case's hold changed since the versions were locked, a database error), it rolls
back and each seal of it is committed on its own by ``commit_one``, which gives each its own
answer (``Conflict``, a changed hold, its error) exactly as without batching. Only an index
that is unavailable (busy past its timeout, unreachable) is every seal's answer at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ingest import metrics
from ingest.ledger import Ledger
from ingest.runtime import Runtime
from storage import new_item, people
from storage import repository as repo
from storage.db import transaction
from storage.errors import IndexUnavailable
from storage.tables import Case, Device, Person

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Seals one transaction takes at most (the rest wait for the next)."""


@dataclass
class Plan:
    """One new item's rows, built before any transaction; ``log_index`` comes from it."""

    item_id: str
    item_fields: dict[str, Any]
    """The item leaf."""
    sealed_leaf: dict[str, Any]
    """The ``sealed`` custody leaf (it chains to the item leaf)."""
    row: dict[str, Any]
    """The item row, but for ``log_index``."""
    custody: dict[str, Any]
    """The ``sealed`` custody row, but for ``log_index`` and ``leaf_hash``."""
    device_id: str | None
    officer_id: str | None
    case_ids: list[str]
    actor: str
    unit: str | None
    now: datetime
    held: bool
    """The legal hold its version got before the transaction; re-read under the sequencer."""
    result: Any = None
    error: BaseException | None = None
    done: bool = False

    def settle(self, run: Callable[[], Any]) -> None:
        try:
            self.result = run()
        except BaseException as e:  # handed to the seal's own thread, raised there
            self.error = e
        finally:
            self.done = True

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class HoldChanged(Exception):
    """A case's hold changed between the lock and the commit: re-apply the hold, retry."""

    def __init__(self, held: bool) -> None:
        super().__init__(f"the legal hold is now {'on' if held else 'off'}")
        self.held = held


class Committer:
    """One per log (``committer``): the seals of its threads queue here while a transaction
    runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[Plan] = []
        self._busy = False

    def commit(
        self,
        rt: Runtime,
        plan: Plan,
        *,
        one: Callable[[Runtime, Plan], Any],
        many: Callable[[Runtime, list[Plan]], list[Any]],
    ) -> Any:
        """``plan``'s result, from a batch (``many``) or, alone or after a failed batch,
        from ``one``; its error is raised here, in the seal's own thread."""
        with self._cond:
            self._pending.append(plan)
        while True:
            with self._cond:
                while not plan.done and self._busy:
                    self._cond.wait()
                if plan.done:
                    return plan.outcome()
                self._busy = True  # lead: commit what is waiting (ours too, unless 64 are ahead)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                _run(rt, batch, one=one, many=many)
            except BaseException as e:  # an interrupt: no seal of the batch may wait forever
                for p in batch:
                    if not p.done:
                        p.error, p.done = e, True
                raise
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _run(
    rt: Runtime,
    batch: list[Plan],
    *,
    one: Callable[[Runtime, Plan], Any],
    many: Callable[[Runtime, list[Plan]], list[Any]],
) -> None:
    if len(batch) > 1:
        try:
            results = many(rt, batch)
        except IndexUnavailable as e:
            # The index said "not now" (busy past its timeout, unreachable): one by one, each
            # would wait as long again, the last seal of 64 for an hour. Each gets the answer
            # its seal would have had alone (503, try again).
            for plan in batch:
                plan.error, plan.done = e, True
            return
        except Exception as e:  # rolled back: each on its own, for its own answer
            log.debug("a batch of %d seals rolled back (%s): committing each alone", len(batch), e)
        else:
            for plan, result in zip(batch, results, strict=True):
                plan.result, plan.done = result, True
            return
    for plan in batch:
        plan.settle(functools.partial(one, rt, plan))


_committers: weakref.WeakKeyDictionary[Ledger, Committer] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


def committer(rt: Runtime) -> Committer:
    """The committer of ``rt``'s log: the seals appending to one ledger queue together."""
    with _committers_lock:
        found = _committers.get(rt.ledger)
        if found is None:
            found = _committers[rt.ledger] = Committer()
        return found


def write_many(rt: Runtime, plans: list[Plan]) -> list[list[Any]]:
    """The sealing transaction for several new items at once; each plan's two appended leaves
    (item, custody), in order. Raises (and rolls back) on anything a single seal would.

    The sequencer row stays locked from its reservation to the commit, and on PostgreSQL each
    statement in between is a round trip (several ms in a busy process, waiting for the GIL
    too) that every seal of the deployment waits out. So what needs no log index goes first:
    the parties, the items (with a placeholder index), their links, units and jobs, one
    statement each. Under the sequencer only the leaves, the items' real indexes, the custody
    rows, the case units and the hold check, as other writers of cases and holds take them.
    """
    with metrics.timed("seal_transaction"), transaction(rt.sessions) as session:
        _parties(session, plans)
        # In SHA-256 order: two processes' batches holding the same new bytes the other way
        # round would each wait on the other's uncommitted unique entry (a deadlock).
        new_item.insert_items(
            session,
            sorted(
                ({**p.row, "log_index": new_item.provisional_log_index()} for p in plans),
                key=lambda row: str(row["sha256"]),
            ),
        )
        new_item.link_many(session, [(p.item_id, p.case_ids, p.actor, p.now) for p in plans])
        new_item.stamp_units(session, [(p.item_id, p.unit) for p in plans if p.unit])
        rt.queue.defer_new(session, [p.item_id for p in plans])
        # The sequencer: one update for every leaf of the batch.
        entries = []
        for p in plans:
            entries += [("item", p.item_id, p.item_fields), ("custody", p.item_id, p.sealed_leaf)]
        appended = rt.ledger.append_many(session, entries, now=max(p.now for p in plans))
        pairs = [appended[i : i + 2] for i in range(0, len(appended), 2)]
        new_item.set_log_indexes(
            session, [(p.item_id, leaf.index) for p, (leaf, _) in zip(plans, pairs, strict=True)]
        )
        # Under the sequencer, as ``links.link`` claims a case's unit.
        new_item.settle_many_case_units(session, [(p.item_id, p.case_ids) for p in plans])
        repo.add_custody_rows(
            session,
            rows=[
                {**p.custody, "log_index": custody.index, "leaf_hash": custody.leaf_hash}
                for p, (_, custody) in zip(plans, pairs, strict=True)
            ],
        )
        # Under the sequencer, as ``retention.sync_item_hold`` reads it.
        held = people.held_items(session, item_ids=[p.item_id for p in plans])
        for p in plans:
            if (p.item_id in held) != p.held:
                raise HoldChanged(p.item_id in held)
        new_item.hold(session, [(p.item_id, p.now) for p in plans if p.held])
    return pairs


def _parties(session: Session, plans: list[Plan]) -> None:
    now = max(p.now for p in plans)
    devices = sorted({p.device_id for p in plans if p.device_id})
    officers = sorted({p.officer_id for p in plans if p.officer_id})
    cases = sorted({c for p in plans for c in p.case_ids})
    for model, ids in ((Device, devices), (Person, officers), (Case, cases)):
        repo.insert_missing(session, model, ids, now=now)
