"""Gates, deployment locks and emergency overrides.

Revision ID: 0005_gates
Revises: 0004_approvals
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import azdev_ica.db.types

revision = "0005_gates"
down_revision = "0004_approvals"
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


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def upgrade() -> None:
    op.create_table(
        "azdev_deploy_lock",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("holder_run_pk", _ID, nullable=True),
        sa.Column("holder_run_key", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", _TIME, nullable=True),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        _fk("azdev_deploy_lock", "holder_run_pk", "azdev_pipeline_run"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_deploy_lock")),
        sa.UniqueConstraint("tenant", "stage", name=op.f("uq_azdev_deploy_lock_tenant_stage")),
    )
    op.create_table(
        "azdev_lock_waiter",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("run_pk", _ID, nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("queued_at", _TIME, nullable=False),
        sa.Column("last_seen_at", _TIME, nullable=False),
        _fk("azdev_lock_waiter", "run_pk", "azdev_pipeline_run"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_lock_waiter")),
        sa.UniqueConstraint(
            "tenant", "stage", "run_pk", name=op.f("uq_azdev_lock_waiter_tenant_stage_run_pk")
        ),
    )
    op.create_table(
        "azdev_gate_decision",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_pk", _ID, nullable=True),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("artifact_digest", sa.String(length=80), nullable=True),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("codes", _JSON, nullable=False),
        sa.Column("approval_id", sa.BigInteger(), nullable=True),
        sa.Column("override_id", sa.BigInteger(), nullable=True),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("decided_at", _TIME, nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        _fk("azdev_gate_decision", "run_pk", "azdev_pipeline_run"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_gate_decision")),
    )
    op.create_index(
        "ix_azdev_gate_decision_run",
        "azdev_gate_decision",
        ["run_pk", "tenant", "stage", "status"],
    )
    _make_append_only("azdev_gate_decision", (("id",),))
    op.create_table(
        "azdev_override",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_pk", _ID, nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("artifact_digest", sa.String(length=80), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("signatures_required", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", _TIME, nullable=False),
        sa.Column("signed_at", _TIME, nullable=True),
        sa.Column("policy_hash", sa.String(length=64), nullable=False),
        sa.Column("review_due_at", _TIME, nullable=True),
        sa.Column("review_escalated_at", _TIME, nullable=True),
        sa.Column("reviewed_at", _TIME, nullable=True),
        sa.Column("reviewed_by", _ID, nullable=True),
        sa.Column("review_findings", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        _fk("azdev_override", "run_pk", "azdev_pipeline_run"),
        _fk("azdev_override", "reviewed_by", "azdev_person"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_override")),
    )
    op.create_index(op.f("ix_azdev_override_run_pk"), "azdev_override", ["run_pk"])
    op.create_index("ix_azdev_override_target", "azdev_override", ["tenant", "stage", "status"])
    op.create_table(
        "azdev_override_signature",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("override_id", _ID, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("signed_at", _TIME, nullable=False),
        _fk("azdev_override_signature", "override_id", "azdev_override"),
        _fk("azdev_override_signature", "person_id", "azdev_person"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_override_signature")),
        sa.UniqueConstraint(
            "override_id",
            "person_id",
            name=op.f("uq_azdev_override_signature_override_id_person_id"),
        ),
    )
    op.create_index(
        op.f("ix_azdev_override_signature_override_id"),
        "azdev_override_signature",
        ["override_id"],
    )
    _make_append_only("azdev_override_signature", (("id",), ("override_id", "person_id")))
    op.create_table(
        "azdev_unauthorised_change",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_pk", _ID, nullable=False),
        sa.Column("run_key", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("detected_at", _TIME, nullable=False),
        _fk("azdev_unauthorised_change", "run_pk", "azdev_pipeline_run"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_unauthorised_change")),
        sa.UniqueConstraint(
            "run_pk", "event_id", name=op.f("uq_azdev_unauthorised_change_run_pk_event_id")
        ),
    )
    op.create_index(
        op.f("ix_azdev_unauthorised_change_run_pk"), "azdev_unauthorised_change", ["run_pk"]
    )
    _make_append_only("azdev_unauthorised_change", (("id",), ("run_pk", "event_id")))


def downgrade() -> None:
    raise RuntimeError(
        "gate decisions and override signatures are append-only audit evidence and cannot be "
        "downgraded away; restore a backup taken before the upgrade instead."
    )
