"""Scope: grants, API keys and pipeline identities take an optional stage scope (tenant isolation).

A stage scope is a list of stage names (NULL: every stage), beside the tenant scope each
grant and key already has. Pipeline identities (`ICA_OIDC_TRUST`) carry theirs in the
settings, not in the database.

Revision ID: 0015_scope
Revises: 0014_deploy_targets
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015_scope"
down_revision = "0014_deploy_targets"
branch_labels = None
depends_on = None

TABLES = ("azdev_api_key", "azdev_role_grant")


def upgrade() -> None:
    # Nullable columns without a default: no table rewrite; existing grants and keys keep
    # NULL, which means every stage (what they reached before).
    for table in TABLES:
        op.add_column(
            table,
            sa.Column(
                "stages",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            ),
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("stages")
