"""custody_events: a partial index of the unlink events

An export package lists the items taken out of its case (with the leaves that prove it); they
are found by their unlink events, a few among the custody events that every read adds.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNLINK = sa.text("action = 'unlink'")


def upgrade() -> None:
    op.create_index(
        "ix_custody_events_unlink",
        "custody_events",
        ["item_id"],
        postgresql_where=_UNLINK,
        sqlite_where=_UNLINK,
    )


def downgrade() -> None:
    op.drop_index("ix_custody_events_unlink", table_name="custody_events")
