"""Accounts: enrolment links, credentials set only by their person, step-up.

Revision ID: 0021_accounts
Revises: 0020_witness
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0021_accounts"
down_revision = "0020_witness"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "azdev_enrolment_link",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("person_id", _ID, sa.ForeignKey("azdev_person.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
    )
    op.create_index("ix_azdev_enrolment_link_person_id", "azdev_enrolment_link", ["person_id"])
    op.create_table(
        "azdev_recovery_code",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("person_id", _ID, sa.ForeignKey("azdev_person.id"), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
    )
    op.create_index("ix_azdev_recovery_code_person_id", "azdev_recovery_code", ["person_id"])
    with op.batch_alter_table("azdev_web_session") as batch:
        batch.add_column(sa.Column("stepped_up_at", _TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("azdev_web_session") as batch:
        batch.drop_column("stepped_up_at")
    op.drop_index("ix_azdev_recovery_code_person_id", table_name="azdev_recovery_code")
    op.drop_table("azdev_recovery_code")
    op.drop_index("ix_azdev_enrolment_link_person_id", table_name="azdev_enrolment_link")
    op.drop_table("azdev_enrolment_link")
