"""Approvals: requests bound to a run and a target, their append-only signatures, and the
outbox of side effects (notifications, provider callbacks).

Revision ID: 0004_approvals
Revises: 0003_identity
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import azdev_ica.db.types

revision = "0004_approvals"
down_revision = "0003_identity"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


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
        "azdev_approval",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_pk", _ID, nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("artifact_digest", sa.String(length=80), nullable=True),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("cost_impact_minor", sa.BigInteger(), nullable=True),
        sa.Column("budget_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("open_key", sa.String(length=120), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requester_person_id", _ID, nullable=True),
        sa.Column("requester_provider", sa.String(length=16), nullable=True),
        sa.Column("requester_provider_id", sa.String(length=200), nullable=True),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("business_first", sa.Boolean(), nullable=False),
        sa.Column("requested_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("sla_warning_due_at", _TIME, nullable=False),
        sa.Column("sla_due_at", _TIME, nullable=False),
        sa.Column("sla_warned_at", _TIME, nullable=True),
        sa.Column("escalated_at", _TIME, nullable=True),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["requester_person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_approval_requester_person_id_azdev_person"),
        ),
        sa.ForeignKeyConstraint(
            ["run_pk"],
            ["azdev_pipeline_run.id"],
            name=op.f("fk_azdev_approval_run_pk_azdev_pipeline_run"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_approval")),
        sa.UniqueConstraint("open_key", name=op.f("uq_azdev_approval_open_key")),
    )
    op.create_index(op.f("ix_azdev_approval_run_pk"), "azdev_approval", ["run_pk"])
    op.create_index("ix_azdev_approval_target", "azdev_approval", ["tenant", "stage", "status"])
    op.create_table(
        "azdev_approval_signature",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("approval_id", _ID, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("half", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("signed_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["azdev_approval.id"],
            name=op.f("fk_azdev_approval_signature_approval_id_azdev_approval"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["azdev_person.id"],
            name=op.f("fk_azdev_approval_signature_person_id_azdev_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_approval_signature")),
        sa.UniqueConstraint(
            "approval_id", "half", name=op.f("uq_azdev_approval_signature_approval_id_half")
        ),
    )
    op.create_index(
        op.f("ix_azdev_approval_signature_approval_id"), "azdev_approval_signature", ["approval_id"]
    )
    _make_append_only("azdev_approval_signature", (("id",), ("approval_id", "half")))
    op.create_table(
        "azdev_approval_callback",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("approval_id", _ID, nullable=False),
        sa.Column("plan_url", sa.String(length=2000), nullable=False),
        sa.Column("project_id", sa.String(length=100), nullable=False),
        sa.Column("hub_name", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=100), nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("timeline_id", sa.String(length=100), nullable=True),
        sa.Column("task_instance_id", sa.String(length=100), nullable=False),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("token_expires_at", _TIME, nullable=False),
        sa.Column("notified_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["azdev_approval.id"],
            name=op.f("fk_azdev_approval_callback_approval_id_azdev_approval"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_approval_callback")),
        sa.UniqueConstraint(
            "approval_id",
            "plan_id",
            "job_id",
            "task_instance_id",
            name=op.f("uq_azdev_approval_callback"),
        ),
    )
    op.create_index(
        op.f("ix_azdev_approval_callback_approval_id"), "azdev_approval_callback", ["approval_id"]
    )
    op.create_table(
        "azdev_outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_outbox")),
    )
    op.create_index("ix_azdev_outbox_due", "azdev_outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    raise RuntimeError(
        "approval signatures are append-only audit evidence and cannot be downgraded away; "
        "restore a backup taken before the upgrade instead."
    )
