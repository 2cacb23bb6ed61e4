"""Witnesses: the witnesses ICA submits to, their cosignatures, and a witness's own state.

Revision ID: 0020_witness
Revises: 0019_pipelines
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0020_witness"
down_revision = "0019_pipelines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
