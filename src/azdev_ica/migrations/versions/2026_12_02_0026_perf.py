"""Performance: indexes for audit queries and the gate's hot paths.

Revision ID: 0026_perf
Revises: 0025_firsthour
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0026_perf"
down_revision = "0025_firsthour"
branch_labels = None
depends_on = None


# Audit queries sort by (year, idx) with a limit: an index per equality filter, ending with
# (year, idx), lets the database read matching entries in order and stop at the limit.
_TABLE = "azdev_audit_entry"
_NEW = {
    "ix_azdev_audit_entry_actor": ["actor_id", "year", "idx"],
    "ix_azdev_audit_entry_subject": ["subject_type", "subject_id", "year", "idx"],
    "ix_azdev_audit_entry_action": ["action", "year", "idx"],
    "ix_azdev_audit_entry_tenant": ["tenant", "year", "idx"],
}
_OLD = {
    "ix_azdev_audit_entry_actor": ["actor_id"],
    "ix_azdev_audit_entry_subject": ["subject_type", "subject_id"],
}


def upgrade() -> None:
    for name in _OLD:
        op.drop_index(name, table_name=_TABLE)
    for name, columns in _NEW.items():
        op.create_index(name, _TABLE, columns)


def downgrade() -> None:
    for name in _NEW:
        op.drop_index(name, table_name=_TABLE)
    for name, columns in _OLD.items():
        op.create_index(name, _TABLE, columns)
