"""The PostgreSQL queue: procrastinate (https://procrastinate.readthedocs.io), for any number of
``liuhen worker`` processes on any number of machines.

* **Defer in the sealing transaction.** ``defer`` hands procrastinate the psycopg connection
  under the caller's SQLAlchemy session (``configure(connection=...)``, made for this), so the
  job row commits or rolls back with the item. A waiting job for the same item (procrastinate's
  ``queueing_lock``) makes a second defer a no-op, inside a savepoint.
* **One run per item at a time.** Every job of an item carries ``lock = item_id``: procrastinate
  never starts a job while another with its lock is running, so a re-queue (``link_track``)
  waits for the running job and then runs once more.
* **Heartbeats, not leases.** Workers beat every ``queue.heartbeat_s`` (procrastinate's
  worker table, ``now()`` of the database). Every worker looks every heartbeat for jobs
  ``doing`` under a worker not heard of for ``queue.stalled_s`` and puts them back (one looker
  at a time: an advisory lock); that run counts as an attempt.
* **An outage is not a death.** While the database is away nobody can beat, so when it comes
  back every worker looks stalled. A looker that lost the database (an error, or a look that
  hung for longer than a heartbeat), or has just started, waits ``stalled_s`` before it looks
  (none while the database has been up for less, after a restart); beats go over a connection
  of their own that is opened again at the next beat (the pool's reconnect back-off could
  outlast ``stalled_s``); procrastinate's own pruning of silent workers, which would unlink a
  live one's jobs, waits a day. A run whose job was put back anyway (a worker cut off alone)
  cannot end it: job ends are written only while the job is ``doing`` under the worker that
  ran it, at the attempts it was fetched with (a put-back counts one).
* **Retries** are written due at the database's ``now() + delay``, in the statement that
  puts the job back (procrastinate's own would take the worker's clock), so a worker's clock
  never decides when a job is due, even when the database was away at the moment it failed.
* **A database that goes away** (restart, failover, connections killed) ends procrastinate's
  worker with an error; ``run_worker`` starts it again after a back-off, on a new pool. Jobs it
  was running are put back by the stalled-job looker once its heartbeat is old.
* **Beats that outlive a failure and a stop.** procrastinate beats from a side task that ends
  at its first failed update, unnoticed (nothing watches it once the periodic deferrer, idle
  here, has returned), and that it cancels before waiting for a stopping worker's jobs: either
  way those jobs would look stalled while they run, and run a second time beside themselves.
  ``run_worker`` beats every worker it registered itself, until the worker is gone.
* **Job ends written until they are.** procrastinate leaves a failed status write in its job's
  task, unseen: the job would stay ``doing`` under a live worker, never to run again.
  Writes that meet an unreachable database are tried again until it answers (or the worker
  stops: then its jobs are put back once its beats are old).
* **Round trips per job**: pooled connections are in autocommit (procrastinate's calls are one
  statement each; no ``COMMIT`` after every one) and a connection is pinged before use only
  when it has been idle for a while, not before every statement as procrastinate's default
  pool check does (bench/scale.py: that ping and the commit were a third of a job's cost).

The schema is procrastinate's own, applied by Alembic revision 0005 (PostgreSQL only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, LiteralString

import procrastinate
import psycopg
import psycopg_pool
from procrastinate import exceptions as pexc
from procrastinate import manager as pmanager
from procrastinate.jobs import Job as PJob
from procrastinate.jobs import Status
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings
from ingest.queue import Handler, JobInfo, JobRun, JobState, Outcome, RetryLater, policy

log = logging.getLogger(__name__)

TASK = "liuhen.pipeline"
QUEUE = "pipeline"
RECOVERY_LOCK = 7310852  # pg advisory lock: one stalled-job looker at a time
IDLE_CHECK_S = 1.0  # a pooled connection idle for longer is pinged before it is used
# procrastinate's procrastinate_retry_job_v2, due by the database's clock, and counting the run
# only when it was one (``step`` 0 for a job handed back unfinished). One statement: a write
# tried again after a lost answer finds the job no longer ``doing`` and changes nothing.
RETRY_BY_DATABASE_TIME = """
UPDATE procrastinate_jobs SET
    status = (CASE WHEN abort_requested THEN 'failed' ELSE 'todo' END)::procrastinate_job_status,
    attempts = attempts + CASE WHEN abort_requested THEN 0 ELSE %(step)s END,
    scheduled_at = CASE WHEN abort_requested THEN scheduled_at
                   ELSE now() + make_interval(secs => %(delay_s)s) END,
    priority = COALESCE(%(new_priority)s::integer, priority),
    queue_name = COALESCE(%(new_queue_name)s::varchar, queue_name),
    lock = COALESCE(%(new_lock)s::varchar, lock)
