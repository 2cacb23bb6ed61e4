"""Incidents: the incident, its append-only timeline, its follow-up tasks.

Revision ID: 0008_incidents
Revises: 0007_ledger_speed
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0008_incidents"
down_revision = "0007_ledger_speed"
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
        "azdev_incident",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("run_pk", _ID, nullable=True),
        sa.Column("run_key", sa.String(length=200), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", _TIME, nullable=False),
        sa.Column("opened_by", sa.String(length=200), nullable=False),
        sa.Column("detected_at", _TIME, nullable=False),
        sa.Column("restore_due_at", _TIME, nullable=True),
        sa.Column("mitigated_at", _TIME, nullable=True),
        sa.Column("resolved_at", _TIME, nullable=True),
        sa.Column("closed_at", _TIME, nullable=True),
        sa.Column("rca", sa.Text(), nullable=True),
        sa.Column("rca_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"],
            ["azdev_pipeline_run.id"],
            name=op.f("fk_azdev_incident_run_pk_azdev_pipeline_run"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_incident")),
    )
    op.create_index("ix_azdev_incident_tenant_status", "azdev_incident", ["tenant", "status"])
    op.create_table(
        "azdev_incident_note",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["azdev_incident.id"],
            name=op.f("fk_azdev_incident_note_incident_id_azdev_incident"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_incident_note")),
    )
    op.create_index(
        op.f("ix_azdev_incident_note_incident_id"), "azdev_incident_note", ["incident_id"]
    )
    _make_append_only("azdev_incident_note", (("id",),))
    op.create_table(
        "azdev_incident_task",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("due_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("done_at", _TIME, nullable=True),
        sa.Column("done_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["azdev_incident.id"],
            name=op.f("fk_azdev_incident_task_incident_id_azdev_incident"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_incident_task")),
    )
    op.create_index(
        op.f("ix_azdev_incident_task_incident_id"), "azdev_incident_task", ["incident_id"]
    )


def downgrade() -> None:
    raise RuntimeError(
        "incident timelines are append-only evidence and cannot be downgraded away; "
        "restore a backup taken before the upgrade instead."
    )
