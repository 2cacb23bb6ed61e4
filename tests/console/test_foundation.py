"""The console's foundation in a real browser: signing in (the form Chromium really posts),
the page headers, friendly error pages, `/` and the offline API docs."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from azdev_ica.auth import totp
from tests.identity.conftest import PASSWORD


def code_now(ctx: Any, person: Any) -> str:
    return totp.code_at_step(person.totp, totp.time_step(ctx.clock.now()))


def sign_in(page: Any, ctx: Any, person: Any, start: str = "/") -> None:
    """Sign in through the form as a person would (password and, if enrolled, the code)."""
    page.goto(start)
    page.get_by_label("Sign-in name").fill(person.login)
    page.get_by_label("Password").fill(PASSWORD)
    if person.totp is not None:
        page.get_by_label("One-time code").fill(code_now(ctx, person))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


class TestSignIn:
    def test_password_and_code_sign_in_lands_on_the_home_page(self, page, ctx, local_user):
        person = local_user("ana@example.org", [("azdev_approver_tech", "to")], totp=True)
        sign_in(page, ctx, person)
        assert page.url.endswith("/ui/")
        assert page.get_by_role("heading", name="Home", exact=True).is_visible()
        assert page.get_by_text("Signed in as ana@example.org").is_visible()
        assert page.get_by_text("azdev_approver_tech (to)").is_visible()

    def test_a_wrong_code_is_said_in_words(self, page, ctx, local_user, watched):
        watched.expected_statuses.add(401)
        person = local_user("ben@example.org", [("azdev_approver_biz", "to")], totp=True)
        page.goto("/ui/login")
        page.get_by_label("Sign-in name").fill(person.login)
        page.get_by_label("Password").fill(PASSWORD)
        wrong = "000000" if code_now(ctx, person) != "000000" else "111111"
        page.get_by_label("One-time code").fill(wrong)
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").is_visible()
        assert "/ui/login" in page.url

    def test_sign_out(self, page, ctx, local_user):
        person = local_user("cy@example.org", [("azdev_devops", "to")])
        sign_in(page, ctx, person)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/ui/login")
        page.goto("/ui/account")
        assert "/ui/login" in page.url


class TestPages:
    def test_pages_send_the_strict_headers(self, page, ctx, local_user):
        person = local_user("dee@example.org", [("azdev_devops", "to")])
        sign_in(page, ctx, person)
        answer = page.goto("/ui/account")
        headers = answer.headers
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp

    def test_an_unknown_page_is_a_friendly_404_that_links_home(self, page, watched):
        watched.expected_statuses.add(404)
        answer = page.goto("/no/such/page")
        assert answer.status == 404
        assert page.get_by_role("heading", name="Not found").is_visible()
        assert "Traceback" not in page.content()
        page.get_by_role("link", name="Back to the home page").click()
        page.wait_for_url("**/ui/login**")

    def test_root_leads_to_sign_in_then_home(self, page, ctx, local_user):
        person = local_user("eve@example.org", [("azdev_auditor", None)])
        page.goto("/")
        assert "/ui/login" in page.url
        sign_in(page, ctx, person, start=page.url)
        assert page.url.endswith("/ui/")

    def test_the_api_docs_render_offline(self, page):
        page.goto("/docs")
        # Swagger UI renders the operations of /openapi.json from vendored files only.
        page.get_by_text("ICA: deployment governance").first.wait_for()
        assert page.locator(".opblock").count() > 10
        # Nothing left this machine: every request went to the server under test.
        host = page.url.split("/docs")[0]
        assert all(
            url.startswith(host)
            for url in page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        )

    def test_api_clients_still_get_problem_json(self, server):
        answer = httpx2.get(
            f"{server.url}/no/such/page", headers={"Accept": "application/json"}, timeout=60
        )
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/htmx-2.0.11/LICENSE",
        "/static/vendor/echarts-6.1.0/LICENSE",
        "/static/vendor/swagger-ui-5.35.0/LICENSE",
    ],
)
def test_the_vendored_licences_are_served(server, path):
    assert httpx2.get(server.url + path, timeout=60).status_code == 200
