"""The Alembic migrations build exactly the schema ``storage/tables.py`` declares, on SQLite
and PostgreSQL, and migration 0002 (device intake) downgrades cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import alembic_config, make_engine, migrate
from storage.tables import Base


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        command.downgrade(alembic_config(database_url), "0001")
        tables = set(inspect(engine).get_table_names())
        assert "uploads" not in tables and "device_events" not in tables and "devices" in tables
        assert "token_hash" not in {c["name"] for c in inspect(engine).get_columns("devices")}
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
