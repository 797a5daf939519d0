"""Prometheus metrics of one liuhen process, with the official ``prometheus-client``.

Counters and histograms live in this process's ``REGISTRY`` and are moved by one-line calls
from the code that does the work (intake, the ledger, the API's error handler). What the index
knows (queue depth and the oldest job's age, log size, checkpoint age) is read from the
database when ``/metrics`` is scraped (``index_metrics``), so every process reports the same
figures for them.

Not multiprocess mode: each process (``liuhen serve``, each ``liuhen worker``) has its own
counters and is scraped on its own; nothing here shares them between processes (that would be
``prometheus_client.multiprocess`` with ``PROMETHEUS_MULTIPROC_DIR``, which one process per
server does not need).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ingest.errors import AccessError, IntakeRefused
from integrity.errors import LiuhenError
from storage.errors import (
    Conflict,
    IndexError_,
    NotFound,
    ObjectNotFound,
    ObjectStoreError,
    StorageError,
)
from storage.tables import Checkpoint, LogState

if TYPE_CHECKING:
    from ingest.queue import Queue

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
"""This process's counters (the ``/metrics`` route adds the index's figures at scrape time)."""

_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

SEALED_BYTES = Counter("liuhen_sealed_bytes", "Bytes of new originals sealed.", registry=REGISTRY)
SEALED_ITEMS = Counter(
    "liuhen_sealed_items",
    "Seals, new items and the same bytes arriving again.",
    ["duplicate"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "liuhen_refusals", "Requests refused as not evidence, by reason.", ["reason"], registry=REGISTRY
)
STAGE_SECONDS = Histogram(
    "liuhen_stage_duration_seconds",
    "Time spent per stage (seal, checkpoint, receipt wait, pipeline stages).",
    ["stage"],
    buckets=_DURATIONS,
    registry=REGISTRY,
)
ERRORS = Counter(
    "liuhen_errors",
    "Failures of the object store and the database, and other errors, by kind and code.",
    ["component", "code"],
    registry=REGISTRY,
)
FORWARDED = Counter(
    "liuhen_uploads_forwarded",
    "tus requests forwarded to the serving process that spools the upload, by its answer.",
    ["status"],
    registry=REGISTRY,
)
CHECKPOINTS = Counter(
    "liuhen_checkpoints_signed", "Checkpoints this process signed.", registry=REGISTRY
)


def sealed(*, size: int, duplicate: bool) -> None:
    """One seal: a new original of ``size`` bytes, or the same bytes again."""
    SEALED_ITEMS.labels(duplicate=str(duplicate).lower()).inc()
    if not duplicate:
        SEALED_BYTES.inc(size)


def refused(error: LiuhenError) -> None:
    """Input refused (not evidence, or not from whom it claims); the reason is the error's
    stable code. Once per error: the seal counts it, and the edge that answers it again."""
    if getattr(error, "_refusal_counted", False):
        return
    error._refusal_counted = True  # type: ignore[attr-defined]
    REFUSALS.labels(reason=error.code).inc()


def answered(error: BaseException) -> None:
    """An error an edge (an API handler) answered: a refusal by its reason, and every error
    by component (``failed``)."""
    if isinstance(error, IntakeRefused | AccessError):
        refused(error)
    failed(error)


def forwarded(status: str) -> None:
    """A tus request passed to the process with the upload's spool: its status,
    ``unreachable`` or ``timeout``."""
    FORWARDED.labels(status=status).inc()


def count(component: str, code: str) -> None:
    """One error of ``component`` (``request``, ``object_store``, ``database``, ...)."""
    ERRORS.labels(component=component, code=code).inc()


def failed(error: BaseException) -> None:
    """Count an error by component: the object store, the database, the request's own fault
    (refused input, access refused, things not found), or other (the unexpected)."""
    if isinstance(error, IntakeRefused | AccessError | NotFound | ObjectNotFound | Conflict):
        component = "request"
    elif isinstance(error, ObjectStoreError):
        component = "object_store"
    elif isinstance(error, IndexError_ | SQLAlchemyError):
        component = "database"
    elif isinstance(error, StorageError):
        component = "storage"
    else:
        component = "other"
    count(component, getattr(error, "code", type(error).__name__))


class _Sealed(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def duplicate(self) -> bool: ...


P = ParamSpec("P")
S = TypeVar("S", bound=_Sealed)


def seal_observed(fn: Callable[P, S]) -> Callable[P, S]:
    """Decorate the seal: its duration, what it sealed, and why it refused."""

    @functools.wraps(fn)
    def seal(*args: P.args, **kwargs: P.kwargs) -> S:
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except IntakeRefused as e:
            refused(e)
            raise
        finally:
            observe("seal", time.perf_counter() - t0)
        sealed(size=result.size, duplicate=result.duplicate)
        return result

    return seal


def observe(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Time a block as ``stage`` (also when it raises)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        observe(stage, time.perf_counter() - t0)


def checkpoint_signed(*, size: int, seconds: float) -> None:  # noqa: ARG001 - size is logged
    CHECKPOINTS.inc()
    observe("checkpoint", seconds)


class IndexCollector(Collector):
    """Figures read from the index at scrape time: queue depth and oldest job age, log size,
    checkpoint size and age. A database that does not answer gives none of them (and the
    scrape itself still answers, with ``liuhen_index_up 0``)."""

    def __init__(self, sessions: sessionmaker[Session], queue: Queue) -> None:
        self.sessions = sessions
        self.queue = queue  # the queue owns its rows (procrastinate's or the jobs table)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("liuhen_index_up", "Whether the index answered this scrape.")
        try:
            metrics = list(self._read())
        except (SQLAlchemyError, LiuhenError) as e:
            log.warning("metrics: the index did not answer: %s", e)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *metrics]

    def _read(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        waiting, waited = self.queue.depth(), self.queue.oldest_age()
        with self.sessions() as session:
            size = session.execute(select(LogState.size).where(LogState.id == 1)).scalar()
            latest = session.execute(
                select(Checkpoint.size, Checkpoint.created_at)
                .order_by(Checkpoint.size.desc())
                .limit(1)
            ).first()
        depth = GaugeMetricFamily("liuhen_queue_depth", "Pipeline jobs waiting or running.")
        depth.add_metric([], waiting)
        age = GaugeMetricFamily(
            "liuhen_queue_oldest_job_age_seconds",
            "How long the longest-waiting due job has waited.",
        )
        age.add_metric([], waited)
        yield depth
        yield age
        leaves = GaugeMetricFamily("liuhen_log_size", "Leaves in the log.")
        leaves.add_metric([], size or 0)
        yield leaves
        signed = GaugeMetricFamily("liuhen_checkpoint_size", "Leaves the latest checkpoint covers.")
        signed.add_metric([], latest.size if latest else 0)
        yield signed
        if latest is not None:
            cp_age = GaugeMetricFamily(
                "liuhen_checkpoint_age_seconds", "Time since the latest checkpoint was signed."
            )
            cp_age.add_metric([], max(0.0, (now - latest.created_at).total_seconds()))
            yield cp_age
