"""Governed policy changes: proposals signed by two approvers; and the once-per-period
drill-overdue warnings of the daily DR job.

Revision ID: 0012_policy_governance
Revises: 0011_promotion
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0012_policy_governance"
down_revision = "0011_promotion"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def _make_append_only(table: str, keys: tuple[tuple[str, ...], ...]) -> None:
    """Refuse UPDATE, DELETE, TRUNCATE (PostgreSQL) and INSERT OR REPLACE (SQLite) on `table`.

    A frozen copy of the ledger migration's helper: migrations never import each other.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION azdev_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION azdev_refuse_change()"
        )
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only")
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'append-only table {table}: {verb} refused'); END"
        )
    collides = " OR ".join(
        f"EXISTS (SELECT 1 FROM {table} WHERE "
        + " AND ".join(f"{column} = NEW.{column}" for column in key)
        + ")"
        for key in keys
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} WHEN {collides} "
        f"BEGIN SELECT RAISE(ABORT, 'append-only table {table}: REPLACE refused'); END"
    )


def upgrade() -> None:
    op.create_table(
        "azdev_policy_proposal",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("base_version_id", sa.BigInteger(), nullable=True),
        sa.Column("base_sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("signatures_required", sa.Integer(), nullable=False),
        sa.Column("proposed_by", sa.String(length=200), nullable=False),
        sa.Column("proposed_at", _TIME, nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=True),
        sa.Column("closed_at", _TIME, nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_policy_proposal")),
    )
    op.create_index("ix_azdev_policy_proposal_status", "azdev_policy_proposal", ["status", "id"])
    op.create_table(
        "azdev_policy_signature",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("proposal_id", _ID, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("signed_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["azdev_policy_proposal.id"],
            name=op.f("fk_azdev_policy_signature_proposal_id_azdev_policy_proposal"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_policy_signature_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_policy_signature")),
        sa.UniqueConstraint(
            "proposal_id", "person_id", name=op.f("uq_azdev_policy_signature_proposal_id_person_id")
        ),
    )
    op.create_index(
        op.f("ix_azdev_policy_signature_proposal_id"),
        "azdev_policy_signature",
        ["proposal_id"],
    )
    _make_append_only("azdev_policy_signature", (("id",), ("proposal_id", "person_id")))
    # The daily drill-overdue warning, once per tenant and overdue period (seed 000 §9).
    op.create_table(
        "azdev_dr_overdue_warning",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("since", sa.String(length=40), nullable=False),
        sa.Column("warned_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_dr_overdue_warning")),
        sa.UniqueConstraint(
            "tenant", "since", name=op.f("uq_azdev_dr_overdue_warning_tenant_since")
        ),
    )


def downgrade() -> None:
    raise RuntimeError(
        "policy signatures are append-only evidence and cannot be downgraded away; "
        "restore a backup taken before the upgrade instead."
    )
