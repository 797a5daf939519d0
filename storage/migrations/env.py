"""Alembic environment: runs on the connection handed in by ``storage.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from storage.tables import Base

config = context.config
target = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(
            connection=conn,
            target_metadata=target,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"  # noqa: S101
    engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run()
