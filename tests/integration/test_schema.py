"""The Alembic migrations build exactly the schema ``storage/tables.py`` declares, on SQLite
and PostgreSQL, and migration 0002 (device intake) downgrades cleanly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from storage.db import alembic_config, make_engine, migrate
from storage.tables import Base


def _ours(postgresql: bool) -> Callable[..., bool]:
    """What the comparison covers: not procrastinate's own schema, and on PostgreSQL not the
    SQLite runner's ``jobs`` table (migration 0005 hands PostgreSQL's jobs to procrastinate)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        table_name = name if type_ == "table" else getattr(table, "name", None)
        if (table_name or "").startswith("procrastinate") or (name or "").startswith(
            "procrastinate"
        ):
            return False
        return not (postgresql and table_name == "jobs")

    return include


def _diff(conn: Connection) -> list[Any]:
    opts = {"include_object": _ours(conn.dialect.name == "postgresql")}
    return list(compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata))


# SQLite cannot reflect an expression index (ix_items_time_id): it is left out of the
# comparison there, and compared on PostgreSQL.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_migrations_match_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = _diff(conn)
        assert diff == []
        command.downgrade(alembic_config(database_url), "0001")
        tables = set(inspect(engine).get_table_names())
        assert "uploads" not in tables and "device_events" not in tables and "devices" in tables
        assert "token_hash" not in {c["name"] for c in inspect(engine).get_columns("devices")}
        migrate(engine)
        with engine.connect() as conn:
            assert _diff(conn) == []
    finally:
        engine.dispose()
