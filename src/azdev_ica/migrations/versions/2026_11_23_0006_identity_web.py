"""Web sign-in: local credentials (argon2, TOTP) and sessions.

Revision ID: 0006_identity_web
Revises: 0005_gates
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0006_identity_web"
down_revision = "0005_gates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
