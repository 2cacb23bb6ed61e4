"""OpenID Connect sign-in against a REAL provider (npm `oidc-provider` on loopback): the
authorization code flow with PKCE, groups mapped to roles for the session, the person found
by subject or created on first sign-in, and the attacks on each step refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from sqlalchemy import select

from azdev_ica.auth.oidc_login import (
    PENDING_COOKIE,
    GroupRole,
    OidcLoginConfig,
    open_pending,
    seal_pending,
)
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AuditInbox, Person, PersonLink, RoleGrant
from tests.identity.conftest import HTML, JSON
from tests.support.real_oidc import RealOidcProvider, sign_in_at_provider

CLIENT_ID = "ica-web"
CLIENT_SECRET = "a-client-secret-for-tests-only"
REDIRECT = "https://testserver/ui/auth/callback"
GROUPS = {
    "alice": ["sg-devops-engineers", "sg-unrelated"],
    "tomas": ["sg-tonga-approvers"],
    "bob": ["sg-devops-engineers"],
}


@pytest.fixture(scope="module")
def provider() -> Iterator[RealOidcProvider]:
    running = RealOidcProvider(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT, groups=GROUPS
    ).start()
    yield running
    running.stop()


@pytest.fixture
def settings(settings: Any, provider: RealOidcProvider) -> Any:
    config = OidcLoginConfig(
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT,
        scopes=["openid", "profile", "email", "groups"],
        group_roles=[
            GroupRole(group="sg-devops-engineers", role=Role.DEVOPS),
            GroupRole(group="sg-tonga-approvers", role=Role.APPROVER_TECH, tenants=["to"]),
        ],
    )
    return settings.model_copy(update={"oidc_login": config})


@pytest.fixture(autouse=True)
def real_time(clock: Any) -> None:
    # The provider stamps its ID tokens with the real time; ICA checks them on its clock.
    clock.set(datetime.now(UTC))


@pytest.fixture
def person_browser() -> Iterator[httpx2.Client]:
    """The person's browser on the provider's side (it keeps the provider's cookies)."""
    with httpx2.Client(follow_redirects=False, timeout=10) as client:
        yield client


def start(browser: Any, next_path: str = "/ui/") -> str:
    answer = browser.get("/ui/login/oidc", params={"next": next_path}, headers=HTML)
    assert answer.status_code == 303
    assert browser.cookies.get(PENDING_COOKIE)
    return str(answer.headers["location"])


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return f"{parts.path}?{parts.query}"


def sign_in(browser: Any, person_browser: Any, provider: Any, login: str) -> Any:
    location = start(browser)
    back = sign_in_at_provider(person_browser, location, issuer=provider.issuer, login=login)
    return browser.get(callback_path(back), headers=HTML)


def reseal(browser: Any, settings: Any, clock: Any, **changes: str) -> None:
    """Change the pending sign-in in the browser's cookie (the attacker's tampering, done
    with the server's key so that only the changed field can be what fails)."""
    pending = open_pending(browser.cookies.get(PENDING_COOKIE), settings.pepper(), clock.now())
    browser.cookies.set(
        PENDING_COOKIE,
        seal_pending(replace(pending, **changes), settings.pepper()),
        domain="testserver.local",
    )


def refused(answer: Any) -> None:
    assert answer.status_code == 401
    assert "__Host-ica_session" not in answer.headers.get("set-cookie", "")
    if "text/html" in answer.headers["content-type"]:
        # A browser sees the problem's title on a page that never passes the callback's URL
        # (with its code) on as a Referer.
        assert "<h1>Sign-in failed</h1>" in answer.text
        assert answer.headers["referrer-policy"] == "no-referrer"
    else:
        assert answer.json()["type"] == "urn:ica:problem:sign-in-failed"


class TestSignIn:
    def test_the_authorization_request_uses_pkce_state_and_nonce(self, browser, provider):
        query = parse_qs(urlsplit(start(browser)).query)
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) == 43
        assert len(query["state"][0]) >= 43
        assert len(query["nonce"][0]) >= 43
        assert query["redirect_uri"] == [REDIRECT]
        assert "code_verifier" not in query

    def test_first_sign_in_creates_the_person_with_group_roles_for_the_session(
        self, browser, person_browser, provider, ctx
    ):
        answer = sign_in(browser, person_browser, provider, "alice")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/"
        home = browser.get("/ui/", headers=HTML)
        assert "Signed in as alice@example.org" in home.text
        assert "azdev_devops" in home.text
        with ctx.read() as session:
            person = session.scalars(select(Person)).one()
            link = session.scalars(select(PersonLink)).one()
            grants = session.scalars(select(RoleGrant)).all()
            actions = session.scalars(select(AuditInbox.action)).all()
        assert (link.provider, link.provider_user_id, link.person_id) == (
            "oidc",
            "alice",
            person.id,
        )
        # Group roles hold for the session; the provider stays their source of truth.
        assert grants == []
        assert actions[-3:] == ["person.create", "person.link", "signin"]
        # The session acts with them (devops may read runs).
        assert browser.get("/api/v1/azdev/runs", headers=JSON).status_code == 200

    def test_the_next_sign_in_finds_the_person_by_subject(
        self, browser, person_browser, provider, ctx, app
    ):
        assert sign_in(browser, person_browser, provider, "alice").status_code == 303
        from tests.identity.conftest import new_browser

        with new_browser(app) as second:
            assert sign_in(second, person_browser, provider, "alice").status_code == 303
        with ctx.read() as session:
            assert len(session.scalars(select(Person)).all()) == 1

    def test_group_roles_are_scoped_to_their_tenants(self, browser, person_browser, provider, ctx):
        assert sign_in(browser, person_browser, provider, "tomas").status_code == 303
        home = browser.get("/ui/account", headers=HTML).text
        assert "azdev_approver_tech" in home
        assert "<td>to</td>" in home
        assert "every tenant" not in home

    def test_an_existing_person_is_never_linked_by_e_mail(
        self, browser, person_browser, provider, make_person, ctx
    ):
        make_person("bob@example.org", [("admin", None)])
        refused(sign_in(browser, person_browser, provider, "bob"))
        with ctx.read() as session:
            assert session.scalars(select(PersonLink)).all() == []

    def test_a_linked_person_keeps_their_own_grants(
        self, browser, person_browser, provider, make_person
    ):
        make_person("carla@example.org", [("azdev_auditor", None)], [("oidc", "carla")])
        assert sign_in(browser, person_browser, provider, "carla").status_code == 303
        assert "azdev_auditor" in browser.get("/ui/account", headers=HTML).text


