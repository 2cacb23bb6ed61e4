"""Deploy events carry their target (tenant, stage, artifact digest) in indexed columns, so
the gate's promotion and rollback rules read one target's deployments, not the whole fleet's.

Existing deploy events are filled in from their data and their run, exactly as
`domain/runs.py` `deploy_target` does for new ones (a frozen copy here: migrations never
import the application).

Revision ID: 0014_deploy_targets
Revises: 0013_commit_time
Create Date: 2026-11-23
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014_deploy_targets"
down_revision = "0013_commit_time"
branch_labels = None
depends_on = None

_INDEX = "ix_azdev_pipeline_event_target"


def _text(data: dict[str, Any], name: str, fallback: str | None) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else fallback


def upgrade() -> None:
    # Nullable columns without defaults: no table rewrite on either database.
    for name, length in (("target_tenant", 32), ("target_stage", 32), ("target_digest", 80)):
        op.add_column("azdev_pipeline_event", sa.Column(name, sa.String(length), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT e.id, e.data, r.tenant, r.stage, r.artifact_digest "
            "FROM azdev_pipeline_event e JOIN azdev_pipeline_run r ON r.id = e.run_pk "
            "WHERE e.phase = 'deploy'"
        )
    ).all()
    update = sa.text(
        "UPDATE azdev_pipeline_event SET target_tenant = :tenant, target_stage = :stage, "
        "target_digest = :digest WHERE id = :id"
    )
    for event_id, data, tenant, stage, digest in rows:
        if isinstance(data, str):
            data = json.loads(data)
        data = data if isinstance(data, dict) else {}
        bind.execute(
            update,
            {
                "id": event_id,
                "tenant": _text(data, "tenant", tenant),
                "stage": _text(data, "stage", stage),
                "digest": _text(data, "artifact_digest", digest),
            },
        )
    op.create_index(
        _INDEX,
        "azdev_pipeline_event",
        ["target_tenant", "target_stage", "target_digest"],
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="azdev_pipeline_event")
    with op.batch_alter_table("azdev_pipeline_event", schema=None) as batch_op:
        batch_op.drop_column("target_digest")
        batch_op.drop_column("target_stage")
        batch_op.drop_column("target_tenant")
