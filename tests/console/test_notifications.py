"""Administration → Notifications in a real browser: the outbox's rows with their state, a
notification no route sends anywhere shown as "no route" with a sentence saying nobody was
told (never "delivered"), the state filter, and a tenant administrator seeing only its own
tenants' rows (a row of no tenant only for an administrator of every tenant)."""

from __future__ import annotations

from azdev_ica.jobs.delivery import deliver_due
from tests.console.test_foundation import sign_in
from tests.notify.conftest import queue


def _states(page) -> dict[str, str]:
    rows = page.locator("#notifications tbody tr")
    return {
        rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(6).inner_text()
        for i in range(rows.count())
    }


def test_unrouted_notifications_are_said_to_reach_nobody(page, ctx, settings, local_user):
    assert not settings.notify.routes  # the suite's settings route nothing
    samoa = queue(ctx, tenant="ws")
    tonga = queue(ctx, tenant="to")
    fleet = queue(ctx, topic="ledger.stalled", tenant=None)
    failing = queue(ctx, tenant="ws", channel="carrier_pigeon", to="secret@example.org")
    deliver_due(ctx, settings)
    pending = queue(ctx, tenant="ws")  # queued after the delivery ran

    admin = local_user("max@example.org", [("admin", None)], totp=True)
    sign_in(page, ctx, admin, start="/ui/admin/people")
    page.get_by_role("link", name="Notifications").click()
    page.wait_for_url("**/ui/admin/notifications")
    assert page.locator("#no-routes").is_visible()
    assert "3 notifications reached no route" in page.locator("#unrouted").inner_text()
    assert "nobody was told" in page.locator("#unrouted").inner_text()
    assert _states(page) == {
        str(samoa): "no route",
        str(tonga): "no route",
        str(fleet): "no route",
        str(failing): "failed",
        str(pending): "pending",
    }
    assert "delivered" not in _states(page).values()
    assert "secret@example.org" not in page.content()  # never a payload

    page.get_by_role("link", name="Show them").click()
    page.wait_for_load_state()
    assert set(_states(page)) == {str(samoa), str(tonga), str(fleet)}
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert _states(page) == {str(failing): "failed"}


def test_a_tenant_administrator_sees_only_its_tenants_rows(page, ctx, settings, local_user):
    samoa = queue(ctx, tenant="ws")
    queue(ctx, tenant="to")
    queue(ctx, topic="ledger.stalled", tenant=None)
    deliver_due(ctx, settings)
    person = local_user("tia@example.org", [("tenant_admin", "ws")], totp=True)
    sign_in(page, ctx, person, start="/ui/admin/notifications")
    assert _states(page) == {str(samoa): "no route"}
    assert "1 notification reached no route" in page.locator("#unrouted").inner_text()


def test_people_without_the_people_permission_are_refused(page, ctx, local_user, watched):
    watched.expected_statuses.add(403)
    person = local_user("ana@example.org", [("azdev_approver_tech", "ws")], totp=True)
    sign_in(page, ctx, person)
    answer = page.goto("/ui/admin/notifications")
    assert answer.status == 403
    assert page.locator("#notifications").count() == 0
    assert page.get_by_role("link", name="Notifications").count() == 0
