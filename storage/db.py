"""Engine and session factories that take settings; migrations applied through Alembic.

Database failures that say "not now" (the server is down or restarting, a connection dropped,
SQLite busy past its timeout) leave this layer as :class:`IndexUnavailable`, whatever code
ran the statement: the engine translates them as they happen.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import IndexUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_S = 60
"""How long a SQLite writer waits for the write lock before the index counts as unavailable."""
SQLITE_POOL = 48
"""Pooled SQLite connections kept open (the API's thread pool has 40 threads)."""
READ_ONLY_OPTION = "liuhen_read_only"
"""Execution option of read sessions' connections (see ``make_read_sessionmaker``)."""
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_HEAD = "0010"
"""The newest migration's revision (a test checks it against Alembic's head): a database at
this revision needs no migration, so a command does not even import Alembic."""


def make_engine(url: str, *, echo: bool = False, durable: bool = True) -> Engine:
    """An engine for SQLite (WAL, foreign keys, writers queue) or PostgreSQL.

    ``durable=False`` (SQLite only) does not wait for the disk at each commit: a power cut may
    undo its last commits, never one made durably after them (the WAL is one sequence, synced
    up to each durable commit). For state that is safe to redo (the queue's claims and ends).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        memory = not parsed.database or parsed.database == ":memory:"
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False},
            # A SQLite connection is a file handle: keep one per API thread rather than open
            # (and set up) a new one whenever more than the default five are busy.
            **({} if memory else {"pool_size": SQLITE_POOL, "max_overflow": SQLITE_POOL}),
        )
        _sqlite_pragmas(engine, synchronous="FULL" if durable else "NORMAL")
    else:
        # A network that drops packets, not connections, must end in an error, not a hang: a
        # connect gives up after 10 s, a silent connection is found dead by TCP keepalives in
        # about 25 s. Settings in the URL itself win.
        network = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        engine = create_engine(
            url,
            echo=echo,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            connect_args={k: v for k, v in network.items() if k not in parsed.query},
        )
    _translate_errors(engine)
    return engine


def _translate_errors(engine: Engine) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        if ctx.is_pre_ping:
            return  # a pooled connection found dead: the pool replaces it (a database restart)
        error = ctx.sqlalchemy_exception
        if ctx.is_disconnect or isinstance(error, OperationalError | InterfaceError):
            where = engine.url.render_as_string(hide_password=True)
            cause = ctx.original_exception
            raise IndexUnavailable(f"the index ({where}) is unavailable: {cause}") from (
                error if isinstance(error, DBAPIError) else cause
            )


def _sqlite_pragmas(engine: Engine, *, synchronous: str) -> None:
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
        cur.execute(f"PRAGMA synchronous={synchronous}")
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


def one_moment(session: Session) -> None:
    """Let every read of ``session`` see the same moment (call it before the first one).
    PostgreSQL's default, READ COMMITTED, gives each statement a moment of its own; a SQLite
    transaction is one snapshot already."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (on SQLite, after this
    process's turn at the write lock: :func:`writer_turn`)."""
    bind = factory.kw.get("bind")
    with writer_turn(bind) if isinstance(bind, Engine) else nullcontext():
        with factory() as session, session.begin():
            yield session


@contextmanager
def writer_turn(engine: Engine, *, timeout_s: float = SQLITE_BUSY_S) -> Iterator[None]:
    """On SQLite, the threads of one process queue for the write lock on a mutex first (one
    per database file, whatever engine they write through): SQLite's busy handler polls with
    sleeps of up to 100 ms, so many threads waiting in BEGIN IMMEDIATE leave the lock idle
    between writers; the mutex hands it on at once. (Other processes still wait on the busy
    timeout.) Elsewhere a no-op."""
    mutex = _writer_mutex(engine)
    if mutex is None:
        yield
        return
    if not mutex.acquire(timeout=timeout_s):
        raise IndexUnavailable(f"the index is busy: no write lock after {timeout_s:g} s")
    try:
        yield
    finally:
        mutex.release()


_WRITER_MUTEXES: dict[str, threading.RLock] = {}
_MUTEXES_GUARD = threading.Lock()


def _writer_mutex(engine: Engine) -> threading.RLock | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    # A file is one lock for every engine on it; an in-memory database is its engine's own.
    key = (
        _resolved(database) if database and database != ":memory:" else f"memory:{id(engine.pool)}"
    )
    with _MUTEXES_GUARD:
        mutex = _WRITER_MUTEXES.get(key)
        if mutex is None:
            mutex = _WRITER_MUTEXES[key] = threading.RLock()
    return mutex


def _resolved(database: str) -> str:
    """The database file's real path (every write transaction asks: an absolute name is
    resolved once; a relative one depends on the working directory)."""
    return (
        _resolved_absolute(database) if os.path.isabs(database) else str(Path(database).resolve())
    )


@functools.lru_cache(maxsize=64)
def _resolved_absolute(database: str) -> str:
    return str(Path(database).resolve())


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
