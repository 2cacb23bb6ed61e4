"""Sessions over HTTP: fixation, idle and absolute expiry, sign-out, CSRF on every form and
on cookie-authenticated API writes, the open-redirect guard, personal tokens from the UI."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from azdev_ica.api.routes.ui import CONSOLE_PREFIXES, safe_next
from azdev_ica.db.tables import AuditInbox, WebSession
from tests.identity.conftest import HTML, JSON, ORIGIN, form_token, new_browser, post_login

SESSION = "__Host-ica_session"
RUN_START = "/api/v1/azdev/run/start"
START = {
    "provider": "ado",
    "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
    "run_id": "4711",
    "pipeline_name": "farmer-registry-ci",
    "tenant": "to",
    "stage": "development",
}


@pytest.fixture
def signed_in(browser, local_user):
    local_user("quinn@example.org", [("azdev_devops", "to")])
    assert post_login(browser, "quinn@example.org").status_code == 303
    return browser


def csrf_of(browser) -> str:
    return form_token(browser.get("/ui/", headers=HTML).text)


class TestSessionLifetime:
    def test_a_new_session_id_at_sign_in_never_the_one_brought(self, browser, local_user, ctx):
        local_user("rae@example.org")
        planted = "attacker-chosen-session-id-0000000000000000"
        browser.cookies.set(SESSION, planted, domain="testserver.local")
        assert post_login(browser, "rae@example.org").status_code == 303
        issued = browser.cookies.get(SESSION)
        assert issued
        assert issued != planted
        with new_browser(browser.app) as attacker:
            attacker.cookies.set(SESSION, planted, domain="testserver.local")
            assert attacker.get("/ui/", headers=JSON).status_code == 401

    def test_signing_in_again_ends_the_previous_session(self, browser, local_user, app):
        local_user("sam@example.org")
        post_login(browser, "sam@example.org")
        first = browser.cookies.get(SESSION)
        post_login(browser, "sam@example.org")
        with new_browser(app) as old:
            old.cookies.set(SESSION, first, domain="testserver.local")
            assert old.get("/ui/", headers=JSON).status_code == 401

    def test_idle_sessions_end(self, signed_in, ctx, settings):
        idle = timedelta(minutes=settings.session_idle_minutes)
        # Requests inside the idle time keep the session alive past one idle period.
        for _ in range(3):
            ctx.clock.advance(idle * 0.6)
            assert signed_in.get("/ui/", headers=JSON).status_code == 200
        ctx.clock.advance(idle + timedelta(seconds=1))
        ended = signed_in.get("/ui/", headers=JSON)
        assert ended.status_code == 401
        assert ended.json()["type"] == "urn:ica:problem:unauthenticated"

    def test_sessions_end_after_their_lifetime_however_busy(self, signed_in, ctx, settings):
        lifetime = timedelta(hours=settings.session_lifetime_hours)
        step = timedelta(minutes=settings.session_idle_minutes) * 0.9
        elapsed = timedelta(0)
        while elapsed + step < lifetime:
            ctx.clock.advance(step)
            elapsed += step
            assert signed_in.get("/ui/", headers=JSON).status_code == 200
        ctx.clock.advance(lifetime - elapsed)
        assert signed_in.get("/ui/", headers=JSON).status_code == 401

    def test_sign_out_ends_the_session_at_once(self, signed_in, ctx):
        cookie = signed_in.cookies.get(SESSION)
        answer = signed_in.post("/ui/logout", data={"csrf_token": csrf_of(signed_in)}, headers=HTML)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/login"
        # A form posted after the session ended sends the browser to sign in, then home.
        again = signed_in.post("/ui/logout", data={}, headers=HTML)
        assert again.status_code == 303
        assert again.headers["location"] == "/ui/login?next=/ui/"
        with new_browser(signed_in.app) as replay:
            replay.cookies.set(SESSION, cookie, domain="testserver.local")
            assert replay.get("/ui/", headers=JSON).status_code == 401
        with ctx.read() as session:
            actions = session.scalars(select(AuditInbox.action)).all()
            row = session.scalars(select(WebSession)).one()
        assert "signout" in actions
        assert row.ended_reason == "signout"
        assert cookie not in row.token_hash  # only a keyed hash is stored


class TestCsrf:
    def test_a_form_without_the_token_is_refused(self, signed_in):
        answer = signed_in.post("/ui/logout", data={}, headers=JSON)
        assert answer.status_code == 403
        assert answer.json()["type"] == "urn:ica:problem:csrf"
        assert signed_in.get("/ui/", headers=JSON).status_code == 200  # still signed in

    def test_another_sessions_token_is_refused(self, signed_in, local_user, app):
        local_user("tess@example.org", [("azdev_auditor", None)])
        with new_browser(app) as other:
            post_login(other, "tess@example.org")
            foreign = csrf_of(other)
        answer = signed_in.post(
            "/ui/tokens", data={"csrf_token": foreign, "name": "x"}, headers=JSON
        )
        assert answer.status_code == 403
        assert answer.json()["type"] == "urn:ica:problem:csrf"

    def test_a_cross_site_post_is_refused_even_with_the_token(self, signed_in):
        token = csrf_of(signed_in)
        for headers in (
            {"Origin": "https://evil.example", "Accept": "application/json"},
            {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site", "Accept": "application/json"},
        ):
            answer = signed_in.post("/ui/logout", data={"csrf_token": token}, headers=headers)
            assert answer.status_code == 403, headers
            assert answer.json()["type"] == "urn:ica:problem:csrf"

    def test_origin_null_counts_only_with_the_browsers_own_same_origin_word(self, signed_in):
        # Chromium posts a form with `Origin: null` when the page hides its origin; only the
        # browser-set Sec-Fetch-Site (no page can forge it) says where it really came from.
        token = csrf_of(signed_in)
        for headers in (
            {"Origin": "null", "Accept": "application/json"},
            {"Origin": "null", "Sec-Fetch-Site": "cross-site", "Accept": "application/json"},
            {"Origin": "null", "Sec-Fetch-Site": "same-site", "Accept": "application/json"},
            {"Origin": "null", "Sec-Fetch-Site": "none", "Accept": "application/json"},
        ):
            answer = signed_in.post("/ui/logout", data={"csrf_token": token}, headers=headers)
            assert answer.status_code == 403, headers
            assert answer.json()["type"] == "urn:ica:problem:csrf"
        accepted = signed_in.post(
            "/ui/logout",
            data={"csrf_token": token},
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin", "Accept": "text/html"},
        )
        assert accepted.status_code == 303

    def test_sign_in_from_a_page_that_hid_its_origin(self, browser, local_user):
        local_user("ola@example.org", [("azdev_devops", "to")])
        answer = post_login(
            browser,
            "ola@example.org",
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin", "Accept": "text/html"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/"

    def test_the_sign_in_form_has_its_own_token(self, browser, local_user):
        local_user("uma@example.org")
        answer = browser.post(
            "/ui/login",
            data={"login": "uma@example.org", "password": "correct horse battery staple"},
            headers=JSON,
        )
        assert answer.status_code == 403
        assert answer.json()["type"] == "urn:ica:problem:csrf"

    def test_api_writes_with_the_cookie_need_the_header(self, signed_in):
        refused = signed_in.post(RUN_START, json=START, headers=JSON)
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:ica:problem:csrf"
        accepted = signed_in.post(
            RUN_START, json=START, headers={**JSON, "X-CSRF-Token": csrf_of(signed_in)}
        )
        assert accepted.status_code == 201
        # Reads need no token; the session's grants apply (Tonga only).
        listed = signed_in.get("/api/v1/azdev/runs", headers=JSON).json()
        assert [item["tenant"] for item in listed["items"]] == ["to"]
        samoa = signed_in.post(
            RUN_START,
            json={**START, "tenant": "ws", "run_id": "2"},
            headers={**JSON, "X-CSRF-Token": csrf_of(signed_in)},
        )
        assert samoa.status_code == 403


class TestPersonalTokensFromTheUi:
    def test_create_use_and_revoke(self, signed_in, ctx):
        created = signed_in.post(
            "/ui/tokens",
            data={"csrf_token": csrf_of(signed_in), "name": "laptop", "hours": "8"},
            headers=HTML,
        )
        assert created.status_code == 200
        token = form_token(created.text.replace('id="new-token">', 'name="t" value="'), "t")
        token = token.split("<")[0]
        assert token.startswith("icp_")
        with new_browser(signed_in.app) as cli:
            bearer = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            assert cli.get("/api/v1/azdev/runs", headers=bearer).status_code == 200
        prefix = token.split("_")[1]
        revoked = signed_in.post(
            f"/ui/tokens/{prefix}/revoke", data={"csrf_token": csrf_of(signed_in)}, headers=HTML
        )
        assert revoked.status_code == 303
        with new_browser(signed_in.app) as cli:
            assert cli.get("/api/v1/azdev/runs", headers=bearer).status_code == 401
        with ctx.read() as session:
            actions = session.scalars(select(AuditInbox.action)).all()
        assert "token.create" in actions
        assert "token.revoke" in actions

    def test_the_api_names_the_new_token_secret_as_every_new_secret_is_named(self, signed_in):
        """`POST /me/tokens` answers the token as `secret` (as `ica apikey create --output
        json` does); `token`, the earlier name, stays during its deprecation."""
        created = signed_in.post(
            "/api/v1/azdev/me/tokens",
            json={"name": "laptop", "hours": 8},
            headers={**JSON, "X-CSRF-Token": csrf_of(signed_in)},
        )
        assert created.status_code == 201, created.text
        issued = created.json()
        assert issued["secret"].startswith(f"icp_{issued['prefix']}_")
        assert issued["token"] == issued["secret"]
        with new_browser(signed_in.app) as cli:
            bearer = {"Authorization": f"Bearer {issued['secret']}", "Accept": "application/json"}
            assert cli.get("/api/v1/azdev/runs", headers=bearer).status_code == 200

    def test_an_api_key_has_no_personal_tokens(self, browser, make_key):
        answer = browser.post(
            "/ui/tokens",
            data={"name": "x"},
            headers={"Authorization": f"Bearer {make_key('admin')}", **JSON},
        )
        assert answer.status_code == 403


class TestOpenRedirect:
    TARGETS = (
        "https://evil.example/",
        "//evil.example/ui/",
        "/\\evil.example",
        "/ui/../../evil",
        "/uix",
        "javascript:alert(1)",
        "/ui/\r\nLocation: https://evil.example",
    )

    def test_next_never_leaves_the_ui(self, browser, local_user):
        local_user("vic@example.org")
        for target in self.TARGETS:
            page = browser.get("/ui/login", params={"next": target}, headers=HTML)
            assert form_token(page.text, "next") == "/ui/", target
            answer = post_login(browser, "vic@example.org", next_path=target)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/ui/", target

    def test_next_inside_the_ui_is_kept(self, browser, local_user):
        local_user("wes@example.org")
        page = browser.get("/ui/login?next=/ui/?tab=tokens", headers=HTML)
        assert form_token(page.text, "next") == "/ui/?tab=tokens"
        answer = post_login(browser, "wes@example.org", next_path="/ui/?tab=tokens")
        assert answer.headers["location"] == "/ui/?tab=tokens"


@given(st.text(max_size=80))
def test_safe_next_is_always_a_path_of_the_ui(value):
    target = safe_next(value)
    parts = urlsplit(target)
    assert not parts.scheme
    assert not parts.netloc
    # A page of the console: /ui/ or one of its own top-level pages (/policy, /reports...).
    assert any(parts.path == p or parts.path.startswith(p + "/") for p in CONSOLE_PREFIXES)
    assert "\\" not in target
    assert target.isprintable()
    assert ".." not in parts.path.split("/")


@given(st.sampled_from(["/ui/", "/ui"]), st.text(alphabet="abc/?=&.-_", max_size=30))
def test_safe_next_keeps_ordinary_ui_paths(prefix, rest):
    value = prefix + rest
    target = safe_next(value)
    assert target in (value, "/ui/")