WHERE id = %(job_id)s AND status = 'doing' AND worker_id = ANY(%(workers)s)
    AND attempts = %(attempts)s
RETURNING id
"""
# procrastinate's procrastinate_finish_job_v1, fenced like the retry above: a run whose job was
# put back (its worker looked stalled) and taken again, by another worker or by its own, must
# not end the new run's job. The worker and the attempts as fetched name the run: putting a job
# back always counts an attempt.
FINISH_BY_ITS_WORKER = """
UPDATE procrastinate_jobs SET
    status = %(status)s::procrastinate_job_status, abort_requested = false, attempts = attempts + 1
WHERE id = %(job_id)s AND status = 'doing' AND worker_id = ANY(%(workers)s)
    AND attempts = %(attempts)s
RETURNING id
"""
HEARTBEAT = "SELECT procrastinate_update_heartbeat_v1(%s)"
PRUNE_WORKERS_S = 86400.0  # procrastinate deletes workers not heard of for this long (see below)
RESTART_S = (0.5, 10.0)  # back-off of a worker restart after a database error (first, cap)
_STATES = {
    "todo": JobState.QUEUED,
    "doing": JobState.RUNNING,
    "succeeded": JobState.DONE,
    "failed": JobState.FAILED,
    "cancelled": JobState.FAILED,
    "aborted": JobState.FAILED,
}


class _GaveUp(Exception):
    pass


class _LookHung(Exception):
    """Reaching the database took longer than a heartbeat: it was away meanwhile."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"reaching the database took {seconds:.1f} s")


class _RetryIn(Exception):
    def __init__(self, delay_s: float, error: str, *, counts: bool) -> None:
        super().__init__(error)
        self.delay_s = delay_s
        self.counts = counts


class _Retry(procrastinate.BaseRetryStrategy):
    """Retry when the handler asked, after the delay it asked for; give up when it gave up; an
    unexpected error outside the handler (the index unreachable) is retried with back-off.

    procrastinate wants a time, which would be this worker's: the delay is left for the job
    manager (``delays``), which makes the retry due at the database's ``now()`` plus it."""

    def __init__(self, settings: Settings, delays: dict[int, tuple[float, bool]]) -> None:
        self.settings = settings
        self.delays = delays

    def get_retry_decision(
        self, *, exception: BaseException, job: PJob
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, _GaveUp):
            return None
        if isinstance(exception, _RetryIn):
            delay, counts = exception.delay_s, exception.counts
        else:
            delay, counts = policy.retry_delay(self.settings.queue, job.attempts), True
        if job.id is not None:
            self.delays[job.id] = (delay, counts)
        return procrastinate.RetryDecision()  # when: the job manager's (see above)


