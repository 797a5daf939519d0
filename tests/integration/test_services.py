"""The test services themselves: on a machine with no PostgreSQL running (a user's fresh
machine) the suite starts a private one from the pgserver wheel; prove that path works."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from storage.db import make_engine, migrate
from tests.services import PostgresServer


def test_private_postgresql_from_the_wheel(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path, use_running=False)
    try:
        with server.database() as url:
            assert "host=" in url  # a private server on its own socket, not 127.0.0.1:5432
            engine = make_engine(url)
            migrate(engine)
            with engine.connect() as conn:
                size = conn.execute(text("SELECT size FROM log_state WHERE id = 1")).scalar_one()
                version = conn.execute(text("SHOW server_version")).scalar_one()
            engine.dispose()
        assert size == 0
        assert version.split(".")[0].isdigit()
    finally:
        server.close()
