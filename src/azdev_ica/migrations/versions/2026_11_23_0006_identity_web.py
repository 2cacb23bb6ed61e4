"""Web sign-in: local credentials (argon2, TOTP), sign-in throttling and sessions.

Revision ID: 0006_identity_web
Revises: 0005_gates
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import azdev_ica.db.types

revision = "0006_identity_web"
down_revision = "0005_gates"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "azdev_credential",
        sa.Column("person_id", _ID, autoincrement=False, nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("password_set_at", _TIME, nullable=True),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=True),
        sa.Column("totp_enrolled_at", _TIME, nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_credential_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_azdev_credential")),
    )
    op.create_table(
        "azdev_signin_throttle",
        sa.Column("login_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", _TIME, nullable=False),
        sa.Column("locked_until", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("login_key", name=op.f("pk_azdev_signin_throttle")),
    )
    op.create_table(
        "azdev_web_session",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("last_seen_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("extra_grants", _JSON, nullable=True),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_web_session_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_web_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_azdev_web_session_token_hash")),
    )
    op.create_index(op.f("ix_azdev_web_session_person_id"), "azdev_web_session", ["person_id"])


def downgrade() -> None:
    for table in ("azdev_web_session", "azdev_signin_throttle", "azdev_credential"):
        op.drop_table(table)
