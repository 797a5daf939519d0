"""The pipeline queue: one interface, two runners, the only code that touches job rows.

``Queue`` is what the rest of liuhen sees::

    defer(session, item_id)   queue the item's pipeline inside the caller's transaction, so an
                              item is never committed without its job (and a rollback drops both)
    run_worker(...)           run jobs until told to stop (``liuhen worker``, ``liuhen serve``)
    wait_for(item_ids)        until those items' jobs are finished (``--wait``), running jobs
                              here: on SQLite always, on PostgreSQL unless ``liuhen worker``
                              processes are heard of
    depth(), oldest_age()     how many jobs are waiting or running; how long the oldest due one
                              has waited (seconds, by the database's clock)
    job(item_id)              the item's latest job (state, attempts), for people and tests

Runners (chosen by the index's dialect in :func:`open_queue`):

* PostgreSQL, any number of machines: :mod:`ingest.queue.procrastinate` (the procrastinate
  library: ``SKIP LOCKED`` claims, a per-item ``lock`` so one item never runs twice at once,
  worker heartbeats, stalled-job recovery, NOTIFY wake-ups).
* SQLite, the embedded profile: :mod:`ingest.queue.sqlite`, a small in-process runner on the
  ``jobs`` table (one writer at a time is all SQLite offers anyway).

Both run the same handler (:mod:`ingest.queue.task` for the pipeline) with the same retry
policy (:mod:`ingest.queue.policy`); a handler answers ``DONE`` or ``FAILED`` or raises
:class:`RetryLater`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings

__all__ = [
    "BackgroundWorkers",
    "Handler",
    "JobInfo",
    "JobRun",
    "JobState",
    "Outcome",
    "Queue",
    "RetryLater",
    "open_queue",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    """Given up: the handler has already said why on the item."""


@dataclass(frozen=True)
class JobRun:
    """One run of one job, as a handler sees it."""

    item_id: str
    attempts: int
    """Earlier runs of this job that did not succeed (failed, or their worker vanished)."""
    stopping: Callable[[], bool]
    """True once the worker is asked to stop: a handler that is only waiting should hand back."""


class RetryLater(Exception):
    """Run the job again after ``delay_s`` (judged by the database's clock).

    ``counts`` is False for a job handed back unfinished (a worker stopping while it waited for
    the store): the SQLite runner then does not count the run; procrastinate always does.
    """

    def __init__(self, delay_s: float, error: str, *, counts: bool = True) -> None:
        super().__init__(error)
        self.delay_s = delay_s
        self.error = error
        self.counts = counts


Handler = Callable[[JobRun], Outcome]


@dataclass(frozen=True)
class JobInfo:
    state: JobState
    attempts: int
    """Runs of this job that did not succeed."""


class Queue(Protocol):
    def defer(self, session: Session, item_id: str, *, new: bool = False) -> None:
        """Queue ``item_id``'s job in ``session``'s transaction (no-op if one is waiting).
        ``new``: the item was inserted in this transaction, so no job of it can exist."""

    def defer_new(self, session: Session, item_ids: Sequence[str]) -> None:
        """Queue the jobs of items inserted in ``session``'s transaction (a group commit's
        batch), in one statement."""

    def run_worker(self, *, concurrency: int, stop: threading.Event) -> None:
        """Run jobs with ``concurrency`` threads until ``stop`` is set (finishing current jobs)."""

    def wait_for(self, item_ids: Iterable[str], *, timeout_s: float = 3600) -> set[str]:
        """Until the items' jobs are finished, running jobs in this process (on PostgreSQL
        only while no worker elsewhere is heard of); the IDs still unfinished when
        ``timeout_s`` ran out (a job this process is running then is finished first)."""

    def depth(self) -> int:
        """Jobs waiting or running."""

    def oldest_age(self) -> float:
        """Seconds the longest-waiting due job has waited (0 when none waits)."""

    def job(self, item_id: str) -> JobInfo | None:
        """The item's latest job."""

    def close(self) -> None:
        """Release connections (workers must have stopped)."""


def open_queue(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session], handler: Handler
) -> Queue:
    """The runner for this index: procrastinate on PostgreSQL, the jobs table on SQLite."""
    if engine.dialect.name == "postgresql":
        from ingest.queue.procrastinate import ProcrastinateQueue

        return ProcrastinateQueue(
            settings=settings, engine=engine, sessions=sessions, handler=handler
        )
    from ingest.queue.sqlite import SqliteQueue

    return SqliteQueue(settings=settings, sessions=sessions, handler=handler)


class BackgroundWorkers:
    """``queue.run_worker`` in a thread, for ``liuhen serve`` (none when ``concurrency`` is 0)."""

    def __init__(self, queue: Queue, concurrency: int) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.concurrency > 0:
            kwargs = {"concurrency": self.concurrency, "stop": self._stop}
            self._thread = threading.Thread(
                target=self.queue.run_worker, kwargs=kwargs, name="liuhen-workers", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
