"""Engine and session factories that take settings; migrations applied through Alembic.

Database failures that say "not now" (the server is down or restarting, a connection dropped,
SQLite busy past its timeout) leave this layer as :class:`IndexUnavailable`, whatever code
ran the statement: the engine translates them as they happen.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from storage.errors import IndexUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_S = 60
"""How long a SQLite writer waits for the write lock before the index counts as unavailable."""
READ_ONLY_OPTION = "liuhen_read_only"
"""Execution option of read sessions' connections (see ``make_read_sessionmaker``)."""
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_HEAD = "0005"
"""The newest migration's revision (a test checks it against Alembic's head): a database at
this revision needs no migration, so a command does not even import Alembic."""


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for SQLite (WAL, foreign keys, writers queue) or PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False}
        )
        _sqlite_pragmas(engine)
    else:
        engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    _translate_errors(engine)
    return engine


def _translate_errors(engine: Engine) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        error = ctx.sqlalchemy_exception
        if ctx.is_disconnect or isinstance(error, OperationalError | InterfaceError):
            where = engine.url.render_as_string(hide_password=True)
            cause = ctx.original_exception
            raise IndexUnavailable(f"the index ({where}) is unavailable: {cause}") from (
                error if isinstance(error, DBAPIError) else cause
            )


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off so that BEGIN IMMEDIATE below is ours:
        # every transaction takes the write lock up front, so two writers queue on the busy
        # timeout instead of failing when a read lock cannot be upgraded.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read session (``make_read_sessionmaker``) takes no write lock: WAL readers see
        # the last commit and neither wait for the writer nor make it wait.
        read = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read (never inside ``transaction``). On SQLite their transactions
    begin DEFERRED instead of IMMEDIATE: many readers run beside the one writer (WAL) instead
    of queueing behind it for the write lock. Same pool, same engine; on PostgreSQL the same
    as :func:`make_sessionmaker`."""
    reading = engine.execution_options(**{READ_ONLY_OPTION: True})
    return sessionmaker(reading, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    On SQLite the threads of one process queue for the write lock on a mutex of their own
    first: SQLite's busy handler polls with sleeps of up to 100 ms, so many threads waiting
    in BEGIN IMMEDIATE leave the lock idle between writers; the mutex hands it on at once.
    (Other processes still wait on the busy timeout.)"""
    mutex = _writer_mutex(factory)
    if mutex is not None and not mutex.acquire(timeout=SQLITE_BUSY_S):
        raise IndexUnavailable(f"the index is busy: no write lock after {SQLITE_BUSY_S} s")
    try:
        with factory() as session, session.begin():
            yield session
    finally:
        if mutex is not None:
            mutex.release()


_WRITER_MUTEXES: weakref.WeakKeyDictionary[Pool, threading.RLock] = weakref.WeakKeyDictionary()
_MUTEXES_GUARD = threading.Lock()


def _writer_mutex(factory: sessionmaker[Session]) -> threading.RLock | None:
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine) or bind.dialect.name != "sqlite":
        return None
    with _MUTEXES_GUARD:  # one per pool: an engine and its execution-option copies share it
        mutex = _WRITER_MUTEXES.get(bind.pool)
        if mutex is None:
            mutex = _WRITER_MUTEXES[bind.pool] = threading.RLock()
    return mutex


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def schema_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None before the first migration."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(rev) if rev is not None else None


def migrate_if_needed(engine: Engine) -> None:
    """Migrate unless the schema is already at SCHEMA_HEAD (the common case: one query)."""
    if schema_revision(engine) != SCHEMA_HEAD:
        migrate(engine)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe for concurrent starters)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes starting together must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7310851)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
