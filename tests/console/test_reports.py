"""The Reports page in a real browser: the kept monthly compliance reports, newest first, each
opening its HTML and its JSON; a person who audits only some tenants sees none of them (they
hold every tenant) and is pointed to the on-demand report of their own tenants."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from azdev_ica.db.tables import MonthlyReportRecord
from azdev_ica.services.monthly_reports import keep_monthly_report
from tests.audit.ledgerdb import activity
from tests.console.test_foundation import sign_in


def test_the_reports_page_lists_kept_reports_and_opens_them(page, ctx, local_user):
    activity(ctx, 2)
    ctx.clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert keep_monthly_report(ctx, month="2026-11")
    ctx.clock.set(datetime(2027, 1, 1, 0, 1, tzinfo=UTC))
    assert keep_monthly_report(ctx, month="2026-12")
    person = local_user("audra@example.org", [("azdev_auditor", None)])
    sign_in(page, ctx, person, start="/reports")
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link", name="Reports", exact=True).is_visible()
    assert page.get_by_role("heading", name="Monthly compliance reports").is_visible()
    months = page.locator("#reports tbody tr td:first-child").all_inner_texts()
    assert months == ["2026-12", "2026-11"]

    with ctx.read() as session:
        kept = session.get(MonthlyReportRecord, "2026-11")
    row = page.locator("#reports tbody tr", has_text="2026-11")
    assert kept.sha256[:16] in row.inner_text()
    with page.expect_response(lambda r: "format=json" in r.url) as answer:
        row.get_by_role("link", name="JSON").click()
    assert hashlib.sha256(answer.value.body()).hexdigest() == kept.sha256
    page.go_back()
    page.locator("#reports tbody tr", has_text="2026-11").get_by_role("link", name="HTML").click()
    page.wait_for_load_state()
    assert "2026-11" in page.title() + page.locator("h1").first.inner_text()

    # The notification's link: the month's own page, with the hash its ledger entry holds.
    page.goto("/reports/2026-11")
    assert page.locator("#report-sha256").inner_text() == kept.sha256
    page.get_by_role("link", name="Open the report (HTML)").click()
    page.wait_for_load_state()
    assert "2026-11" in page.title() + page.locator("h1").first.inner_text()


def test_a_person_of_some_tenants_sees_no_kept_report(page, ctx, local_user, watched):
    ctx.clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert keep_monthly_report(ctx, month="2026-11")
    person = local_user("wes@example.org", [("azdev_auditor", "ws")])
    sign_in(page, ctx, person, start="/reports")
    assert page.locator("#reports").count() == 0
    watched.expected_statuses.add(404)
    answer = page.goto("/reports/2026-11")  # out of scope answers like absent
    assert answer.status == 404
    assert page.locator("#report-sha256").count() == 0
    page.go_back()
    assert page.get_by_role("link", name="report of 2026-11 for your tenants").is_visible()
