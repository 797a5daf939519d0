"""The embedded queue: a small in-process runner on the ``jobs`` table (SQLite).

One row per item: ``queued`` → ``running`` (claimed: ``locked_by`` names the worker thread,
``attempts`` counts the runs since the last success) → ``done`` | ``failed``. A claim is kept
alive by a heartbeat: every ``queue.heartbeat_s`` a thread of each process pushes
``locked_until`` of its running jobs to the database's ``now + queue.stalled_s``. A job whose
heartbeat stopped (its process hung or was killed) is claimable again once that time passed;
one whose process is gone from this host is put back at once (the PID says so). Retries wait
with jittered back-off; every time is the database's clock (``strftime('now')``).

A run's end is written in the transaction that claims the worker's next job (one commit per
job). A worker settles only a job it still holds: one re-queued while it ran (``link_track`` after
the item's first run started) is left queued for the next run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings
from ingest.queue import Handler, JobInfo, JobRun, JobState, Outcome, RetryLater
from storage.db import transaction
from storage.processes import pid_alive
from storage.tables import Job

log = logging.getLogger(__name__)


def db_now(session: Session) -> datetime:
    """The database's clock (SQLite: this machine's, read by SQLite)."""
    stamp = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)


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
        self._host = socket.gethostname()
        self._prefix = f"{self._host}:{os.getpid()}:"
        self._beat_lock = threading.Lock()
        self._beating: threading.Thread | None = None
        self._closed = threading.Event()

    # --- deferring -------------------------------------------------------------------------

    def defer(self, session: Session, item_id: str) -> None:
        now = db_now(session)
        job = session.get(Job, item_id)
        if job is None:
            session.add(
                Job(item_id=item_id, state="queued", attempts=0, due_at=now, updated_at=now)
            )
        elif job.state != "queued" or job.due_at > now:
            # A running job is not settled by its worker once re-queued (see module doc).
            job.state, job.due_at, job.updated_at, job.locked_by = "queued", now, now, None
        session.flush()

    # --- claiming and settling -------------------------------------------------------------

    def _take(self, session: Session, name: str, now: datetime) -> tuple[str, int] | None:
        """Claim the oldest due job (queued, or running with a stale heartbeat)."""
        job = session.scalars(
            select(Job)
            .where(
                ((Job.state == "queued") & (Job.due_at <= now))
                | ((Job.state == "running") & (Job.locked_until < now))
            )
            .order_by(Job.due_at)
            .limit(1)
        ).first()
        if job is None:
            return None
        job.state, job.locked_by = "running", name
        job.locked_until = now + timedelta(seconds=self.settings.queue.stalled_s)
        job.attempts += 1
        job.updated_at = now
        return job.item_id, job.attempts - 1

    def _settle(self, session: Session, done: _Settled, now: datetime) -> None:
        """Write what a run ended with, if its worker still holds the job."""
        job = session.get(Job, done.item_id, populate_existing=True)
        if job is None:
            return
        held = job.state == "running" and job.locked_by == done.name
        if done.outcome is not None:
            if held:
                job.state = "done" if done.outcome is Outcome.DONE else "failed"
                job.locked_by = job.locked_until = None
                job.updated_at = now
                if done.outcome is Outcome.DONE:
                    job.attempts, job.last_error = 0, None
            elif job.state == "queued" and done.outcome is Outcome.DONE:
                job.attempts = 0  # re-queued while it ran: a new request, and this run succeeded
        elif held:
            job.state, job.locked_by, job.locked_until = "queued", None, None
            job.due_at, job.updated_at = now + timedelta(seconds=done.delay_s), now
            job.last_error = done.error
            if not done.counts:
                job.attempts -= 1

    def step(
        self, name: str, settled: _Settled | None, stopping: threading.Event | None = None
    ) -> tuple[bool, _Settled | None]:
        """Settle the last run and claim the next in one transaction (one commit per job),
        then run it. Returns whether a job ran and what it ended with (to settle next)."""
        self._heartbeat()
        with transaction(self.sessions) as session:
            now = db_now(session)
            if settled is not None:
                self._settle(session, settled, now)
            claimed = (
                None
                if stopping is not None and stopping.is_set()
                else self._take(session, name, now)
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
            with transaction(self.sessions) as session:
                self._settle(session, settled, db_now(session))

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
        interval = self.settings.queue.heartbeat_s
        while not self._closed.wait(interval):
            try:
                with transaction(self.sessions) as session:
                    now = db_now(session)
                    until = now + timedelta(seconds=self.settings.queue.stalled_s)
                    for job in session.scalars(
                        select(Job).where(
                            Job.state == "running", Job.locked_by.startswith(self._prefix)
                        )
                    ):
                        job.locked_until = until
            except Exception:  # the index busy or restarting: beat again next time
                log.exception("heartbeat failed")

    def recover_orphans(self) -> int:
        """Put back at once jobs held by processes of this host that are gone (a kill -9)."""
        from ingest.queue.task import remove_stale_scratch

        remove_stale_scratch(self.settings)
        count = 0
        with transaction(self.sessions) as session:
            now = db_now(session)
            for job in session.scalars(select(Job).where(Job.state == "running")):
                owner = (job.locked_by or "").split(":")
                if len(owner) == 3 and owner[0] == self._host and owner[1].isdigit():
                    if not pid_alive(int(owner[1])):
                        job.state, job.locked_by, job.locked_until, job.due_at = (
                            "queued",
                            None,
                            None,
                            now,
                        )
                        count += 1
        if count:
            log.warning("requeued %d job(s) left by a crashed worker", count)
        return count

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
        last_look = time.monotonic()
        settled: _Settled | None = None
        while not stop.is_set():
            try:
                busy, settled = self.step(name, settled, stop)
                if time.monotonic() - last_look >= self.settings.queue.heartbeat_s:
                    last_look = time.monotonic()
                    self.recover_orphans()
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
            pending = {i for i in pending if states.get(i) in {"queued", "running"}}
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
                    select(func.count())
                    .select_from(Job)
                    .where(Job.state.in_(("queued", "running")))
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
            return None if job is None else JobInfo(JobState(job.state), job.attempts)

    def close(self) -> None:
        self._closed.set()
