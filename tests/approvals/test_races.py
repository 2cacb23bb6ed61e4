"""Races on PostgreSQL, where writers really run at once: two people signing the same half, and
pipelines asking for the same approval, each settle on exactly one outcome."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.db.tables import Approval, ApprovalSignature
from azdev_ica.domain.approvals import Decision, Half
from azdev_ica.errors import ApprovalRefused
from azdev_ica.services.approvals import RequestApproval, request_approval, sign_approval
from tests.approvals.conftest import PIPELINE, RUN_KEY

POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@POSTGRESQL_ONLY
def test_two_signers_racing_for_one_half_one_wins(ctx, run_key, people):
    approval_id = request_approval(
        ctx, principal=PIPELINE, command=RequestApproval(run_key=RUN_KEY)
    ).approval.id
    signers = [people["alice"].principal(ctx), people["carol"].principal(ctx)]
    barrier = threading.Barrier(len(signers))

    def attempt(principal: Any) -> str:
        barrier.wait()
        try:
            sign_approval(
                ctx,
                principal=principal,
                approval_id=approval_id,
                decision=Decision.APPROVE,
                half=Half.TECHNICAL,
            )
        except ApprovalRefused as refused:
            return str(refused.extensions["code"])
        return "signed"

    with ThreadPoolExecutor(len(signers)) as pool:
        outcomes = sorted(pool.map(attempt, signers))
    assert outcomes == ["half_already_signed", "signed"]
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(ApprovalSignature)) == 1
        assert session.get(Approval, approval_id).status == "technical_approved"


@POSTGRESQL_ONLY
def test_simultaneous_requests_open_one_approval(ctx, run_key):
    threads = 8
    barrier = threading.Barrier(threads)

    def ask(_: int) -> int:
        barrier.wait()
        command = RequestApproval(run_key=RUN_KEY)
        return request_approval(ctx, principal=PIPELINE, command=command).approval.id

    with ThreadPoolExecutor(threads) as pool:
        ids = set(pool.map(ask, range(threads)))
    assert len(ids) == 1
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(Approval)) == 1
