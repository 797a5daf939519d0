"""Alembic environment: runs on the connection handed in by ``storage.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.tables import Base

config = context.config
target = Base.metadata


def _migrate(connection: Connection) -> None:
    # SQLite alters tables by copying them (batch mode); PostgreSQL alters in place.
    context.configure(
        connection=connection,
        target_metadata=target,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:  # handed in by storage.db.migrate
        _migrate(conn)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"  # noqa: S101
    with create_engine(url).begin() as connection:  # the alembic command line
        _migrate(connection)


run()
