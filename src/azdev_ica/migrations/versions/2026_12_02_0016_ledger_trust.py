"""Ledger trust: why the ledger stopped sealing (stall reasons, one row per source).

Revision ID: 0016_ledger_trust
Revises: 0015_scope
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0016_ledger_trust"
down_revision = "0015_scope"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Why the ledger stopped sealing, one row per source (services/ledger_status.py).
    op.create_table(
        "azdev_ledger_stall",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", azdev_ica.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", azdev_ica.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("alerted_at", azdev_ica.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_azdev_ledger_stall")),
    )


def downgrade() -> None:
    op.drop_table("azdev_ledger_stall")
