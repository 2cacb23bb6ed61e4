"""Accounts in a real browser: a new person enrols through the link an administrator made
(and nobody else learns their credentials), the link is good once and not after it expires,
a reset ends the old password, a recovery code signs in once, signing asks for a fresh
second factor (step-up)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from azdev_ica.auth import totp
from azdev_ica.auth.principal import Actor
from azdev_ica.services.enrolment import (
    complete_enrolment,
    issue_enrolment_link,
    new_pending_totp,
)
from tests.console.test_foundation import sign_in
from tests.identity.conftest import PASSWORD

NEW_PASSWORD = "my own long passphrase"
OPERATOR = Actor(kind="operator", id="test")


@pytest.fixture
def app(app: Any) -> Any:
    """The app with one extra page behind the step-up dependency, standing in for a signing
    form (the approval page declares the same dependency)."""
    from azdev_ica.api.deps import require
    from azdev_ica.api.routes.ui import login_redirect
    from azdev_ica.auth.roles import Permission
    from azdev_ica.web.stepup import StepUp

    @app.get(
        "/ui/test-signing",
        dependencies=[Depends(login_redirect), Depends(require(Permission.SELF)), StepUp],
        include_in_schema=False,
    )
    def signing(request: Request) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>Sign</title><h1>Ready to sign</h1>")

    return app


def key_on_page(page: Any) -> bytes:
    """The authenticator key from the page's text fallback (what a person types by hand)."""
    text = page.locator("#totp-key").inner_text().replace(" ", "")
    return base64.b32decode(text + "=" * (-len(text) % 8))


def code_for(secret: bytes, ctx: Any, offset: int = 0) -> str:
    return totp.code_at_step(secret, totp.time_step(ctx.clock.now()) + offset)


def enrol_in_page(
    page: Any, ctx: Any, link: str, password: str = NEW_PASSWORD
) -> tuple[bytes, list[str]]:
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("The new password again").fill(password)
    secret = key_on_page(page)
    assert page.locator("figure.qr-figure svg").is_visible()  # the QR code, as SVG
    page.get_by_label("The code your app shows now").fill(code_for(secret, ctx))
    page.get_by_role("button", name="Save and finish").click()
    page.get_by_role("heading", name="Your sign-in is set up").wait_for()
    codes = page.locator("#recovery-codes code").all_inner_texts()
    return secret, codes


def sign_in_with(page: Any, login: str, password: str, code: str) -> None:
    page.goto("/ui/login")
    page.get_by_label("Sign-in name").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_label("One-time code").fill(code)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    # Settled (the favicon too): navigating on at once would abort its request.
    page.wait_for_load_state("networkidle")


def test_a_new_person_enrols_through_the_admins_link_and_signs_in(
    new_context, ctx, clock, local_user, watched
):
    admin = local_user("ada@example.org", [("admin", None)], totp=True)
    admin_page = new_context().new_page()
    sign_in(admin_page, ctx, admin)
    admin_page.get_by_role("link", name="People").click()
    admin_page.get_by_label("Sign-in name (usually the e-mail)").fill("Eve@Example.org")
    admin_page.get_by_label("Display name").fill("Eve Tui")
    admin_page.get_by_role("button", name="Add and make an enrolment link").click()
    link = admin_page.locator("#enrolment-link").inner_text()
    assert re.fullmatch(r"https?://\S+/ui/enrol/[A-Za-z0-9_-]{43}", link)
    # The administrator saw a link, never a password or an authenticator key.
    assert "otpauth" not in admin_page.content()
    path = "/ui/enrol/" + link.rsplit("/ui/enrol/", 1)[1]

    eve = new_context().new_page()
    secret, codes = enrol_in_page(eve, ctx, path)
    assert len(codes) == 10
    assert len(set(codes)) == 10

    # The confirming code is spent; the next one signs in.
    clock.advance(timedelta(seconds=30))
    sign_in_with(eve, "eve@example.org", NEW_PASSWORD, code_for(secret, ctx))
    assert eve.url.endswith("/ui/")
    assert eve.get_by_text("Signed in as eve@example.org").is_visible()

    # Good once: the same link now answers with a sentence, not a form.
    watched.expected_statuses.add(404)
    answer = eve.goto(path)
    assert answer.status == 404
    assert eve.get_by_text("this enrolment link is not valid").is_visible()
    assert eve.get_by_label("New password", exact=True).count() == 0


def test_an_expired_link_is_refused(page, ctx, clock, make_person, watched):
    make_person("finn@example.org")
    issued = issue_enrolment_link(ctx, actor=OPERATOR, login="finn@example.org")
    clock.advance(timedelta(hours=72))
    watched.expected_statuses.add(404)
    answer = page.goto("/ui/enrol/" + issued.token)
    assert answer.status == 404
    assert page.get_by_text("this enrolment link is not valid").is_visible()


def _enrolled(ctx: Any, make_person: Any, login: str, grants: list[Any]) -> tuple[bytes, list[str]]:
    make_person(login, grants)
    issued = issue_enrolment_link(ctx, actor=OPERATOR, login=login)
    secret, pending = new_pending_totp(ctx, issued.person_id)
    done = complete_enrolment(
        ctx,
        token=issued.token,
        password=PASSWORD,
        pending_totp=pending,
        code=code_for(secret, ctx, -1),
        hash_profile="cheapest",
    )
    return secret, done.recovery_codes


