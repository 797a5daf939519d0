"""Everything a liuhen process talks to, opened from settings and closed on exit.

Only what a command uses is opened: the index and the log key at once (cheap), the object
store on first use (for the embedded profile that starts or joins the home's SeaweedFS). The
schema migration and the bucket check run once per home and schema version, not per command:
a current schema is one cheap query, a checked bucket leaves a marker in the home.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings
from ingest.ledger import Ledger
from ingest.logkey import load_log_key
from ingest.signing import load_tsa_config
from storage.db import make_engine, make_read_sessionmaker, make_sessionmaker, migrate_if_needed
from storage.objects import ObjectStore, S3Endpoint
from storage.seaweed import EmbeddedSeaweed

if TYPE_CHECKING:
    from ingest.queue import Queue


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    """Connects on first use (see the module docstring)."""
    ledger: Ledger
    seaweed: EmbeddedSeaweed | None
    _queue: Queue | None = None

    @functools.cached_property
    def reads(self) -> sessionmaker[Session]:
        """Sessions for reading only (never with ``transaction``): on SQLite they do not
        queue for the write lock (``storage.db.make_read_sessionmaker``)."""
        return make_read_sessionmaker(self.engine)

    @property
    def queue(self) -> Queue:
        """The pipeline queue (``ingest.queue``), made on first use."""
        if self._queue is None:
            from ingest.queue import open_queue
            from ingest.queue.task import pipeline_handler

            self._queue = open_queue(
                self.settings, self.engine, self.sessions, pipeline_handler(self)
            )
        return self._queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
        self.engine.dispose()
        if self.seaweed is not None:
            self.seaweed.release()


def embedded_seaweed(settings: Settings) -> EmbeddedSeaweed:
    """The private SeaweedFS of ``settings``' home (not started by this call)."""
    s3 = settings.s3
    return EmbeddedSeaweed(
        settings.home_dir / "seaweed", binary=s3.weed_binary, idle_s=s3.idle_stop_s
    )


def _bucket_marker(settings: Settings, where: str) -> Path:
    digest = hashlib.sha256(f"{where}\n{settings.s3.bucket}".encode()).hexdigest()[:16]
    return settings.home_dir / "state" / f"bucket-{digest}.checked"


def open_store(settings: Settings) -> tuple[ObjectStore, EmbeddedSeaweed | None]:
    """The object store of ``settings``, connecting on first use."""
    s3 = settings.s3
    seaweed = embedded_seaweed(settings) if s3.embedded else None
    if seaweed is not None:
        server = seaweed  # bound for the closure: mypy keeps the narrowing

        def connect() -> S3Endpoint:
            found = server.start()
            return S3Endpoint(found.endpoint, found.access_key, found.secret_key)

        # The embedded bucket lives and dies with the server's data folder.
        marker = seaweed.root / f"bucket-{s3.bucket}.checked"
    else:
        fixed = S3Endpoint(
            s3.endpoint, s3.access_key, s3.secret_key.get_secret_value(), s3.secure, s3.region
        )

        def connect() -> S3Endpoint:
            return fixed

        marker = _bucket_marker(settings, f"{s3.secure}:{s3.endpoint}")

    def prepare(store: ObjectStore) -> None:
        # Versioning and Object Lock cannot be switched off once on, so one check per home
        # suffices; a bucket someone deleted shows as NoSuchBucket on the first write.
        if marker.exists():
            return
        store.ensure_bucket()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    store = ObjectStore(bucket=s3.bucket, connect=connect, prepare=prepare, retry_s=s3.retry_s)
    return store, seaweed


def open_runtime(settings: Settings) -> Runtime:
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    key = load_log_key(settings)  # first: a missing key is a setting to fix, not an outage
    store, seaweed = open_store(settings)
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    try:
        migrate_if_needed(engine)
        sessions = make_sessionmaker(engine)
        ledger = Ledger(
            sessions=sessions,
            store=store,
            key=key,
            origin=settings.log.origin,
            retention=settings.retention,
            checkpoint_interval_ms=settings.log.checkpoint_interval_ms,
            receipt_wait_s=settings.log.receipt_wait_s,
            tsa_config=load_tsa_config(
                settings.log.tsa_url, settings.log.tsa_roots, settings.log.tsa_timeout_s
            ),
        )
    except BaseException:
        engine.dispose()
        raise
    return Runtime(settings, engine, sessions, store, ledger, seaweed)


@contextmanager
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    try:
        yield rt
    finally:
        rt.close()
