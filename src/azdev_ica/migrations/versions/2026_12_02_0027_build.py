"""Pipelines: a deploy needs a successful build of its artifact (issue 17).

Revision ID: 0027_build
Revises: 0026_perf
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0027_build"
down_revision = "0026_perf"
branch_labels = None
depends_on = None


# The runs whose artifact is a digest, by tenant: the gate's look-up of an earlier build of
# the artifact a promotion run deploys (services/gates.py `_build`).
_INDEX = "ix_azdev_pipeline_run_digest"
_TABLE = "azdev_pipeline_run"


def upgrade() -> None:
    op.create_index(_INDEX, _TABLE, ["artifact_digest", "tenant"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
