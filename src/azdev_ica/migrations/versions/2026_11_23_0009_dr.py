"""Backups and disaster-recovery drills: append-only evidence (seed 000 §9).

Revision ID: 0009_dr
Revises: 0008_incidents
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0009_dr"
down_revision = "0008_incidents"
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
        "azdev_backup",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("taken_at", _TIME, nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("location", sa.String(length=400), nullable=False),
        sa.Column("recorded_at", _TIME, nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_backup")),
    )
    op.create_index("ix_azdev_backup_target", "azdev_backup", ["tenant", "stage", "taken_at"])
    _make_append_only("azdev_backup", (("id",),))
    op.create_table(
        "azdev_dr_drill",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("backup_id", _ID, nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("rto_seconds", sa.BigInteger(), nullable=False),
        sa.Column("rpo_seconds", sa.BigInteger(), nullable=False),
        sa.Column("rto_target_seconds", sa.BigInteger(), nullable=False),
        sa.Column("rpo_target_seconds", sa.BigInteger(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("recorded_at", _TIME, nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["azdev_backup.id"],
            name=op.f("fk_azdev_dr_drill_backup_id_azdev_backup"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_dr_drill")),
    )
    op.create_index("ix_azdev_dr_drill_target", "azdev_dr_drill", ["tenant", "finished_at"])
    _make_append_only("azdev_dr_drill", (("id",),))


def downgrade() -> None:
    raise RuntimeError(
        "backup and drill records are append-only evidence and cannot be downgraded away; "
        "restore a backup taken before the upgrade instead."
    )
