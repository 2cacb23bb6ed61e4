"""Observe: SIEM forwarding cursors per destination, kept monthly compliance reports.

Revision ID: 0023_observe
Revises: 0022_pipelines2
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0023_observe"
down_revision = "0022_pipelines2"
branch_labels = None
depends_on = None

_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "azdev_siem_cursor",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("idx", sa.BigInteger(), nullable=True),
        sa.Column("forwarded", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("last_sent_at", _TIME, nullable=True),
        sa.Column("failing_since", _TIME, nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("alerted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("destination", name="pk_azdev_siem_cursor"),
    )
    op.create_table(
        "azdev_monthly_report",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("generated_at", _TIME, nullable=False),
        sa.Column("json_text", sa.Text(), nullable=False),
        sa.Column("html_text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("month", name="pk_azdev_monthly_report"),
    )


def downgrade() -> None:
    op.drop_table("azdev_monthly_report")
    op.drop_table("azdev_siem_cursor")
