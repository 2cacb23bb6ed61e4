"""The console's list areas in a real browser: runs, inventory (with its target history and
unauthorised deploys marked), dashboards with charts, incidents (with their actions),
overrides and DR drills. A fleet is seeded over real HTTP with an API key, as pipelines do;
people sign in through the form. Every page is watched: no console error, no failed request."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from azdev_ica.jobs.sealer import seal_now
from tests.conftest import bearer
from tests.console.conftest import PHONE
from tests.console.test_foundation import sign_in

API = "/api/v1/azdev"


class Fleet:
    """Runs, deployments and incidents in tenants `to` and `ws`, reported over HTTP (one
    client, as a pipeline's agent keeps its connection: a new client per request would cost
    a TLS context each)."""

    def __init__(self, client: httpx2.Client, url: str, key: str) -> None:
        self.client = client
        self.url = url + API
        self.headers = bearer(key)
        self.runs: dict[str, str] = {}
        self.incidents: dict[str, int] = {}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post(self.url + path, json=body, headers=self.headers)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    def release(self, name: str, tenant: str, stage: str, *, gate: bool, version: str) -> str:
        run = self.post(
            "/run/start",
            {
                "provider": "ado",
                "project_id": "proj",
                "run_id": str(len(self.runs) + 100),
                "pipeline_name": f"{name}-pipeline",
                "tenant": tenant,
                "stage": stage,
                "commit": "abcdef0",
                "artifact_digest": "sha256:" + (name.encode().hex() * 64)[:64],
            },
        )
        key = str(run["run_key"])
        for phase, data in (
            ("build", {"passed": True}),
            ("test", {"passed": True, "coverage_percent": 85.0}),
            ("scan", {"passed": True, "findings": {"critical": 0, "high": 0}}),
        ):
            self.post("/run/event", {"run_key": key, "phase": phase, "data": data})
        if gate:
            decision = self.post(
                "/gate/evaluate", {"run_key": key, "tenant": tenant, "stage": stage}
            )
            assert decision["status"] == "allow", decision
        self.post(
            "/run/event",
            {
                "run_key": key,
                "phase": "deploy",
                "data": {"status": "succeeded", "version": version},
            },
        )
        self.post("/run/finish", {"run_key": key, "status": "success"})
        self.runs[name] = key
        return key

    def incident(self, name: str, tenant: str) -> int:
        found = self.post(
            "/incident", {"title": f"{name} is down", "severity": "high", "tenant": tenant}
        )
        self.incidents[name] = int(found["id"])
        return self.incidents[name]


@pytest.fixture
def fleet(server: Any, make_key: Any) -> Fleet:
    with httpx2.Client(timeout=60) as client:
        seeded = Fleet(client, server.url, make_key("azdev_devops"))
        seeded.release("to-staging", "to", "staging", gate=True, version="1.4.0")
        seeded.release("to-prod", "to", "production", gate=False, version="1.3.9")
        seeded.release("ws-staging", "ws", "staging", gate=True, version="2.0.0")
        seeded.incident("to-db", "to")
        seeded.incident("ws-db", "ws")
    return seeded


EVERYONE = [("azdev_devops", None), ("azdev_auditor", None)]


PAGES = [
    ("/runs", "Runs"),
    ("/inventory", "Inventory"),
    ("/inventory/to/staging", "Deployments of to · staging"),
    ("/dashboards", "Dashboards"),
    ("/incidents", "Incidents"),
    ("/overrides", "Emergency overrides"),
    ("/dr", "Disaster recovery"),
    ("/audit", "Audit ledger"),
    ("/audit/checkpoints", "Checkpoints"),
]


def test_each_page_loads_clean(page, ctx, local_user, fleet):
    person = local_user("all@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/runs")
    nav = page.get_by_role("navigation", name="Console")
    for label in ("Runs", "Inventory", "Dashboards", "Incidents", "Overrides", "DR", "Audit"):
        assert nav.get_by_role("link", name=label, exact=True).is_visible()
    for path, heading in PAGES:
        answer = page.goto(path)
        assert answer.status == 200, path
        assert page.get_by_role("heading", name=heading).first.is_visible(), path
    page.goto(f"/incidents/{fleet.incidents['to-db']}")
    assert page.get_by_role("heading", name="Incident #", exact=False).is_visible()
    # `watched` fails the test at teardown on any console error or failed request.


def test_the_nav_shows_only_what_the_person_may_open(page, ctx, local_user):
    person = local_user("signer@example.org", [("azdev_approver_tech", "to")], totp=True)
    sign_in(page, ctx, person)
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link", name="Runs", exact=True).is_visible()
    assert nav.get_by_role("link", name="Audit", exact=True).count() == 0


def test_runs_filter_and_link_to_the_run_page(page, ctx, local_user, fleet):
    person = local_user("runs@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/runs")
    table = page.locator("#runs")
    assert table.get_by_role("link").count() == 3
    page.get_by_label("Tenant").fill("ws")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/runs?*tenant=ws*")
    links = page.locator("#runs").get_by_role("link")
    assert links.count() == 1
    assert links.first.get_attribute("href") == "/runs/" + fleet.runs["ws-staging"].replace(
        ":", "%3A"
    )


def test_inventory_marks_the_unauthorised_deploy_and_opens_a_history(page, ctx, local_user, fleet):
    person = local_user("inv@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/inventory")
    staging = page.locator('td[data-target="to/staging"]')
    production = page.locator('td[data-target="to/production"]')
    assert "1.4.0" in staging.inner_text()
    assert "unauthorised deploy" not in staging.inner_text()
    assert "1.3.9" in production.inner_text()
    assert "unauthorised deploy" in production.inner_text()
    production.get_by_role("link").click()
    page.wait_for_url("**/inventory/to/production")
    row = page.locator("#history tbody tr")
    assert row.count() == 1
    assert "unauthorised deploy" in row.inner_text()


def test_a_person_of_one_tenant_sees_nothing_of_another(page, ctx, local_user, fleet, watched):
    watched.expected_statuses.add(404)
    person = local_user("tonga@example.org", [("azdev_devops", "to"), ("azdev_auditor", "to")])
    seal_now(ctx)  # the ledger's entries of the seeding
    sign_in(page, ctx, person, start="/runs")
    text = page.locator("main").inner_text()
    assert fleet.runs["to-staging"] in text
    assert fleet.runs["ws-staging"] not in text
    page.goto("/incidents")
    assert page.get_by_role("link", name=f"#{fleet.incidents['to-db']}").is_visible()
    assert page.get_by_role("link", name=f"#{fleet.incidents['ws-db']}").count() == 0
    page.goto("/inventory")
    assert page.locator('td[data-target^="ws/"]').count() == 0
    page.goto("/audit")
    assert "ws" not in {
        cell.strip() for cell in page.locator("#entries td:last-child").all_inner_texts()
    }
    assert page.locator("#entries tbody tr").count() > 0
    # Another tenant's objects answer exactly like absent ones.
    for path in (
        f"/incidents/{fleet.incidents['ws-db']}",
        "/inventory/ws/staging",
        "/incidents/999999",
        "/dashboards?tenant=ws",
    ):
        answer = page.goto(path)
        assert answer.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible()
    # And the export bundle (every tenant's entries) is not offered to a tenant auditor.
    page.goto("/audit")
    assert page.get_by_role("link", name="Export bundle", exact=False).count() == 0


def test_inventory_on_a_phone(new_context, ctx, local_user, fleet):
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    person = local_user("phone@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/inventory")
    assert page.get_by_role("heading", name="Inventory").is_visible()
    # The page itself never scrolls sideways: the wide grid scrolls inside its wrapper.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")
    cell = page.get_by_role("link", name="History of to production")
    cell.scroll_into_view_if_needed()
    cell.click()
    page.wait_for_url("**/inventory/to/production")


def test_dashboards_draw_their_charts(page, ctx, local_user, fleet):
    person = local_user("dash@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/dashboards")
    charts = page.locator("[data-chart]")
    assert charts.count() == 3
    for index in range(3):
        chart = charts.nth(index)
        chart.locator("svg").first.wait_for()
        assert chart.get_attribute("data-drawn") == "true"
    rows = page.locator("#metrics tbody tr")
    assert rows.first.locator("th").inner_text() == "Fleet (all your tenants)"
    assert rows.count() == 1 + 5  # the fleet and the policy's five tenants
    report = page.get_by_role("link", name="Monthly compliance report", exact=False)
    assert "/report/monthly?month=2026-11&format=html" in (report.get_attribute("href") or "")


def test_incident_actions_in_the_page(page, ctx, local_user, fleet, watched, server):
    watched.expected_statuses.add(422)
    person = local_user("ops@example.org", [("azdev_devops", "to")])
    incident = fleet.incidents["to-db"]
    sign_in(page, ctx, person, start=f"/incidents/{incident}")
    page.get_by_label("Note", exact=True).fill("Failover started")
    page.get_by_role("button", name="Add the note").click()
    page.wait_for_url(f"**/incidents/{incident}")
    assert "Failover started" in page.locator("#timeline").inner_text()
    page.get_by_label("New status").select_option("mitigated")
    page.get_by_role("button", name="Change the status").click()
    page.wait_for_url(f"**/incidents/{incident}")
    assert page.locator("dl.facts .badge").inner_text() == "mitigated"
    # A refusal of the service is a sentence on the page, and nothing was recorded.
    page.get_by_label("Root-cause analysis").fill("too short")
    page.get_by_role("button", name="Record the RCA").click()
    assert "at least 20 characters" in page.get_by_role("alert").inner_text()
    assert "None recorded yet" in page.locator("main").inner_text()
    page.get_by_label("Root-cause analysis").fill("The primary ran out of disk during a backup.")
    page.get_by_role("button", name="Record the RCA").click()
    page.wait_for_url(f"**/incidents/{incident}")
    assert "ran out of disk" in page.locator("p.rca").inner_text()
    # A post without the session's CSRF token (another site's form) changes nothing.
    forged = page.request.post(
        f"/incidents/{incident}/note",
        form={"text": "forged note"},
        headers={"Origin": server.url, "Accept": "text/html"},
    )
    assert forged.status == 403
    page.reload()
    assert "forged note" not in page.locator("#timeline").inner_text()
