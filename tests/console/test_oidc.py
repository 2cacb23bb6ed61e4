"""Signing in to the console with OpenID Connect in a real browser, against a real provider
(npm `oidc-provider` on loopback): the authorization code flow with PKCE, back to the page
the person asked for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from azdev_ica.auth.oidc_login import GroupRole, OidcLoginConfig
from azdev_ica.auth.roles import Role
from tests.support.real_oidc import RealOidcProvider

CLIENT_ID = "ica-console"
CLIENT_SECRET = "a-console-secret-for-tests-only"


@pytest.fixture(scope="module")
def running_provider(live_server: Any) -> Iterator[RealOidcProvider]:
    """The provider, started once for this module's tests: it knows the worker's live
    server (whose address every test's app is served on) as the client's callback."""
    server, _ = live_server
    running = RealOidcProvider(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=f"{server.url}/ui/auth/callback",
        groups={"mele": ["sg-tonga-approvers"]},
    ).start()
    yield running
    running.stop()


@pytest.fixture
def provider(
    running_provider: RealOidcProvider, server: Any, app: Any, clock: Any
) -> RealOidcProvider:
    """ICA configured for the provider, its callback on the live server."""
    assert running_provider.redirect_uri == f"{server.url}/ui/auth/callback"
    config = OidcLoginConfig(
        issuer=running_provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=running_provider.redirect_uri,
        scopes=["openid", "profile", "email", "groups"],
        group_roles=[GroupRole(group="sg-tonga-approvers", role=Role.APPROVER_BIZ, tenants=["to"])],
    )
    app.state.settings = app.state.settings.model_copy(update={"oidc_login": config})
    # The provider stamps its ID tokens with the real time; ICA checks them on its clock.
    clock.set(datetime.now(UTC))
    return running_provider


def test_sign_in_with_the_organisations_account(page, server, provider):
    page.goto("/ui/account")
    assert "/ui/login" in page.url
    page.get_by_role("link", name="Sign in with your organisation's account").click()
    # The provider's own pages, as a person goes through them: log in, then consent.
    page.wait_for_url(f"{provider.issuer}/**")
    page.locator("input[name=login]").fill("mele")
    page.locator("input[name=password]").fill("any password")
    for _ in range(5):
        if page.url.startswith(server.url + "/"):
            break
        page.locator("button[type=submit]").first.click()
        page.wait_for_load_state()
    page.wait_for_url(f"{server.url}/ui/account")
    assert page.get_by_text("Signed in as mele").is_visible()
    assert page.get_by_text("azdev_approver_biz (to)").first.is_visible()
