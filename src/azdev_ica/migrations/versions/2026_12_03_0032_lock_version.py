"""Deployment locks: a version, bumped by every change of a lock or of its queue (issue 21).

The gate's facts statement (PostgreSQL) reads a target's queue in its own snapshot and locks
the target's lock row (FOR UPDATE), which it reads as it is once locked. When the version it
locked is the version of its snapshot, no change of the lock or its queue committed in
between, and the queue it read is the queue behind the lock: the evaluation needs no second
read of it after the lock (one round trip fewer). Otherwise it reads the queue again.

Revision ID: 0032_lock_version
Revises: 0031_proof_leaves
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032_lock_version"
down_revision = "0031_proof_leaves"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("azdev_deploy_lock") as batch:
        batch.add_column(
            sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("azdev_deploy_lock") as batch:
        batch.drop_column("version")
