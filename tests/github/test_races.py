"""GitHub sending the same delivery twice at once (PostgreSQL, where writers really race):
one row, one audit entry, one approval; both callers get the same answer."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.db.tables import Approval, AuditInbox, GithubReview
from azdev_ica.services.github_reviews import parse_protection_rule, receive_protection_rule
from tests.github.conftest import rule_payload

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@POSTGRESQL_ONLY
@pytest.mark.parametrize("deliveries", [["same"] * 6, [f"d-{n}" for n in range(6)]])
def test_racing_deliveries_open_one_approval(ctx, github, run_key, deliveries):
    barrier = threading.Barrier(len(deliveries))

    def receive(delivery: str) -> Any:
        rule = parse_protection_rule(delivery, rule_payload(github.url))
        barrier.wait()
        return receive_protection_rule(ctx, rule)

    with ThreadPoolExecutor(len(deliveries)) as pool:
        outcomes = list(pool.map(receive, deliveries))
    assert len({outcome.approval_id for outcome in outcomes}) == 1
    assert sum(not outcome.duplicate for outcome in outcomes) == len(set(deliveries))
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(Approval)) == 1
        assert session.scalar(select(func.count()).select_from(GithubReview)) == len(
            set(deliveries)
        )
        actions = [json.loads(bytes(b))["action"] for b in session.scalars(select(AuditInbox.body))]
    assert actions.count("github.review") == len(set(deliveries))
    assert actions.count("approval.request") == 1
