"""actors of links, custody and device events as long as a device's ID allows

``device:`` and a 64-character device ID is 71 characters: PostgreSQL refused such a device's
uploads (``value too long for type character varying(64)``). SQLite never enforced it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("item_cases", "linked_by"), ("custody_events", "actor"), ("device_events", "actor"))


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(64), type_=sa.String(80))


def downgrade() -> None:
    # Rows longer than 64 characters would not fit back: the downgrade refuses them (PostgreSQL).
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(80), type_=sa.String(64))
