"""Everything a liuhen process talks to, opened from settings and closed on exit.

The embedded profile starts (or joins) the private SeaweedFS of its home; every profile
migrates the index, checks the bucket has versioning + Object Lock, and loads the log key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from configs.settings import Settings
from ingest.ledger import Ledger, load_tsa_config
from integrity.log import load_or_create_key
from storage.db import make_engine, make_sessionmaker, migrate
from storage.objects import ObjectStore
from storage.seaweed import EmbeddedSeaweed

if TYPE_CHECKING:
    from ingest.queue import Queue


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    ledger: Ledger
    seaweed: EmbeddedSeaweed | None
    _queue: Queue | None = None

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
            self.seaweed = None


def open_store(settings: Settings) -> tuple[ObjectStore, EmbeddedSeaweed | None]:
    s3 = settings.s3
    seaweed = None
    if s3.embedded:
        seaweed = EmbeddedSeaweed(settings.home_dir / "seaweed", binary=s3.weed_binary)
        server = seaweed.start()
        endpoint, access, secret = server.endpoint, server.access_key, server.secret_key
    else:
        endpoint, access, secret = s3.endpoint, s3.access_key, s3.secret_key.get_secret_value()
    try:
        store = ObjectStore(
            endpoint=endpoint,
            access_key=access,
            secret_key=secret,
            bucket=s3.bucket,
            secure=s3.secure,
            region=s3.region,
        )
        store.ensure_bucket()
    except BaseException:
        if seaweed is not None:
            seaweed.release()
        raise
    return store, seaweed


def open_runtime(settings: Settings) -> Runtime:
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    store, seaweed = open_store(settings)
    try:
        engine = make_engine(settings.database_url, echo=settings.database.echo)
        migrate(engine)
        sessions = make_sessionmaker(engine)
        key = load_or_create_key(settings.log_key_path, name=settings.log.origin)
        ledger = Ledger(
            sessions=sessions,
            store=store,
            key=key,
            origin=settings.log.origin,
            retention=settings.retention,
            tsa_config=load_tsa_config(
                settings.log.tsa_url, settings.log.tsa_roots, settings.log.tsa_timeout_s
            ),
        )
    except BaseException:
        if seaweed is not None:
            seaweed.release()
        raise
    return Runtime(settings, engine, sessions, store, ledger, seaweed)


@contextmanager
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings)
    try:
        yield rt
    finally:
        rt.close()
