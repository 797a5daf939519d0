"""Workers that claim pipeline jobs from the index and run them.

The queue is the ``jobs`` table: claiming is a transaction (``SKIP LOCKED`` on PostgreSQL),
a claim is a lease, and a lease whose worker died is taken over, at once when the dead worker
was on this host, else when the lease runs out. A job that raises is retried with back-off and,
after ``max_attempts``, leaves its item marked; the worker itself never stops for one item.
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

from ingest import jobs
from ingest.runtime import Runtime
from storage import repository as repo
from storage.db import transaction
from storage.tables import Job

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5


def worker_name(thread: int = 0) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{thread}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(rt: Runtime) -> int:
    """Requeue jobs held by workers of this host whose process is gone (a crash, a kill -9)."""
    host = socket.gethostname()
    now = datetime.now(UTC)
    count = 0
    with transaction(rt.sessions) as session:
        for job in session.scalars(select(Job).where(Job.state == "running")):
            owner = (job.locked_by or "").split(":")
            if len(owner) == 3 and owner[0] == host and owner[1].isdigit():
                if not _pid_alive(int(owner[1])):
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
    try:
        status = jobs.run(rt, item_id)
    except Exception as e:  # one item must never stop the worker
        log.exception("job for item %s failed (attempt %d)", item_id, attempts)
        _retry_or_fail(rt, item_id, attempts, f"{type(e).__name__}: {e}")
        return True
    with transaction(rt.sessions) as session:
        repo.finish_job(session, item_id=item_id, state="done", now=datetime.now(UTC))
    log.info("item %s: %s", item_id, status)
    return True


def _retry_or_fail(rt: Runtime, item_id: str, attempts: int, error: str) -> None:
    now = datetime.now(UTC)
    if attempts < rt.settings.pipeline.max_attempts:
        with transaction(rt.sessions) as session:
            job = repo.get_job(session, item_id=item_id)
            if job is not None:
                job.state, job.locked_by, job.locked_until = "queued", None, None
                job.due_at = now + timedelta(seconds=2**attempts)
                job.last_error = error
        return
    try:
        jobs.mark_failed(rt, item_id, error)
    finally:
        with transaction(rt.sessions) as session:
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


def wait_for(rt: Runtime, item_ids: Iterable[str], *, timeout_s: float = 3600) -> None:
    """Run jobs in this thread (others may help) until the given items' jobs are finished."""
    pending = set(item_ids)
    name = worker_name(99)
    recover_orphans(rt)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        with rt.sessions() as session:
            states = {
                job.item_id: job.state
                for job in session.scalars(select(Job).where(Job.item_id.in_(pending)))
            }
        pending = {i for i in pending if states.get(i) in {"queued", "running"}}
        if pending and not run_one(rt, name):
            time.sleep(IDLE_POLL_S)
