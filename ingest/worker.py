"""Workers that claim pipeline jobs from the index and run them.

The queue is the ``jobs`` table: claiming is a transaction (``SKIP LOCKED`` on PostgreSQL),
a claim is a lease, and a lease whose worker died is taken over, at once when the dead worker
was on this host, else when the lease runs out. A job that raises is retried with back-off and,
after ``max_attempts``, leaves its item marked; the worker itself never stops for one item.

A worker settles only a job it still holds: one re-queued while it ran (``link_track`` after
the item's first run started) or taken over after its lease ran out is left for the next run.
``attempts`` counts the runs since the last success; a job claimed more than ``max_attempts``
times without an answer (each run's worker died) is given up rather than run again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest import jobs
from ingest.runtime import Runtime
from storage import repository as repo
from storage.db import transaction
from storage.processes import pid_alive
from storage.tables import Job

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5


def worker_name(thread: int = 0) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{thread}"


def recover_orphans(rt: Runtime) -> int:
    """Requeue jobs held by workers of this host whose process is gone (a crash, a kill -9),
    and remove the scratch folders those processes left."""
    host = socket.gethostname()
    now = datetime.now(UTC)
    count = 0
    jobs.remove_stale_workdirs(rt.settings, alive=pid_alive)
    with transaction(rt.sessions) as session:
        for job in session.scalars(select(Job).where(Job.state == "running")):
            owner = (job.locked_by or "").split(":")
            if len(owner) == 3 and owner[0] == host and owner[1].isdigit():
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


def run_one(rt: Runtime, name: str) -> bool:
    """Claim and run one due job; False when there was none."""
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=rt.settings.pipeline.job_timeout_s + 60)
    with transaction(rt.sessions) as session:
        item_id = repo.claim_job(session, worker=name, now=now, lease_until=lease)
        job = repo.get_job(session, item_id=item_id) if item_id else None
        attempts = job.attempts if job else 0
    if item_id is None:
        return False
    if attempts > rt.settings.pipeline.max_attempts:
        # Every earlier run vanished without an answer (its worker was killed, or its lease ran
        # out): an item that kills workers must not take down each new one in turn.
        runs = attempts - 1
        _fail(rt, item_id, name, f"gave up after {runs} run(s) that never finished")
        return True
    try:
        status = jobs.run(rt, item_id)
    except Exception as e:  # one item must never stop the worker
        log.exception("job for item %s failed (attempt %d)", item_id, attempts)
        _retry_or_fail(rt, item_id, name, attempts, f"{type(e).__name__}: {e}")
        return True
    with transaction(rt.sessions) as session:
        job = session.get(Job, item_id, with_for_update=True, populate_existing=True)
        if job is not None and job.state == "running" and job.locked_by == name:
            repo.finish_job(session, item_id=item_id, state="done", now=datetime.now(UTC))
            job.attempts = 0  # attempts count the runs since the last success
        elif job is not None and job.state == "queued":
            job.attempts = 0  # re-queued while it ran: a new request, and this run succeeded
    log.info("item %s: %s (attempt %d)", item_id, status, attempts)
    return True


def _held(session: Session, item_id: str, name: str) -> Job | None:
    """The job if ``name`` still holds it (its row locked until the transaction ends)."""
    job = session.get(Job, item_id, with_for_update=True, populate_existing=True)
    return job if job is not None and job.state == "running" and job.locked_by == name else None


def _retry_or_fail(rt: Runtime, item_id: str, name: str, attempts: int, error: str) -> None:
    now = datetime.now(UTC)
    if attempts < rt.settings.pipeline.max_attempts:
        with transaction(rt.sessions) as session:
            job = _held(session, item_id, name)
            if job is not None:
                job.state, job.locked_by, job.locked_until = "queued", None, None
                job.due_at = now + timedelta(seconds=2**attempts)
                job.last_error = error
        return
    _fail(rt, item_id, name, error)


def _fail(rt: Runtime, item_id: str, name: str, error: str) -> None:
    """Give up on a job: the item says why, the job is ``failed`` (unless re-queued)."""
    try:
        jobs.mark_failed(rt, item_id, error)  # a run re-queued meanwhile will overwrite this
    finally:
        with transaction(rt.sessions) as session:
            if _held(session, item_id, name) is not None:
                now = datetime.now(UTC)
                repo.finish_job(session, item_id=item_id, state="failed", now=now, error=error)


class WorkerPool:
    """``size`` threads running jobs until ``stop``; used by ``liuhen serve`` and ``worker``."""

    def __init__(self, rt: Runtime, size: int) -> None:
        self.rt = rt
        self.size = size
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        recover_orphans(self.rt)
        for i in range(self.size):
            t = threading.Thread(target=self._loop, args=(worker_name(i),), daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, name: str) -> None:
        while not self._stop.is_set():
            try:
                busy = run_one(self.rt, name)
            except Exception:  # e.g. the database restarting: wait and go on
                log.exception("worker %s could not claim a job", name)
                busy = False
            if not busy:
                self._stop.wait(IDLE_POLL_S)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()


def wait_for(rt: Runtime, item_ids: Iterable[str], *, timeout_s: float = 3600) -> set[str]:
    """Run jobs in this thread (others may help) until the given items' jobs are finished.

    Returns the IDs whose jobs were still queued or running when ``timeout_s`` ran out.
    """
    pending = set(item_ids)
    name = worker_name(threading.get_native_id())  # unique among this process's threads
    recover_orphans(rt)
    deadline = time.monotonic() + timeout_s
    while pending:
        with rt.sessions() as session:
            states = {
                job.item_id: job.state
                for job in session.scalars(select(Job).where(Job.item_id.in_(pending)))
            }
        pending = {i for i in pending if states.get(i) in {"queued", "running"}}
        if not pending or time.monotonic() >= deadline:
            break
        if not run_one(rt, name):
            time.sleep(IDLE_POLL_S)
    if pending:
        log.warning("gave up waiting for %d item(s) after %g s", len(pending), timeout_s)
    return pending