class TestAttacks:
    def test_a_state_that_does_not_match_is_refused(self, browser, person_browser, provider):
        back = sign_in_at_provider(
            person_browser, start(browser), issuer=provider.issuer, login="alice"
        )
        query = parse_qs(urlsplit(back).query)
        query["state"] = ["forged-state"]
        refused(browser.get(f"/ui/auth/callback?{urlencode(query, doseq=True)}", headers=JSON))

    def test_a_nonce_that_does_not_match_is_refused(
        self, browser, person_browser, provider, settings, clock
    ):
        location = start(browser)
        reseal(browser, settings, clock, nonce="not-the-nonce-sent")
        back = sign_in_at_provider(person_browser, location, issuer=provider.issuer, login="alice")
        refused(browser.get(callback_path(back), headers=JSON))

    def test_a_pkce_verifier_that_does_not_match_is_refused(
        self, browser, person_browser, provider, settings, clock
    ):
        location = start(browser)
        reseal(browser, settings, clock, verifier="v" * 86)
        back = sign_in_at_provider(person_browser, location, issuer=provider.issuer, login="alice")
        refused(browser.get(callback_path(back), headers=JSON))

    def test_a_callback_in_a_browser_that_did_not_start_is_refused(
        self, browser, person_browser, provider, app
    ):
        # Login CSRF: the attacker's own code, replayed into the victim's browser.
        back = sign_in_at_provider(
            person_browser, start(browser), issuer=provider.issuer, login="alice"
        )
        from tests.identity.conftest import new_browser

        with new_browser(app) as victim:
            refused(victim.get(callback_path(back), headers=JSON))

    def test_a_code_is_used_once(self, browser, person_browser, provider):
        location = start(browser)
        pending = browser.cookies.get(PENDING_COOKIE)
        back = sign_in_at_provider(person_browser, location, issuer=provider.issuer, login="alice")
        assert browser.get(callback_path(back), headers=HTML).status_code == 303
        browser.cookies.set(PENDING_COOKIE, pending, domain="testserver.local")
        refused(browser.get(callback_path(back), headers=JSON))

    def test_an_answer_naming_another_issuer_is_refused(self, browser, person_browser, provider):
        back = sign_in_at_provider(
            person_browser, start(browser), issuer=provider.issuer, login="alice"
        )
        query = parse_qs(urlsplit(back).query)
        query["iss"] = ["https://evil.example"]
        refused(browser.get(f"/ui/auth/callback?{urlencode(query, doseq=True)}", headers=JSON))

    def test_a_provider_error_is_refused(self, browser, provider):
        start(browser)
        refused(browser.get("/ui/auth/callback?error=access_denied&state=x", headers=JSON))

    def test_next_cannot_leave_the_ui(self, browser, person_browser, provider):
        location = start(browser, next_path="https://evil.example/")
        back = sign_in_at_provider(person_browser, location, issuer=provider.issuer, login="alice")
        answer = browser.get(callback_path(back), headers=HTML)
        assert answer.headers["location"] == "/ui/"


def test_without_a_provider_the_oidc_routes_are_absent(app_without_oidc):
    from tests.identity.conftest import new_browser

    with new_browser(app_without_oidc) as browser:
        assert browser.get("/ui/login/oidc", headers=JSON).status_code == 404
        assert browser.get("/ui/auth/callback", headers=JSON).status_code == 404
        assert "/ui/login/oidc" not in browser.get("/ui/login", headers=HTML).text


@pytest.fixture
def app_without_oidc(settings, database, clock):
    from azdev_ica.api.app import create_app

    return create_app(
        settings.model_copy(update={"oidc_login": None}), database=database, clock=clock
    )
