"""Pipelines, part two: withdrawn approvals, every requester of a run, failed verifications.

Revision ID: 0022_pipelines2
Revises: 0021_accounts
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0022_pipelines2"
down_revision = "0021_accounts"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    # Who triggered each attempt of a run: every one of them is the run's requester.
    op.create_table(
        "azdev_pipeline_run_requester",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_pk", _ID, sa.ForeignKey("azdev_pipeline_run.id"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_user_id", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", _TIME, nullable=False),
        sa.UniqueConstraint("run_pk", "attempt"),
    )
    op.create_index(
        "ix_azdev_pipeline_run_requester_run_pk", "azdev_pipeline_run_requester", ["run_pk"]
    )


def downgrade() -> None:
    op.drop_index("ix_azdev_pipeline_run_requester_run_pk", "azdev_pipeline_run_requester")
    op.drop_table("azdev_pipeline_run_requester")
