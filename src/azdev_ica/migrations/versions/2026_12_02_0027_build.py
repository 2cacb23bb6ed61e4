"""Pipelines: a deploy needs a successful build of its artifact (issue 17).

Revision ID: 0027_build
Revises: 0026_perf
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0027_build"
down_revision = "0026_perf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