class _JobManager(pmanager.JobManager):
    """procrastinate's, knowing the workers it registered (``run_worker`` beats them) and
    writing job ends until the database takes them."""

    def __init__(self, connector: procrastinate.BaseConnector, stopping: threading.Event) -> None:
        super().__init__(connector)
        self.stopping = stopping
        self.worker_ids: set[int] = set()
        self.delays: dict[int, tuple[float, bool]] = {}
        """Job ID → seconds its retry waits (``_Retry``), from the database's ``now()``, and
        whether the run counts as an attempt."""

    async def register_worker(self) -> int:
        worker_id = await super().register_worker()
        self.worker_ids.add(worker_id)
        return worker_id

    async def unregister_worker(self, worker_id: int) -> None:
        self.worker_ids.discard(worker_id)
        await super().unregister_worker(worker_id)

    async def finish_job(self, job: PJob, status: Status, delete_job: bool) -> None:
        if delete_job:  # never asked for (``delete_jobs="never"``): procrastinate's own
            write = functools.partial(super().finish_job, job, status, delete_job)
        else:
            write = functools.partial(
                self._fenced, job, FINISH_BY_ITS_WORKER, job_id=job.id, status=status.value
            )
        await self._until_written(job, write)

    async def retry_job(
        self,
        job: PJob,
        retry_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        decided = self.delays.pop(job.id, None) if job.id is not None else None
        if decided is None:
            write = functools.partial(super().retry_job, job, retry_at, priority, queue, lock)
        else:
            delay, counts = decided
            write = functools.partial(
                self._fenced,
                job,
                RETRY_BY_DATABASE_TIME,
                job_id=job.id,
                delay_s=delay,
                step=1 if counts else 0,
                new_priority=priority,
                new_queue_name=queue,
                new_lock=lock,
            )
        await self._until_written(job, write)

    async def _fenced(self, job: PJob, query: LiteralString, **args: Any) -> None:
        """Write a job's end only if it is still ``doing`` under one of this manager's workers."""
        rows = await self.connector.execute_query_all_async(
            query=query, workers=sorted(self.worker_ids), attempts=job.attempts, **args
        )
        if not rows:
            log.warning(
                "job %s is no longer this worker's (put back as stalled, or its end was written"
                " before an answer was lost): this run's end is not written",
                job.id,
            )

    async def _until_written(self, job: PJob, write: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await write()
                return
            except pexc.ConnectorException as e:
                unreachable = isinstance(e.__cause__, psycopg.OperationalError)
                if not unreachable or self.stopping.is_set():
                    raise
                failures += 1
                delay = policy.backoff(failures, base_s=RESTART_S[0], cap_s=RESTART_S[1])
                log.warning(
                    "job %s: the database did not take its end (%s); again in %.1f s",
                    job.id, e.__cause__, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)


def libpq_url(engine: Engine) -> str:
    """The engine's URL as libpq reads it (no ``+psycopg`` driver part)."""
    url = make_url(engine.url.render_as_string(hide_password=False)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class ProcrastinateQueue:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        handler: Handler,
        queue: str = QUEUE,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.handler = handler
        self.queue = queue
        # Only ever used with a caller's connection (defer): never opened, holds no pool.
        self._defer_app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())

    # --- deferring -------------------------------------------------------------------------

    def defer(self, session: Session, item_id: str, *, new: bool = False) -> None:
        if new:  # no job can hold its queueing lock: no savepoint needed to survive that
            self._defer_on(session, item_id)
            return
        try:
            with session.begin_nested():
                # The savepoint is emitted when the session's connection is asked for: now.
                self._defer_on(session, item_id)
        except pexc.AlreadyEnqueued:
            pass  # a job for this item is waiting: it will see everything committed so far

    def defer_new(self, session: Session, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        conn = session.connection().connection.driver_connection
        jobs = [
            self._defer_app.configure_task(
                TASK, lock=item_id, queueing_lock=item_id, queue=self.queue
            ).make_new_job(item_id=item_id)
            for item_id in item_ids
        ]
        self._defer_app.job_manager.batch_defer_jobs(jobs, connection=conn)

    def _defer_on(self, session: Session, item_id: str) -> None:
        conn = session.connection().connection.driver_connection
        self._defer_app.configure_task(
            TASK, lock=item_id, queueing_lock=item_id, queue=self.queue, connection=conn
        ).defer(item_id=item_id)

    # --- working ---------------------------------------------------------------------------

    def _app(
        self, concurrency: int, stopping: threading.Event
    ) -> tuple[procrastinate.App, _JobManager]:
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=libpq_url(self.engine),
                min_size=1,
                max_size=concurrency + 3,  # jobs' status updates, the listener, heartbeats
                configure=_autocommit,
                reset=_returned,
                pool_factory=_pool,
            )
        )
        app.job_manager = manager = _JobManager(app.connector, stopping)
        handler = self.handler

        def pipeline(context: procrastinate.JobContext, item_id: str) -> None:
            run = JobRun(
                item_id=item_id,
                attempts=context.job.attempts,
                stopping=lambda: stopping.is_set() or context.should_abort(),
            )
            try:
                outcome = handler(run)
            except RetryLater as e:
                raise _RetryIn(e.delay_s, e.error, counts=e.counts) from e
            if outcome is Outcome.FAILED:
                raise _GaveUp(item_id)

        app.task(
            name=TASK,
            queue=self.queue,
            pass_context=True,
            retry=_Retry(self.settings, manager.delays),
        )(pipeline)
        return app, manager

    def run_worker(self, *, concurrency: int, stop: threading.Event) -> None:
        from ingest.queue.task import remove_stale_scratch

        remove_stale_scratch(self.settings)
        qs = self.settings.queue
        app, manager = self._app(concurrency, stop)
        name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_native_id()}"

        async def main() -> None:
            loop = asyncio.get_running_loop()
            # Sync jobs run on the loop's default executor: one thread per concurrent job.
            loop.set_default_executor(ThreadPoolExecutor(concurrency + 2, "liuhen-job"))
            async with app.open_async():
                worker = asyncio.create_task(
                    app.run_worker_async(
                        queues=[self.queue],
                        name=name,
                        concurrency=concurrency,
                        install_signal_handlers=False,
                        fetch_job_polling_interval=qs.poll_s,
                        abort_job_polling_interval=max(qs.poll_s, 5.0),
                        update_heartbeat_interval=qs.heartbeat_s,
                        # Not stalled_s: procrastinate deletes such workers when one starts,
                        # which would unlink the jobs of a live one that could not beat for
                        # a while; ``recover_stalled`` judges them (and waits out outages).
                        stalled_worker_timeout=PRUNE_WORKERS_S,
                        delete_jobs="never",
                    )
                )
                beats = asyncio.create_task(self._beat(manager))
                try:
                    while not stop.is_set() and not worker.done():
                        await asyncio.sleep(0.1)
                    if not worker.done():
                        worker.cancel()  # procrastinate stops gracefully: current jobs finish
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
                finally:
                    beats.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beats

        recovery = threading.Thread(target=self._recover_loop, args=(stop,), daemon=True)
        recovery.start()
        failures = 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    asyncio.run(main())
                except Exception:
                    if stop.is_set():
                        log.exception("worker %s stopped on an error while stopping", name)
                        break
                    log.exception("worker %s stopped on an error; starting again", name)
                else:
                    if not stop.is_set():  # ended without being asked: start again at once
                        log.warning("worker %s ended by itself; starting again", name)
                    continue
                # One that ran a while met a new outage, not the same one still going on.
                failures = 0 if time.monotonic() - started > RESTART_S[1] else failures + 1
                delay = policy.backoff(failures, base_s=RESTART_S[0], cap_s=RESTART_S[1])
                if stop.wait(delay):
                    break
                app, manager = self._app(concurrency, stop)  # a new pool: old sockets are dead
        finally:
            stop.set()
            recovery.join()

    async def _beat(self, manager: _JobManager) -> None:
        """Beat for the manager's workers every heartbeat, whatever fails (module docstring),
        on a connection of their own: the pool, after an outage, reconnects on a back-off of
        its own that can outlast ``stalled_s``; this one is opened again at the next beat."""
        every = self.settings.queue.heartbeat_s
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await asyncio.sleep(every)
                try:
                    if conn is None or conn.closed:
                        conn = await asyncio.wait_for(_connect(libpq_url(self.engine)), every)
                    for worker_id in list(manager.worker_ids):
                        await asyncio.wait_for(_beat_on(conn, worker_id), every)
                except Exception as e:  # the database away: the next beat tries again
                    log.warning("workers %s: no heartbeat this time (%s)", manager.worker_ids, e)
                    if conn is not None:
                        await conn.close()
                    conn = None
        finally:
            if conn is not None:
                await conn.close()

    def _recover_loop(self, stop: threading.Event) -> None:
        """Look for stalled jobs every heartbeat, once this looker has been in touch with the
        database for ``stalled_s``: after it lost the database (an error, or a look that hung
        longer than a heartbeat: a network that drops packets) every worker's beats failed
        too, and live ones need that long to be heard of again. A looker that has just
        started may be starting just after an outage: it waits as well (a dead worker's jobs
        wait ``stalled_s`` longer when every looker is new)."""
        stalled, beat = self.settings.queue.stalled_s, self.settings.queue.heartbeat_s
        back_since: float | None = None
        while True:
            began = time.monotonic()
            try:
                if back_since is None or began - back_since < stalled:
                    self._ping()
                    if time.monotonic() - began > beat:
                        raise _LookHung(time.monotonic() - began)
                    back_since = time.monotonic() if back_since is None else back_since
                else:
                    self.recover_stalled(up_for_s=stalled, began=began, hung_after_s=beat)
            except Exception as e:  # the database away: look again next beat
                log.warning("could not look for stalled jobs (%s)", e)
                back_since = None
            if stop.wait(beat):
                return

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def recover_stalled(
        self, *, up_for_s: float = 0.0, began: float | None = None, hung_after_s: float = 0.0
    ) -> int:
        """Put back jobs whose worker has not been heard of for ``queue.stalled_s``; none while
        the database itself has been up for less than ``up_for_s`` (a restart silenced every
        worker, not only dead ones), and none when reaching it took longer than
        ``hung_after_s`` since ``began`` (``_LookHung``: the network was away meanwhile)."""
        with self.engine.connect() as conn, conn.begin():
            got = conn.execute(
                text(
                    "SELECT pg_try_advisory_xact_lock(:k)"
                    " AND pg_postmaster_start_time() < now() - make_interval(secs => :up)"
                ),
                {"k": RECOVERY_LOCK, "up": up_for_s},
            )
            if began is not None and hung_after_s and time.monotonic() - began > hung_after_s:
                raise _LookHung(time.monotonic() - began)  # rolled back: nothing put back
            if not got.scalar_one():
                return 0
            stalled = (
                conn.execute(
                    text(
                        "SELECT j.id FROM procrastinate_jobs j"
                        " WHERE j.status = 'doing' AND j.queue_name = :q AND (j.worker_id IS NULL"
                        "  OR j.worker_id IN (SELECT w.id FROM procrastinate_workers w"
                        "   WHERE w.last_heartbeat < now() - make_interval(secs => :s)))"
                        " ORDER BY j.id FOR UPDATE OF j"
                    ),
                    {"q": self.queue, "s": self.settings.queue.stalled_s},
                )
                .scalars()
                .all()
            )
            for job_id in stalled:
                conn.execute(
                    text("SELECT procrastinate_retry_job_v2(:id, now(), NULL, NULL, NULL)"),
                    {"id": job_id},
                )
                # A retry does not notify (only inserts do): wake idle workers as an insert would.
                conn.execute(
                    text(
                        "SELECT pg_notify(:channel,"
                        " json_build_object('type', 'job_inserted', 'job_id', :id)::text)"
                    ),
                    {"channel": f"procrastinate_queue_v1#{self.queue}", "id": job_id},
                )
        if stalled:
            ids = ", ".join(str(i) for i in stalled)
            log.warning("requeued %d job(s) left by a crashed worker (job %s)", len(stalled), ids)
        return len(stalled)

    def wait_for(self, item_ids: Iterable[str], *, timeout_s: float = 3600) -> set[str]:
        """Until these items' jobs are finished. While ``liuhen worker`` processes are heard
        of, they do the work and this only waits (a ``--wait`` must not take on someone
        else's hour-long transcode); with none, a worker runs here (it takes whatever job is
        due, the others' too) until these are done."""
        pending = set(item_ids)
        stop = threading.Event()
        worker: threading.Thread | None = None
        deadline = time.monotonic() + timeout_s
        looked = 0.0
        try:
            while pending and time.monotonic() < deadline:
                if worker is None and time.monotonic() - looked >= self.settings.queue.heartbeat_s:
                    looked = time.monotonic()
                    if not self.live_workers():
                        worker = threading.Thread(
                            target=self.run_worker,
                            kwargs={
                                "concurrency": max(1, self.settings.pipeline.workers),
                                "stop": stop,
                            },
                            daemon=True,
                        )
                        worker.start()
                if worker is not None and not worker.is_alive():
                    break
                pending = self._unfinished(pending)
                if pending:
                    time.sleep(0.1)
        finally:
            stop.set()
            if worker is not None:
                worker.join()
        pending = self._unfinished(pending) if pending else pending
        if pending:
            log.warning("gave up waiting for %d item(s) after %g s", len(pending), timeout_s)
        return pending

    def live_workers(self) -> int:
        """Workers heard of within ``queue.stalled_s`` (by the database's clock)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM procrastinate_workers"
                        " WHERE last_heartbeat >= now() - make_interval(secs => :s)"
                    ),
                    {"s": self.settings.queue.stalled_s},
                ).scalar_one()
            )

    def _unfinished(self, item_ids: set[str]) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT DISTINCT lock FROM procrastinate_jobs"
                    " WHERE lock = ANY(:ids) AND status IN ('todo', 'doing') AND queue_name = :q"
                ),
                {"ids": list(item_ids), "q": self.queue},
            )
            return {str(r) for r in rows.scalars()}

    # --- looking ---------------------------------------------------------------------------

    def depth(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM procrastinate_jobs"
                        " WHERE status IN ('todo', 'doing') AND queue_name = :q"
                    ),
                    {"q": self.queue},
                ).scalar_one()
            )

    def oldest_age(self) -> float:
        with self.engine.connect() as conn:
            age = conn.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM now() - min(COALESCE(j.scheduled_at, e.at)))"
                    " FROM procrastinate_jobs j JOIN procrastinate_events e"
                    "  ON e.job_id = j.id AND e.type = 'deferred'"
                    " WHERE j.status = 'todo' AND j.queue_name = :q"
                    "  AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())"
                ),
                {"q": self.queue},
            ).scalar_one()
        return max(0.0, float(age or 0))

    def job(self, item_id: str) -> JobInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT status::text, attempts FROM procrastinate_jobs"
                    " WHERE lock = :id AND queue_name = :q ORDER BY id DESC LIMIT 1"
                ),
                {"id": item_id, "q": self.queue},
            ).one_or_none()
        if row is None:
            return None
        state = _STATES[row[0]]
        # procrastinate counts every run; a success leaves one more than the failures before it
        attempts = int(row[1]) - (1 if state is JobState.DONE else 0)
        return JobInfo(state, attempts)

    def close(self) -> None:
        pass  # workers open and close their own pools; defers use the caller's connection


async def _connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


async def _beat_on(conn: psycopg.AsyncConnection[Any], worker_id: int) -> None:
    await conn.execute(HEARTBEAT, (worker_id,))


def _pool(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
    """procrastinate's pool, with a check that pings only connections idle for a while."""
    kwargs["check"] = _check_if_idle
    return psycopg_pool.AsyncConnectionPool(**kwargs)


# When each pooled connection was last given back (the pool's callbacks run on its loop).
_given_back: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


async def _returned(conn: psycopg.AsyncConnection[Any]) -> None:
    _given_back[conn] = time.monotonic()


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    if time.monotonic() - _given_back.get(conn, 0.0) > IDLE_CHECK_S:
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)
