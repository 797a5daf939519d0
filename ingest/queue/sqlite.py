"""The embedded queue: a small in-process runner on the ``jobs`` table (SQLite).

One row per item: ``queued`` → ``running`` (claimed: ``locked_by`` names the worker thread,
``attempts`` counts the runs since the last success) → ``done`` | ``failed``. A job asked for
again while it runs (``link_track`` after the item's run started) becomes ``again``: still
held by its worker, so no other worker runs the item beside it, and queued afresh (due at
once, no attempt counted) when that run ends, however it ends. A claim is kept
alive by a heartbeat: every ``queue.heartbeat_s`` a thread of each process pushes
``locked_until`` of its running jobs to the database's ``now + queue.stalled_s``. A job whose
heartbeat stopped (its process hung or was killed) is claimable again once that time passed;
one whose process is gone from this host is put back at the next heartbeat (the PID says so).
Retries wait with jittered back-off; every time is the database's clock (``strftime('now')``).

A run's end is written in the transaction that claims the worker's next job (one commit per
job). A worker settles only a job it still holds (not one put back after its heartbeat
stopped).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    ScalarSelect,
    bindparam,
    case,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings
from ingest.queue import Handler, JobInfo, JobRun, JobState, Outcome, RetryLater
from storage.db import make_engine, writer_turn
from storage.processes import pid_alive
from storage.tables import Job

log = logging.getLogger(__name__)
JOBS = Job.metadata.tables[Job.__tablename__]


def db_now(conn: Connection | Session) -> datetime:
    """The database's clock (SQLite: this machine's, read by SQLite)."""
    stamp = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)


# The runner's statements, built once: a job's claim and its end are the runner's whole cost
# per job (bench/scale.py), each one indexed UPDATE.
CLAIMED = ("running", "again")
"""The states of a job a worker holds (``again``: asked for once more meanwhile)."""
_IS_CLAIMED = JOBS.c.state.in_(CLAIMED)
_HELD = (JOBS.c.item_id == bindparam("id")) & (JOBS.c.locked_by == bindparam("name"))
_HELD_RUNNING = _HELD & (JOBS.c.state == "running")


def _first_due(*where: ColumnElement[bool]) -> ScalarSelect[Any]:
    """The ID of the job due first among those ``where`` picks (one row, by ``due_at``)."""
    return select(JOBS.c.item_id).where(*where).order_by(JOBS.c.due_at).limit(1).scalar_subquery()


# a job whose heartbeat stopped (at most as many run as there are workers), else the oldest
# queued one due (an index range on (state, due_at), not a sort)
_STALE = _first_due(_IS_CLAIMED, JOBS.c.locked_until < bindparam("now"))
_OLDEST_DUE = _first_due(JOBS.c.state == "queued", JOBS.c.due_at <= bindparam("now"))
_CLAIM = (
    update(JOBS)
    .where(JOBS.c.item_id == func.coalesce(_STALE, _OLDEST_DUE))
    .values(
        state="running",
        locked_by=bindparam("name"),
        locked_until=bindparam("until"),
        attempts=JOBS.c.attempts + 1,
        updated_at=bindparam("now"),
    )
    .returning(JOBS.c.item_id, JOBS.c.attempts)
)
_DEFER = (  # a new job, or the item's job due again now (a running one: once it ends)
    sqlite_insert(JOBS)
    .values(
        item_id=bindparam("id"),
        state="queued",
        attempts=0,
        due_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .on_conflict_do_update(
        index_elements=[JOBS.c.item_id],
        set_={
            "state": case((_IS_CLAIMED, "again"), else_="queued"),
            "due_at": bindparam("now"),
            "updated_at": bindparam("now"),
            "locked_by": case((_IS_CLAIMED, JOBS.c.locked_by), else_=None),
        },
        where=(JOBS.c.state != "queued") | (JOBS.c.due_at > bindparam("now")),
    )
)
_AGAIN = (  # the run of a job asked for again meanwhile ended: the new request is due now
    update(JOBS)
    .where(_HELD, JOBS.c.state == "again")
    .values(
        state="queued",
        locked_by=None,
        locked_until=None,
        due_at=bindparam("now"),
        updated_at=bindparam("now"),
        attempts=0,
    )
)
_DONE = (
    update(JOBS)
    .where(_HELD_RUNNING)
    .values(
        state="done",
        locked_by=None,
        locked_until=None,
        updated_at=bindparam("now"),
        attempts=0,
        last_error=None,
    )
)
_DONE_WHILE_PUT_BACK = (  # put back as stalled while it ran, and this run succeeded
    update(JOBS)
    .where(JOBS.c.item_id == bindparam("id"), JOBS.c.state == "queued")
    .values(attempts=0)
)
_FAILED = (
    update(JOBS)
    .where(_HELD_RUNNING)
    .values(state="failed", locked_by=None, locked_until=None, updated_at=bindparam("now"))
)
_RETRY = (
    update(JOBS)
    .where(_HELD_RUNNING)
    .values(
        state="queued",
        locked_by=None,
        locked_until=None,
        due_at=bindparam("due"),
        updated_at=bindparam("now"),
        last_error=bindparam("error"),
        attempts=JOBS.c.attempts - bindparam("uncounted"),
    )
)


@dataclass(frozen=True)
class _Settled:
    """How a run ended: an outcome, or a retry after ``delay_s``."""

    item_id: str
    name: str
    outcome: Outcome | None = None
    delay_s: float = 0.0
    error: str | None = None
    counts: bool = True


class SqliteQueue:
    def __init__(
        self, *, settings: Settings, sessions: sessionmaker[Session], handler: Handler
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.handler = handler
        # Claims and ends of runs need no fsync each: a power cut undoes at most the last few,
        # and a job run again changes nothing (the pipeline is idempotent). Jobs are queued
        # durably, in the caller's transaction.
        shared: Engine = sessions.kw["bind"]
        in_memory = shared.url.database in (None, "", ":memory:")  # no second engine sees it
        self._engine = (
            shared
            if in_memory
            else make_engine(shared.url.render_as_string(hide_password=False), durable=False)
        )
        self._host = socket.gethostname()
        self._prefix = f"{self._host}:{os.getpid()}:"
        self._beat_lock = threading.Lock()
        self._beating: threading.Thread | None = None
        self._closed = threading.Event()

    # --- deferring -------------------------------------------------------------------------

    def defer(self, session: Session, item_id: str, *, new: bool = False) -> None:  # noqa: ARG002 - one upsert serves both
        # A running job stays with its worker, and is queued again when that run ends.
        session.execute(_DEFER, {"id": item_id, "now": db_now(session)})

    def defer_new(self, session: Session, item_ids: Sequence[str]) -> None:
        # One upsert each (its IN list cannot be an executemany): in-process, no round trips.
        now = db_now(session) if item_ids else None
        for item_id in item_ids:
            session.execute(_DEFER, {"id": item_id, "now": now})

    # --- claiming and settling -------------------------------------------------------------

    def _take(self, conn: Connection, name: str, now: datetime) -> tuple[str, int] | None:
        until = now + timedelta(seconds=self.settings.queue.stalled_s)
        row = conn.execute(_CLAIM, {"now": now, "name": name, "until": until}).one_or_none()
        return None if row is None else (str(row[0]), int(row[1]) - 1)

    def _settle(self, conn: Connection, done: _Settled, now: datetime) -> None:
        """Write what a run ended with, if its worker still holds the job."""
        held = {"id": done.item_id, "name": done.name, "now": now}
        if conn.execute(_AGAIN, held).rowcount:
            return
        if done.outcome is Outcome.DONE:
            if conn.execute(_DONE, held).rowcount == 0:
                conn.execute(_DONE_WHILE_PUT_BACK, held)
        elif done.outcome is Outcome.FAILED:
            conn.execute(_FAILED, held)
        else:
            due = now + timedelta(seconds=done.delay_s)
            uncounted = 0 if done.counts else 1
            conn.execute(_RETRY, held | {"due": due, "error": done.error, "uncounted": uncounted})

    def step(
        self, name: str, settled: _Settled | None, stopping: threading.Event | None = None
    ) -> tuple[bool, _Settled | None]:
        """Settle the last run and claim the next in one transaction (one commit per job),
        then run it. Returns whether a job ran and what it ended with (to settle next)."""
        self._heartbeat()
        with writer_turn(self._engine), self._engine.begin() as conn:
            now = db_now(conn)
            if settled is not None:
                self._settle(conn, settled, now)
            claimed = (
                None if stopping is not None and stopping.is_set() else self._take(conn, name, now)
            )
        if claimed is None:
            return False, None
        item_id, attempts = claimed
        stop = stopping or threading.Event()
        run = JobRun(item_id=item_id, attempts=attempts, stopping=stop.is_set)
        try:
            return True, _Settled(item_id, name, outcome=self.handler(run))
        except RetryLater as e:
            return True, _Settled(item_id, name, delay_s=e.delay_s, error=e.error, counts=e.counts)
        except Exception as e:  # the handler could not even record the failure: try later
            log.exception("job for item %s could not be settled", item_id)
            error = f"{type(e).__name__}: {e}"
            return True, _Settled(
                item_id, name, delay_s=self.settings.queue.retry_cap_s, error=error
            )

    def flush(self, settled: _Settled | None) -> None:
        if settled is not None:
            with writer_turn(self._engine), self._engine.begin() as conn:
                self._settle(conn, settled, db_now(conn))

    # --- heartbeats and the dead ------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Start this process's heartbeat thread if it is not beating yet."""
        with self._beat_lock:
            if self._beating is None or not self._beating.is_alive():
                self._closed.clear()
                self._beating = threading.Thread(
                    target=self._beat, name="liuhen-heartbeat", daemon=True
                )
                self._beating.start()

    def _beat(self) -> None:
        """Every ``queue.heartbeat_s``: keep this process's claims alive, and put back the
        jobs of this host's processes that are gone."""
        interval = self.settings.queue.heartbeat_s
        while not self._closed.wait(interval):
            try:
                with writer_turn(self._engine), self._engine.begin() as conn:
                    until = db_now(conn) + timedelta(seconds=self.settings.queue.stalled_s)
                    conn.execute(
                        update(JOBS)
                        .where(
                            _IS_CLAIMED,
                            JOBS.c.locked_by.startswith(self._prefix, autoescape=True),
                        )
                        .values(locked_until=until)
                    )
                self._requeue_orphans()
            except Exception:  # the index busy or restarting: beat again next time
                log.exception("heartbeat failed")

    def recover_orphans(self) -> int:
        """Put back at once jobs held by processes of this host that are gone (a kill -9),
        and remove their scratch folders."""
        from ingest.queue.task import remove_stale_scratch

        remove_stale_scratch(self.settings)
        return self._requeue_orphans()

    def _requeue_orphans(self) -> int:
        # Read and put back in one write transaction: a job put back by another process and
        # claimed again meanwhile must not be taken from its new, live holder.
        with writer_turn(self._engine), self._engine.begin() as conn:
            holders = conn.execute(
                select(JOBS.c.item_id, JOBS.c.locked_by).where(_IS_CLAIMED)
            ).all()
            dead = [item_id for item_id, by in holders if self._gone(by)]
            if not dead:
                return 0
            now = db_now(conn)
            count = conn.execute(
                update(JOBS)
                .where(JOBS.c.item_id.in_(dead), _IS_CLAIMED)
                .values(state="queued", locked_by=None, locked_until=None, due_at=now)
            ).rowcount
        if count:
            log.warning("requeued %d job(s) left by a crashed worker", count)
        return int(count)

    def _gone(self, locked_by: str | None) -> bool:
        """Whether a claim's process (``host:pid:thread``) is one of this host's, and dead."""
        owner = (locked_by or "").split(":")
        return (
            len(owner) == 3
            and owner[0] == self._host
            and owner[1].isdigit()
            and not pid_alive(int(owner[1]))
        )

    # --- running ---------------------------------------------------------------------------

    def run_worker(self, *, concurrency: int, stop: threading.Event) -> None:
        self.recover_orphans()
        threads = [
            threading.Thread(target=self._loop, args=(f"{self._prefix}{i}", stop), daemon=True)
            for i in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _loop(self, name: str, stop: threading.Event) -> None:
        settled: _Settled | None = None
        while not stop.is_set():
            try:
                busy, settled = self.step(name, settled, stop)
            except Exception:  # e.g. the database locked for too long: wait and go on
                log.exception("worker %s could not claim a job", name)
                busy = False
            if not busy:
                stop.wait(self.settings.queue.poll_s)
        try:
            self.flush(settled)
        except Exception:  # its heartbeat stops: the job is claimable again after stalled_s
            log.exception("worker %s could not settle its last job", name)

    def wait_for(self, item_ids: Iterable[str], *, timeout_s: float = 3600) -> set[str]:
        pending = set(item_ids)
        name = f"{self._prefix}w{threading.get_native_id()}"  # unique among this process's threads
        self.recover_orphans()
        deadline = time.monotonic() + timeout_s
        settled: _Settled | None = None
        while pending:
            self.flush(settled)
            settled = None
            with self.sessions() as session:
                states = {
                    job.item_id: job.state
                    for job in session.scalars(select(Job).where(Job.item_id.in_(pending)))
                }
            pending = {i for i in pending if states.get(i) in {"queued", *CLAIMED}}
            if not pending or time.monotonic() >= deadline:
                break
            busy, settled = self.step(name, None)
            if not busy:
                time.sleep(min(0.5, self.settings.queue.poll_s))
        if pending:
            log.warning("gave up waiting for %d item(s) after %g s", len(pending), timeout_s)
        return pending

    # --- looking ---------------------------------------------------------------------------

    def depth(self) -> int:
        with self.sessions() as session:
            return int(
                session.execute(
                    select(func.count()).select_from(Job).where(Job.state.in_(("queued", *CLAIMED)))
                ).scalar_one()
            )

    def oldest_age(self) -> float:
        with self.sessions() as session:
            now = db_now(session)
            oldest = session.execute(
                select(func.min(Job.due_at)).where(Job.state == "queued", Job.due_at <= now)
            ).scalar_one()
        return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())

    def job(self, item_id: str) -> JobInfo | None:
        with self.sessions() as session:
            job = session.get(Job, item_id)
            if job is None:
                return None
            state = JobState.RUNNING if job.state == "again" else JobState(job.state)
            return JobInfo(state, job.attempts)

    def close(self) -> None:
        self._closed.set()
        if self._engine is not self.sessions.kw["bind"]:
            self._engine.dispose()
