"""Commit times (and an index for the failure-streak alert): the time of the commit a run builds, as the pipeline reports it at the
run's start (`ica run start --commit-time`, by default from the agent's git checkout), so
lead time for changes (commit → production deployment) can be computed.

Revision ID: 0013_commit_time
Revises: 0012_policy_governance
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0013_commit_time"
down_revision = "0012_policy_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: no table rewrite; older runs keep NULL (unknown).
    op.add_column(
        "azdev_pipeline_run",
        sa.Column("commit_at", azdev_ica.db.types.UTCDateTime(timezone=True), nullable=True),
    )
    # A pipeline's finished runs in order: the failure-streak alert counts them.
    op.create_index(
        "ix_azdev_pipeline_run_pipeline",
        "azdev_pipeline_run",
        ["provider", "project_id", "pipeline_name", "end_time"],
    )


def downgrade() -> None:
    op.drop_index("ix_azdev_pipeline_run_pipeline", table_name="azdev_pipeline_run")
    with op.batch_alter_table("azdev_pipeline_run", schema=None) as batch_op:
        batch_op.drop_column("commit_at")
