"""An approval from the notification to the receipt, in a real browser: the technical
approver signs, then the business approver in another browser context; the requester and
the wrong people are refused in words; the page reads on a phone."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import OutboxMessage
from azdev_ica.domain.approvals import Decision
from azdev_ica.domain.runs import Phase
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.approvals import RequestApproval, request_approval, sign_approval
from azdev_ica.services.people import link_person
from azdev_ica.services.runs import RecordEvent, record_event
from tests.approvals.conftest import (
    BIZ,
    DIGEST,
    PIPELINE,
    RITA_ADO_ID,
    TECH,
)
from tests.console.conftest import PHONE
from tests.console.test_foundation import code_now, sign_in

OPERATOR = Actor(kind="operator", id="test")


@pytest.fixture
def approval_id(ctx: Any, run_key: str) -> int:
    """Tests and a scan reported, then the dual approval asked for by the pipeline."""
    for phase, data in (
        (Phase.TEST, {"passed": True, "total": 412, "failed": 0, "coverage_percent": 87.5}),
        (Phase.SCAN, {"passed": True, "tool": "trivy", "findings": {"medium": 2, "low": 5}}),
    ):
        record_event(ctx, principal=PIPELINE, command=RecordEvent(run_key, phase, data=data))
    outcome = request_approval(
        ctx,
        principal=PIPELINE,
        command=RequestApproval(
            run_key=run_key, cost_impact_minor=125_000, budget_minor=100_000, currency="NZD"
        ),
    )
    return int(outcome.approval.id)


def notification_path(ctx: Any, approval_id: int) -> str:
    """The link of the notification the request queued (the outbox row), as a path."""
    with ctx.read() as session:
        rows = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.subject_type == "approval",
                OutboxMessage.subject_id == str(approval_id),
            )
        ).all()
    links = {row.payload["link"] for row in rows}
    assert len(links) == 1, links
    path = urlsplit(links.pop()).path
    assert path == f"/approvals/{approval_id}"
    return path


@pytest.fixture
def approvers(local_user: Any, ctx: Any) -> dict[str, Any]:
    rita = local_user("rita@example.org", [("azdev_devops", "to"), (TECH, "to")], totp=True)
    # Rita triggered the run in Azure DevOps: she is on the requesting side.
    link_person(ctx, actor=OPERATOR, login=rita.login, provider="ado", provider_user_id=RITA_ADO_ID)
    return {
        "rita": rita,
        "alice": local_user("alice@example.org", [(TECH, "to")], totp=True),
        "bob": local_user("bob@example.org", [(BIZ, "to")], totp=True),
        "walt": local_user("walt@example.org", [(TECH, "ws"), (BIZ, "ws")], totp=True),
    }


def test_from_the_notification_to_a_dual_approval(new_context, ctx, approval_id, approvers):
    link = notification_path(ctx, approval_id)

    # The technical approver opens the link: sign-in first, then straight to the request.
    alice = new_context().new_page()
    sign_in(alice, ctx, approvers["alice"], start=link)
    assert urlsplit(alice.url).path == link
    assert alice.get_by_role(
        "heading", name=f"Approval #{approval_id}: to · production"
    ).is_visible()
    text = alice.locator("main").inner_text()
    for shown in (DIGEST, "412 tests, 0 failed; coverage 87.5%", "2 medium", "over budget"):
        assert shown in text, shown
    alice.get_by_label("Comment").fill("Tests and scan are clean.")
    alice.get_by_role("button", name="Approve").click()
    alice.get_by_role("status").filter(has_text="Signed.").wait_for()
    assert alice.locator("#approval-status").inner_text() == "technical approved"

    # The receipt follows the ledger: once sealed and checkpointed it says "included".
    seal_now(ctx)
    alice.locator("#receipt-state").filter(has_text="included").wait_for()
    assert alice.locator("#receipt-index").inner_text().isdigit()

    # The business approver, in another browser, finds it waiting on the home page.
    bob = new_context().new_page()
    sign_in(bob, ctx, approvers["bob"])
    bob.get_by_role("link", name=f"#{approval_id}").click()
    assert "technical half: approve by alice@example.org" in bob.locator("#signatures").inner_text()
    bob.get_by_role("button", name="Approve").click()
    bob.get_by_role("status").filter(has_text="Signed.").wait_for()
    assert bob.locator("#approval-status").inner_text() == "approved"

    # Alice's page, reloaded, shows both signatures and no form.
    alice.reload()
    assert alice.get_by_role("button", name="Approve").count() == 0
    assert "business half: approve by bob@example.org" in alice.locator("#signatures").inner_text()


def test_the_requester_is_refused_in_words(page, ctx, approval_id, approvers):
    sign_in(page, ctx, approvers["rita"], start=f"/approvals/{approval_id}")
    refusal = page.locator("#cannot-sign").inner_text()
    assert refusal == ("You cannot sign this request: the requester of a change never approves it.")
    assert page.get_by_role("button", name="Approve").count() == 0
    # Not on her home page either.
    page.goto("/ui/")
    assert page.get_by_text("Nothing waits for your signature.").is_visible()


def test_a_signature_overtaken_is_refused_in_words(page, ctx, approval_id, approvers, watched):
    # Alice opens the form; meanwhile another technical approver signs that half.
    sign_in(page, ctx, approvers["alice"], start=f"/approvals/{approval_id}")
    other = approvers["walt"]  # not Tonga's: made Tonga's approver for this step
    from azdev_ica.auth.roles import Role
    from azdev_ica.services.people import grant_role

    grant_role(ctx, actor=OPERATOR, login=other.login, role=Role(TECH), tenant="to")
    sign_approval(
        ctx,
        principal=other.principal(ctx),
        approval_id=approval_id,
        decision=Decision.APPROVE,
    )
    watched.expected_statuses.add(403)
    page.get_by_role("button", name="Approve").click()
    assert page.locator("#refusal").inner_text() == "The technical half is already signed."
    assert page.locator("#approval-status").inner_text() == "technical approved"


def test_out_of_scope_is_the_same_404_as_absent(page, ctx, approval_id, approvers, watched):
    watched.expected_statuses.add(404)
    sign_in(page, ctx, approvers["walt"], start="/ui/")
    other_tenant = page.goto(f"/approvals/{approval_id}")
    absent_body = None
    assert other_tenant.status == 404
    shown = page.locator("main").inner_text().replace(str(approval_id), "N")
    absent = page.goto(f"/approvals/{approval_id + 1000}")
    assert absent.status == 404
    absent_body = page.locator("main").inner_text().replace(str(approval_id + 1000), "N")
    assert shown == absent_body
    assert page.get_by_role("link", name="Back to the home page").is_visible()


def test_the_approval_page_reads_on_a_phone(new_context, ctx, approval_id, approvers):
    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    sign_in(phone, ctx, approvers["alice"], start=f"/approvals/{approval_id}")
    # Nothing wider than the screen: no sideways scrolling of the page.
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    approve = phone.get_by_role("button", name="Approve")
    approve.scroll_into_view_if_needed()
    assert approve.is_visible()
    box = approve.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= PHONE["width"]


def test_a_stale_second_factor_asks_for_a_code_before_signing(
    page, ctx, clock, approval_id, approvers
):
    from datetime import timedelta

    alice = approvers["alice"]
    sign_in(page, ctx, alice, start=f"/approvals/{approval_id}")  # her code is fresh now
    clock.advance(timedelta(minutes=6))  # ... and stale after the step-up window
    page.get_by_label("Comment").fill("Looks right.")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"**/ui/stepup?next=/approvals/{approval_id}")
    assert page.get_by_role("heading", name="Confirm it is you").is_visible()
    page.get_by_label("One-time code").fill(code_now(ctx, alice))
    page.get_by_role("button", name="Confirm").click()
    # Back on the request, nothing signed yet: the form is shown again, never re-posted.
    page.wait_for_url(f"**/approvals/{approval_id}")
    assert page.get_by_text("No one has signed yet.").is_visible()
    page.get_by_role("button", name="Approve").click()
    page.get_by_role("status").filter(has_text="Signed.").wait_for()
    assert page.locator("#approval-status").inner_text() == "technical approved"
