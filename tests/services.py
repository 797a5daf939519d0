"""Real services for the tests: a SeaweedFS S3 server and a PostgreSQL server, started here.

PostgreSQL: the server at 127.0.0.1:5432 when one answers (a throwaway database per use),
else a private one from the ``pgserver`` wheel. SeaweedFS: liuhen's own embedded launcher
(``weed server -s3`` with generated credentials) in a temporary directory.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from storage.seaweed import EmbeddedS3, EmbeddedSeaweed

PG_HOST = os.environ.get("LIUHEN_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LIUHEN_TEST_PG_PORT", "5432"))


def _pg_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            pass
    except OSError:
        return False
    try:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=3
        ):
            return True
    except psycopg.Error:
        return False


class PostgresServer:
    """Hands out throwaway databases on a running server (started here when none runs)."""

    def __init__(self, root: Path, *, use_running: bool = True) -> None:
        self._private: Any = None
        if use_running and _pg_answers():
            self.base = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}"
            self._admin: dict[str, Any] = {
                "host": PG_HOST,
                "port": PG_PORT,
                "user": "postgres",
                "dbname": "postgres",
            }
        else:
            import pgserver

            start = pgserver.get_server  # type: ignore[attr-defined]
            self._private = start(root / "pgdata", cleanup_mode="stop")
            uri = self._private.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
            self.base = uri.replace("postgresql://", "postgresql+psycopg://").split("/postgres?")[0]
            self._host = uri.split("host=")[1]
            self._admin = {"host": self._host, "user": "postgres", "dbname": "postgres"}

    def url(self, dbname: str) -> str:
        if self._private is not None:
            return f"{self.base}/{dbname}?host={self._host}"
        return f"{self.base}/{dbname}"

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"liuhen_test_{secrets.token_hex(6)}"
        with psycopg.connect(**self._admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(**self._admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self._private is not None:
            self._private.cleanup()


@contextmanager
def seaweedfs(root: Path) -> Iterator[EmbeddedS3]:
    """A private SeaweedFS for the duration of the block, stopped after it (not left to idle)."""
    server = EmbeddedSeaweed(root)
    s3 = server.start()
    try:
        yield s3
    finally:
        server.release()
        server.stop()
