"""The audit ledger: inbox, yearly shards, entries, tree nodes, checkpoints, keys, personal data
openings, job leases. Replaces `azdev_audit_record` (its rows move to the inbox, in order).

Revision ID: 0002_ledger
Revises: 0001_foundation
Create Date: 2026-11-23
"""

from __future__ import annotations

import json
from datetime import UTC

import rfc8785
import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0002_ledger"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

# Table -> the column sets that identify a row (the INSERT OR REPLACE guard checks each).
APPEND_ONLY = {
    "azdev_audit_inbox": (("id",),),
    "azdev_audit_shard": (("year",), ("origin",)),
    "azdev_audit_entry": (("year", "idx"), ("inbox_id",)),
    "azdev_audit_node": (("year", "seq"),),
    "azdev_audit_tree": (("year", "size"),),
    "azdev_audit_checkpoint": (("year", "size"),),
    "azdev_audit_key": (("id",), ("vkey",)),
}

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = azdev_ica.db.types.UTCDateTime(timezone=True)


def _make_append_only(table: str, keys: tuple[tuple[str, ...], ...]) -> None:
    """Refuse UPDATE, DELETE, TRUNCATE (PostgreSQL) and INSERT OR REPLACE (SQLite) on `table`.

    The PostgreSQL function `azdev_refuse_change()` comes from the foundation migration.
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
        # ALWAYS: the triggers fire even with session_replication_role = replica.
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only")
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'append-only table {table}: {verb} refused'); END"
        )
    # INSERT OR REPLACE deletes a conflicting row without firing DELETE triggers (unless
    # recursive_triggers is on): refuse any insert that collides with a kept row on any key.
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
        "azdev_audit_inbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_audit_inbox")),
    )
    op.create_index(op.f("ix_azdev_audit_inbox_txid"), "azdev_audit_inbox", ["txid"])
    op.create_table(
        "azdev_audit_shard",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("opened_at", _TIME, nullable=False),
        sa.Column("previous_checkpoint", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_azdev_audit_shard")),
        sa.UniqueConstraint("origin", name=op.f("uq_azdev_audit_shard_origin")),
    )
    op.create_table(
        "azdev_audit_entry",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("inbox_id", sa.BigInteger(), nullable=True),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("year", "idx", name=op.f("pk_azdev_audit_entry")),
        sa.UniqueConstraint("inbox_id", name=op.f("uq_azdev_audit_entry_inbox_id")),
    )
    op.create_index("ix_azdev_audit_entry_actor", "azdev_audit_entry", ["actor_id"])
    op.create_index(
        "ix_azdev_audit_entry_subject", "azdev_audit_entry", ["subject_type", "subject_id"]
    )
    op.create_index("ix_azdev_audit_entry_time", "azdev_audit_entry", ["time"])
    op.create_table(
        "azdev_audit_node",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("year", "seq", name=op.f("pk_azdev_audit_node")),
    )
    op.create_table(
        "azdev_audit_tree",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("edge", sa.LargeBinary(), nullable=False),
        sa.Column("inbox_cursor", sa.BigInteger(), nullable=False),
        sa.Column("inbox_floor", sa.BigInteger(), nullable=False),
        sa.Column("sealed_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("year", "size", name=op.f("pk_azdev_audit_tree")),
    )
    op.create_table(
        "azdev_audit_checkpoint",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("key_name", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("signed_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("year", "size", name=op.f("pk_azdev_audit_checkpoint")),
    )
    op.create_table(
        "azdev_audit_key",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("vkey", sa.String(length=300), nullable=False),
        sa.Column("valid_from", _TIME, nullable=False),
        sa.Column("registered_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_azdev_audit_key")),
        sa.UniqueConstraint("vkey", name=op.f("uq_azdev_audit_key_vkey")),
    )
    op.create_table(
        "azdev_audit_personal",
        sa.Column("commitment", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("commitment", name=op.f("pk_azdev_audit_personal")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_azdev_audit_personal_kind_value")),
    )
    op.create_table(
        "azdev_job_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_azdev_job_lease")),
    )
    _move_audit_records()
    op.drop_table("azdev_audit_record")
    for table, keys in APPEND_ONLY.items():
        _make_append_only(table, keys)


def _move_audit_records() -> None:
    """Queue the foundation's audit records for sealing, oldest first, in the entry body format
    (`at` becomes `time`; the version moves to the entry's envelope)."""
    bind = op.get_bind()
    old = sa.table(
        "azdev_audit_record",
        sa.column("id", sa.BigInteger()),
        sa.column("recorded_at", _TIME),
        sa.column("action", sa.String()),
        sa.column("actor_kind", sa.String()),
        sa.column("actor_id", sa.String()),
        sa.column("subject_type", sa.String()),
        sa.column("subject_id", sa.String()),
        sa.column("tenant", sa.String()),
        sa.column("record", sa.Text()),
    )
    inbox = sa.table(
        "azdev_audit_inbox",
        sa.column("txid", sa.BigInteger()),
        sa.column("created_at", _TIME),
        sa.column("action", sa.String()),
        sa.column("actor_kind", sa.String()),
        sa.column("actor_id", sa.String()),
        sa.column("subject_type", sa.String()),
        sa.column("subject_id", sa.String()),
        sa.column("tenant", sa.String()),
        sa.column("body", sa.LargeBinary()),
    )
    rows = bind.execute(sa.select(old).order_by(old.c.id)).mappings().all()
    moved = []
    for row in rows:
        record = json.loads(row["record"])
        body = {
            "action": record["action"],
            "actor": record["actor"],
            "data": record.get("data", {}),
            "subject": record["subject"],
            "tenant": record.get("tenant"),
            "time": record.get("at")
            or row["recorded_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        moved.append(
            {
                "txid": 0,
                "created_at": row["recorded_at"],
                "action": row["action"],
                "actor_kind": row["actor_kind"],
                "actor_id": row["actor_id"],
                "subject_type": row["subject_type"],
                "subject_id": row["subject_id"],
                "tenant": row["tenant"],
                "body": rfc8785.dumps(body),
            }
        )
    for start in range(0, len(moved), 1000):
        bind.execute(sa.insert(inbox), moved[start : start + 1000])


def downgrade() -> None:
    raise RuntimeError(
        "the audit ledger cannot be downgraded: that would destroy the audit history. "
        "Restore a backup taken before the upgrade instead."
    )