def test_a_recovery_code_signs_in_once(new_context, ctx, make_person, watched):
    _, codes = _enrolled(ctx, make_person, "gus@example.org", [("azdev_approver_biz", "to")])
    first = new_context().new_page()
    sign_in_with(first, "gus@example.org", PASSWORD, codes[0])
    assert first.url.endswith("/ui/")
    watched.expected_statuses.add(401)
    second = new_context().new_page()
    sign_in_with(second, "gus@example.org", PASSWORD, codes[0])
    assert second.get_by_role("alert").is_visible()
    assert "/ui/login" in second.url


def test_a_reset_ends_the_old_password_and_session(
    new_context, ctx, local_user, make_person, watched
):
    secret, _ = _enrolled(ctx, make_person, "hal@example.org", [("azdev_approver_tech", "to")])
    hal = new_context().new_page()
    sign_in_with(hal, "hal@example.org", PASSWORD, code_for(secret, ctx))
    assert hal.url.endswith("/ui/")

    admin = local_user("ida@example.org", [("admin", None)], totp=True)
    admin_page = new_context().new_page()
    sign_in(admin_page, ctx, admin, start="/ui/admin/people")
    admin_page.get_by_text("Manage hal@example.org").click()
    admin_page.get_by_label("Why reset hal@example.org").fill("lost phone")
    admin_page.get_by_role("button", name="Reset the credentials of hal@example.org").click()
    assert "/ui/enrol/" in admin_page.locator("#enrolment-link").inner_text()

    # Hal's open session ended, and the old password no longer signs in.
    hal.goto("/ui/account")
    assert "/ui/login" in hal.url
    watched.expected_statuses.add(401)
    sign_in_with(hal, "hal@example.org", PASSWORD, code_for(secret, ctx, 1))
    assert hal.get_by_role("alert").is_visible()


def test_signing_asks_for_a_fresh_second_factor(page, ctx, clock, make_person, watched):
    secret, codes = _enrolled(ctx, make_person, "jan@example.org", [("azdev_approver_biz", "to")])
    # A recovery code signs in, but is no step-up.
    sign_in_with(page, "jan@example.org", PASSWORD, codes[0])
    page.goto("/ui/test-signing")
    page.wait_for_url("**/ui/stepup?next=/ui/test-signing")
    watched.expected_statuses.add(400)
    page.get_by_label("One-time code").fill(code_for(secret, ctx, -1))  # spent at enrolment
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_role("alert").is_visible()
    page.get_by_label("One-time code").fill(code_for(secret, ctx))
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="Ready to sign").wait_for()
    # Fresh for a few minutes, then asked again.
    clock.advance(timedelta(minutes=6))
    page.goto("/ui/test-signing")
    page.wait_for_url("**/ui/stepup?next=/ui/test-signing")


def test_a_code_at_sign_in_is_a_step_up(page, ctx, make_person):
    secret, _ = _enrolled(ctx, make_person, "kai@example.org", [("azdev_approver_tech", "to")])
    sign_in_with(page, "kai@example.org", PASSWORD, code_for(secret, ctx))
    page.goto("/ui/test-signing")
    page.get_by_role("heading", name="Ready to sign").wait_for()


def test_my_password_change_needs_the_current_one(page, ctx, clock, make_person, watched):
    secret, _ = _enrolled(ctx, make_person, "lea@example.org", [("azdev_auditor", "to")])
    sign_in_with(page, "lea@example.org", PASSWORD, code_for(secret, ctx))
    page.goto("/ui/account")
    page.get_by_role("link", name="Password, authenticator and recovery codes").click()
    watched.expected_statuses.add(400)
    page.get_by_label("Current password").fill("not my password at all")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("The new password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change my password").click()
    assert page.get_by_text("the current password is not right").is_visible()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("The new password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change my password").click()
    assert page.get_by_text("Your password is changed.").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    clock.advance(timedelta(seconds=30))
    sign_in_with(page, "lea@example.org", NEW_PASSWORD, code_for(secret, ctx))
    assert page.url.endswith("/ui/")


def test_an_admin_creates_an_api_key_and_sees_it_once(page, ctx, local_user, server):
    import httpx2

    admin = local_user("max@example.org", [("admin", None)], totp=True)
    sign_in(page, ctx, admin, start="/ui/admin/people")
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("tonga-dev")
    page.get_by_label("Role").select_option("azdev_devops")
    page.get_by_label("Tenants (comma-separated, or * for every tenant)").fill("to")
    page.get_by_role("button", name="Create the key").click()
    secret = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"ica_[a-z2-7]{10}_[A-Za-z0-9_-]{43}", secret)
    runs = httpx2.get(
        server.url + "/api/v1/azdev/runs", headers={"Authorization": f"Bearer {secret}"}
    )
    assert runs.status_code == 200
    page.goto("/ui/admin/api-keys")
    assert page.get_by_role("cell", name="tonga-dev", exact=True).is_visible()
    assert secret not in page.content()  # shown once
    page.get_by_role("button", name="Revoke the key tonga-dev").click()
    assert page.get_by_text("is revoked").is_visible()
    again = httpx2.get(
        server.url + "/api/v1/azdev/runs", headers={"Authorization": f"Bearer {secret}"}
    )
    assert again.status_code == 401
