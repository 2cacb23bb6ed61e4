"""GitHub custom deployment protection rule: the reviews ICA owes GitHub.

Revision ID: 0010_github_reviews
Revises: 0009_dr
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0010_github_reviews"
down_revision = "0009_dr"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
