"""the log's tree: tiles and the signer's state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000

An index made before this revision has leaves and checkpoints but no tiles: ``log_tree``
starts at size 0 and the next signing builds the tiles from the leaf rows once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_tree",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_tree")),
    )
    op.create_table(
        "log_tiles",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_log_tiles")),
    )
    log_tree = sa.table(
        "log_tree",
        sa.column("id", sa.Integer),
        sa.column("size", sa.BigInteger),
        sa.column("root_hash", sa.LargeBinary),
    )
    op.bulk_insert(log_tree, [{"id": 1, "size": 0, "root_hash": hashlib.sha256(b"").digest()}])


def downgrade() -> None:
    op.drop_table("log_tiles")
    op.drop_table("log_tree")
