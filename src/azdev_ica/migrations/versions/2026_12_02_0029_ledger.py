"""Ledger: inclusion proofs and audit windows at ten million entries (issue 21).

Adds azdev_audit_time_block: for each complete block of 4096 entries of a shard, the earliest
and latest action time among them (append-only, written by the sealer). Audit queries with a
time window read only the span of blocks that can hold the window's entries. Existing complete
blocks are filled here from the entries.

Revision ID: 0029_ledger
Revises: 0028_gate
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import azdev_ica.db.types

revision = "0029_ledger"
down_revision = "0028_gate"
branch_labels = None
depends_on = None

_TABLE = "azdev_audit_time_block"
_BLOCK_SIZE = 4096  # frozen copy of db.tables.AUDIT_BLOCK_SIZE
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
        _TABLE,
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("min_time", _TIME, nullable=False),
        sa.Column("max_time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("year", "block", name=op.f("pk_azdev_audit_time_block")),
    )
    op.execute(
        f"INSERT INTO {_TABLE} (year, block, min_time, max_time) "
        f"SELECT year, idx / {_BLOCK_SIZE}, min(time), max(time) FROM azdev_audit_entry "
        f"GROUP BY year, idx / {_BLOCK_SIZE} HAVING count(*) = {_BLOCK_SIZE}"
    )
    _make_append_only(_TABLE, (("year", "block"),))


def downgrade() -> None:
    op.drop_table(_TABLE)
