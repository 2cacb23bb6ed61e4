"""Administration → policy in a real browser: the versions and a readable diff, proposing a
policy from a YAML file, the proposer refused in words, the two signatures from the
notification's link, the new version active."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import expect
from sqlalchemy import select

from azdev_ica.db.tables import OutboxMessage
from tests.conftest import example_policy
from tests.console.test_foundation import sign_in

ADMIN, TECH, BIZ = "admin", "azdev_approver_tech", "azdev_approver_biz"


def proposal_links(ctx: Any, proposal_id: int) -> set[str]:
    with ctx.read() as session:
        rows = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.subject_type == "policy_proposal",
                OutboxMessage.subject_id == str(proposal_id),
            )
        ).all()
    return {row.payload["link"] for row in rows}


def test_propose_refuse_the_proposer_and_sign_twice(
    new_context, ctx, local_user, tmp_path, watched
):
    ada = local_user("ada@example.org", [(ADMIN, None)], totp=True)
    tess = local_user("tess@example.org", [(TECH, None)], totp=True)
    bea = local_user("bea@example.org", [(BIZ, None)], totp=True)
    changed = tmp_path / "policy.yaml"
    changed.write_text(example_policy().replace("sla_hours: 4", "sla_hours: 6"))

    # The administrator proposes from a file; the form shows what the file holds.
    page = new_context().new_page()
    sign_in(page, ctx, ada, start="/policy")
    assert page.locator("#versions").get_by_text("active").is_visible()
    page.get_by_role("link", name="Propose a new policy version").click()
    page.get_by_label("Load the policy file (YAML)").set_input_files(str(changed))
    document = page.get_by_label("Policy file (YAML)", exact=True)
    # The file is read into the field by the page's script (a string `wait_for_function`
    # would be eval'd in the page if the first try fails, which the CSP refuses).
    expect(page.locator("#policy-document")).to_have_value(
        re.compile("sla_hours: 6"), timeout=60_000
    )
    # An invalid document is refused with its problems listed, and nothing is lost.
    document.fill("tenants: nope\n")
    page.get_by_label("Reason for the change").fill("Longer SLA for the holidays")
    watched.expected_statuses.update({403, 422})
    page.get_by_role("button", name="Propose").click()
    assert "The policy file is not valid" in page.locator("#refusal").inner_text()
    assert page.get_by_label("Reason for the change").input_value() == (
        "Longer SLA for the holidays"
    )
    page.get_by_label("Load the policy file (YAML)").set_input_files(str(changed))
    expect(page.locator("#policy-document")).to_have_value(
        re.compile("sla_hours: 6"), timeout=60_000
    )
    page.get_by_role("button", name="Propose").click()
    page.wait_for_url("**/policy/proposals/*")
    proposal_id = int(urlsplit(page.url).path.rsplit("/", 1)[1])
    assert page.locator("#proposal-status").inner_text() == "pending"
    assert "Sections changed: approvals" in page.locator("#diff-summary").inner_text()
    assert page.locator("#diff .diff-del").filter(has_text='"sla_hours": 4').count() == 1
    assert page.locator("#diff .diff-add").filter(has_text='"sla_hours": 6').count() == 1

    # The proposer holds policy:sign too, and is refused in a sentence.
    page.get_by_role("button", name="Approve").click()
    assert page.locator("#refusal").inner_text() == (
        "The proposer never signs their own policy change."
    )
    assert page.locator("#proposal-status").inner_text() == "pending"

    # The notification's link opens the proposal's page, not its JSON.
    (link,) = proposal_links(ctx, proposal_id)
    path = urlsplit(link).path
    assert path == f"/policy/proposals/{proposal_id}"

    for person, status in ((tess, "pending"), (bea, "active")):
        signer = new_context().new_page()
        sign_in(signer, ctx, person, start=path)
        assert urlsplit(signer.url).path == path
        signer.get_by_label("Comment").fill("Agreed.")
        signer.get_by_role("button", name="Approve").click()
        signer.get_by_role("status").filter(has_text="Signed: approved.").wait_for()
        assert signer.locator("#proposal-status").inner_text() == status
        assert f"approve by {person.login}" in signer.locator("#signatures").inner_text()

    # The second signature made it the active version; the list's diff shows the change.
    page.goto("/policy")
    assert page.locator("#versions tbody tr").count() == 2
    assert "active" in page.locator("#versions tbody tr").first.inner_text()
    page.get_by_role("link", name="changes from version 1").click()
    assert page.get_by_role("heading", name="Changes from version 1").is_visible()
    assert page.locator("#diff .diff-add").filter(has_text='"sla_hours": 6').count() == 1


def test_a_reader_sees_versions_but_no_forms(page, ctx, local_user, watched):
    auditor = local_user("aud@example.org", [("azdev_auditor", None)], totp=True)
    sign_in(page, ctx, auditor, start="/policy")
    assert page.get_by_role("heading", name="Policy", exact=True).is_visible()
    assert page.get_by_role("link", name="Propose a new policy version").count() == 0
    watched.expected_statuses.add(403)
    answer = page.goto("/policy/propose")
    assert answer.status == 403
    # A version that is not there: the friendly 404 page.
    watched.expected_statuses.add(404)
    assert page.goto("/policy/proposals/999").status == 404
    assert page.goto("/policy/diff?to=999").status == 404
