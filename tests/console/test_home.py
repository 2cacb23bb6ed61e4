"""The home page in a real browser: what waits for me, recent denials and alerts of my
tenants only (the same scoping as the API), and the run and override pages they link to."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.overrides import override_link, request_override
from tests.console.test_foundation import sign_in
from tests.gates.conftest import PIPELINE, new_run


def test_denials_and_alerts_of_my_tenants_lead_to_the_run(page, ctx, local_user):
    tonga = new_run(ctx, tenant="to", critical=2)  # a critical scan: an alert, then a denial
    samoa = new_run(ctx, tenant="ws", critical=1)
    for key, tenant in ((tonga, "to"), (samoa, "ws")):
        answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=key, tenant=tenant))
        assert answer.status.value == "deny"
    person = local_user("tina@example.org", [("azdev_devops", "to")])
    sign_in(page, ctx, person)

    denials = page.locator("#denials").inner_text()
    assert tonga in denials
    assert samoa not in denials  # another tenant's, as the API would hide it
    alerts = page.locator("#alerts").inner_text()
    assert "critical" in alerts
    assert "ws" not in alerts.split()
    assert page.get_by_text("No deployment is running or waiting in your tenants.").is_visible()

    # The alert links to the run's page: its events and the gate's decision in words.
    page.locator("#alerts a").first.click()
    page.wait_for_url(f"**/runs/{tonga}")
    assert "scan" in page.locator("#events").inner_text()
    assert "deny" in page.locator("#gate-decisions").inner_text()


def test_another_tenants_run_is_the_404_page(page, ctx, local_user, watched):
    watched.expected_statuses.add(404)
    samoa = new_run(ctx, tenant="ws")
    sign_in(page, ctx, local_user("tom@example.org", [("azdev_devops", "to")]))
    answer = page.goto(f"/runs/{samoa}")
    assert answer.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()


def test_the_override_page_from_its_notification(page, ctx, local_user):
    key = new_run(ctx, tenant="to", tests_passed=False)
    override = request_override(
        ctx, principal=PIPELINE, run_key=key, reason="Farmers cannot register: hotfix"
    ).override
    link = override_link(ctx, override.id)
    person = local_user("olga@example.org", [("azdev_auditor", None)])
    sign_in(page, ctx, person, start=urlsplit(link).path)
    assert page.get_by_role(
        "heading", name=f"Emergency override #{override.id}: to · production"
    ).is_visible()
    assert page.get_by_text("Farmers cannot register: hotfix").is_visible()
    page.get_by_role("link", name=key).click()
    page.wait_for_url(lambda url: unquote(url).endswith(f"/runs/{key}"))
    assert page.get_by_role("heading", name="Emergency overrides").is_visible()
    assert page.get_by_role("link", name=f"#{override.id}").is_visible()


def test_the_queue_shows_a_held_lock_and_its_waiter(page, ctx, local_user):
    first, second = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
    samoa = new_run(ctx, tenant="ws", stage="staging")
    for key, tenant, status in (
        (first, "to", "allow"),
        (second, "to", "pending"),
        (samoa, "ws", "allow"),
    ):
        answer = evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=key, tenant=tenant))
        assert answer.status.value == status
    sign_in(page, ctx, local_user("quinn@example.org", [("azdev_devops", "to")]))
    rows = page.locator("#queues tbody tr")
    assert rows.count() == 1  # Samoa's lock is not Tonga's business
    row = rows.first
    assert row.locator("td").first.inner_text() == "to · staging"
    assert row.locator("td").nth(1).get_by_role("link", name=first).is_visible()
    waiting = row.locator("td").nth(2).get_by_role("listitem")
    assert waiting.all_inner_texts() == [second]
    waiting.get_by_role("link", name=second).click()
    page.wait_for_url(lambda url: unquote(url).endswith(f"/runs/{second}"))
