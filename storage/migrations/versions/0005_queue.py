"""the pipeline queue on procrastinate (PostgreSQL only)

PostgreSQL gets procrastinate's schema (the ``schema.sql`` of the installed procrastinate,
pinned in pyproject.toml: a newer procrastinate brings its SQL migrations, applied by a later
revision), the jobs still waiting in the old ``jobs`` table move into it, and that table goes.
SQLite keeps the ``jobs`` table: the embedded runner (``ingest.queue.sqlite``) uses it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MOVE_PENDING = """
SELECT procrastinate_defer_jobs_v1(ARRAY(
    SELECT ROW('pipeline', 'liuhen.pipeline', 0, item_id, item_id,
               jsonb_build_object('item_id', item_id), NULL)::procrastinate_job_to_defer_v1
    FROM jobs WHERE state IN ('queued', 'running') ORDER BY due_at))
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    # The driver runs the script as it is (several statements; no bind parameters in it).
    driver = op.get_bind().connection.driver_connection
    assert driver is not None  # noqa: S101 - a live connection runs the migration
    driver.execute(SchemaManager.get_schema())
    # Every liuhen job has a lock (its item): procrastinate's fetch checks each candidate's
    # lock against the pending jobs, and its own indexes do not lead with ``lock``. Without
    # this index, and with stale statistics after a burst into an empty table, one fetch
    # costs O(pending) lookups of O(pending) each: 450 ms at 4,000 pending, 0.07 ms with it
    # and fresh statistics (measured; bench/scale.py). The queue table churns: analyse often.
    op.execute(
        sa.text(
            "CREATE INDEX liuhen_procrastinate_jobs_pending_lock ON procrastinate_jobs (lock)"
            " WHERE status IN ('todo', 'doing')"
        )
    )
    op.execute(
        sa.text(
            "ALTER TABLE procrastinate_jobs SET (autovacuum_analyze_scale_factor = 0.02,"
            " autovacuum_analyze_threshold = 200, autovacuum_vacuum_scale_factor = 0.05)"
        )
    )
    op.execute(sa.text(_MOVE_PENDING))
    op.drop_index("ix_jobs_state_due", table_name="jobs")
    op.drop_table("jobs")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_table(
        "jobs",
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("locked_until", storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_jobs_item_id_items")),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_state_due", "jobs", ["state", "due_at"], unique=False)
    op.execute(
        sa.text(
            "INSERT INTO jobs (item_id, state, attempts, due_at, updated_at)"
            " SELECT DISTINCT ON (lock) lock, 'queued', 0, now(), now() FROM procrastinate_jobs"
            " WHERE status IN ('todo', 'doing') AND lock IS NOT NULL ORDER BY lock, id"
        )
    )
    op.execute(
        sa.text(
            "DROP TABLE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,"
            " procrastinate_workers CASCADE"
        )
    )
    op.execute(
        sa.text(
            "DO $$ DECLARE f record; BEGIN"
            " FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p"
            "  WHERE p.proname LIKE 'procrastinate%' LOOP"
            "  EXECUTE 'DROP FUNCTION IF EXISTS ' || f.sig || ' CASCADE'; END LOOP;"
            " DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,"
            "  procrastinate_job_status CASCADE; END $$"
        )
    )
