"""GitHub custom deployment protection rule: the reviews ICA owes GitHub.

Revision ID: 0010_github_reviews
Revises: 0009_dr
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0010_github_reviews"
down_revision = "0009_dr"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "azdev_github_review",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=255), nullable=False),
        sa.Column("installation_id", sa.BigInteger(), nullable=False),
        sa.Column("callback_url", sa.String(length=2000), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("approval_id", _ID, nullable=True),
        sa.Column("answer", sa.String(length=16), nullable=True),
        sa.Column("answered_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["azdev_approval.id"],
            name=op.f("fk_azdev_github_review_approval_id_azdev_approval"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_github_review")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_azdev_github_review_delivery_id")),
    )
    op.create_index(
        op.f("ix_azdev_github_review_approval_id"), "azdev_github_review", ["approval_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_azdev_github_review_approval_id"), table_name="azdev_github_review")
    op.drop_table("azdev_github_review")
