"""Hardening: sign-in refusals while locked are counted (one ledger entry per lockout period,
not one per request), and a check's callback token can be deleted once it is delivered.

Revision ID: 0017_hardening
Revises: 0016_ledger_trust
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0017_hardening"
down_revision = "0016_ledger_trust"
branch_labels = None
depends_on = None

_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("azdev_signin_throttle", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refused", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("refused_since", _TIME, nullable=True))
    with op.batch_alter_table("azdev_approval_callback", schema=None) as batch_op:
        batch_op.alter_column("token_sealed", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # A delivered callback's token is gone for good; the column takes an empty text instead.
    op.execute("UPDATE azdev_approval_callback SET token_sealed = '' WHERE token_sealed IS NULL")
    with op.batch_alter_table("azdev_approval_callback", schema=None) as batch_op:
        batch_op.alter_column("token_sealed", existing_type=sa.Text(), nullable=False)
    with op.batch_alter_table("azdev_signin_throttle", schema=None) as batch_op:
        batch_op.drop_column("refused_since")
        batch_op.drop_column("refused")
