"""People: persons, role grants scoped to tenants, provider-id links, personal API tokens.

Revision ID: 0003_identity
Revises: 0002_ledger
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0003_identity"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "azdev_person",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("login", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("disabled_at", _TIME, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_person")),
        sa.UniqueConstraint("login", name=op.f("uq_azdev_person_login")),
    )
    op.create_table(
        "azdev_role_grant",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.Column("granted_at", _TIME, nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("delegated_from", _ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["delegated_from"],
            ["azdev_role_grant.id"],
            name=op.f("fk_azdev_role_grant_delegated_from_azdev_role_grant"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_role_grant_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_role_grant")),
    )
    op.create_index(op.f("ix_azdev_role_grant_person_id"), "azdev_role_grant", ["person_id"])
    op.create_table(
        "azdev_person_link",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_user_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_person_link_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_person_link")),
        sa.UniqueConstraint(
            "provider",
            "provider_user_id",
            name=op.f("uq_azdev_person_link_provider_provider_user_id"),
        ),
    )
    op.create_index(op.f("ix_azdev_person_link_person_id"), "azdev_person_link", ["person_id"])
    op.create_table(
        "azdev_person_token",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("last_used_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_person_token_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_person_token")),
        sa.UniqueConstraint("prefix", name=op.f("uq_azdev_person_token_prefix")),
    )
    op.create_index(op.f("ix_azdev_person_token_person_id"), "azdev_person_token", ["person_id"])


def downgrade() -> None:
    for table in ("azdev_person_token", "azdev_person_link", "azdev_role_grant", "azdev_person"):
        op.drop_table(table)
