"""Local sign-in over HTTP: password and one-time code, the session cookie, lockout, and one
answer for every failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from azdev_ica.auth import totp
from azdev_ica.db.tables import AuditInbox, SignInThrottle
from tests.identity.conftest import HTML, JSON, PASSWORD, form_token, post_login

SESSION = "__Host-ica_session"


def actions(ctx) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))


def audit_bodies(ctx) -> bytes:
    with ctx.read() as session:
        return b"\n".join(session.scalars(select(AuditInbox.body)))


def code_now(handle, ctx, offset: int = 0) -> str:
    return totp.code_at_step(handle.totp, totp.time_step(ctx.clock.now()) + offset)


def refused_alike(first, second) -> None:
    assert first.status_code == second.status_code == 401
    one, two = first.json(), second.json()
    assert one["type"] == two["type"] == "urn:ica:problem:sign-in-failed"
    assert one["detail"] == two["detail"]


class TestPasswordSignIn:
    def test_a_person_signs_in_and_sees_their_grants(self, browser, local_user, ctx):
        local_user("dana@example.org", [("azdev_devops", "to"), ("azdev_auditor", None)])
        answer = post_login(browser, "dana@example.org")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION}=")
        for attribute in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "domain=" not in cookie.lower()
        home = browser.get("/ui/account", headers=HTML)
        assert home.status_code == 200
        assert "Signed in as dana@example.org" in home.text
        assert "azdev_devops" in home.text
        assert "every tenant" in home.text
        assert home.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        assert actions(ctx)[-1] == "signin"

    def test_a_browser_that_is_not_signed_in_goes_to_the_sign_in_page(self, browser):
        answer = browser.get("/ui/", headers=HTML)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/login?next=/ui/"
        # An API client gets the problem document instead.
        problem = browser.get("/ui/", headers=JSON)
        assert problem.status_code == 401
        assert problem.json()["type"] == "urn:ica:problem:unauthenticated"

    def test_wrong_password_and_unknown_login_get_the_same_answer(self, browser, local_user, ctx):
        local_user("erin@example.org", [("azdev_devops", None)])
        wrong = post_login(browser, "erin@example.org", "not the password at all")
        unknown = post_login(browser, "nobody@example.org", "not the password at all")
        refused_alike(wrong, unknown)
        assert SESSION not in browser.cookies
        assert actions(ctx)[-2:] == ["signin.failed", "signin.failed"]
        bodies = audit_bodies(ctx)
        assert b"not the password" not in bodies
        assert b"nobody@example.org" not in bodies

    def test_a_disabled_person_cannot_sign_in(self, browser, local_user, ctx):
        from azdev_ica.services.people import disable_person
        from tests.identity.conftest import OPERATOR

        local_user("fred@example.org", [("azdev_devops", None)])
        disable_person(ctx, actor=OPERATOR, login="fred@example.org", reason="left")
        refused_alike(
            post_login(browser, "fred@example.org"), post_login(browser, "ghost@example.org")
        )

    def test_a_browser_gets_the_form_again_with_a_message(self, browser, local_user):
        local_user("gail@example.org")
        answer = post_login(browser, "gail@example.org", "wrong password here", headers=HTML)
        assert answer.status_code == 401
        assert 'role="alert"' in answer.text
        assert "password or one-time code is not valid" in answer.text


class TestSecondFactor:
    def test_an_approver_needs_an_enrolled_authenticator(self, browser, local_user):
        local_user("hana@example.org", [("azdev_approver_tech", "to")])
        refused_alike(post_login(browser, "hana@example.org"), post_login(browser, "x@example.org"))

    @pytest.mark.parametrize("role", ["admin", "tenant_admin", "azdev_override_signer"])
    def test_administrators_and_signers_must_give_the_code(self, browser, local_user, ctx, role):
        person = local_user(
            "ivan@example.org", [(role, None if role == "admin" else "to")], totp=True
        )
        refused_alike(post_login(browser, "ivan@example.org"), post_login(browser, "y@example.org"))
        answer = post_login(browser, "ivan@example.org", code=code_now(person, ctx))
        assert answer.status_code == 303
        assert actions(ctx)[-1] == "signin"

    def test_a_wrong_code_is_refused(self, browser, local_user, ctx):
        person = local_user("jo@example.org", [("admin", None)], totp=True)
        wrong = str((int(code_now(person, ctx)) + 1) % 10**6).zfill(6)
        refused_alike(
            post_login(browser, "jo@example.org", code=wrong),
            post_login(browser, "z@example.org", code=wrong),
        )

    def test_a_code_is_good_once(self, browser, local_user, ctx):
        person = local_user("kim@example.org", [("azdev_approver_biz", "ws")], totp=True)
        code = code_now(person, ctx)
        assert post_login(browser, "kim@example.org", code=code).status_code == 303
        replayed = post_login(browser, "kim@example.org", code=code)
        assert replayed.status_code == 401
        assert replayed.json()["type"] == "urn:ica:problem:sign-in-failed"
        # Nor an earlier code still inside the skew window.
        earlier = post_login(browser, "kim@example.org", code=code_now(person, ctx, -1))
        assert earlier.status_code == 401
        # The next step's code works.
        ctx.clock.advance(timedelta(seconds=30))
        assert post_login(browser, "kim@example.org", code=code_now(person, ctx)).status_code == 303

    def test_one_step_of_clock_skew_is_accepted(self, browser, local_user, ctx):
        person = local_user("lee@example.org", [("admin", None)], totp=True)
        answer = post_login(browser, "lee@example.org", code=code_now(person, ctx, +1))
        assert answer.status_code == 303
        too_far = post_login(browser, "lee@example.org", code=code_now(person, ctx, +3))
        assert too_far.status_code == 401

    def test_a_person_with_an_enrolled_app_always_gives_the_code(self, browser, local_user, ctx):
        person = local_user("max@example.org", [("azdev_auditor", None)], totp=True)
        assert post_login(browser, "max@example.org").status_code == 401
        assert post_login(browser, "max@example.org", code=code_now(person, ctx)).status_code == 303


class TestLockout:
    def test_failures_lock_the_login_with_back_off(self, browser, local_user, ctx, settings):
        local_user("nia@example.org", [("azdev_devops", None)])
        for _ in range(settings.signin_max_failures):
            assert post_login(browser, "nia@example.org", "wrong password 123").status_code == 401
        # Locked: even the right password is refused now, with a locked answer.
        locked = post_login(browser, "nia@example.org")
        assert locked.status_code == 401
        assert locked.json()["type"] == "urn:ica:problem:sign-in-locked"
        assert 0 < locked.json()["retry_after_seconds"] <= settings.signin_lockout_seconds + 1
        assert "signin.lockout" in actions(ctx)
        ctx.clock.advance(timedelta(seconds=settings.signin_lockout_seconds + 1))
        # One more failure after the lock ran out locks again, for twice as long.
        assert post_login(browser, "nia@example.org", "wrong password 123").status_code == 401
        again = post_login(browser, "nia@example.org")
        assert again.json()["type"] == "urn:ica:problem:sign-in-locked"
        assert again.json()["retry_after_seconds"] > settings.signin_lockout_seconds + 1
        ctx.clock.advance(timedelta(seconds=2 * settings.signin_lockout_seconds + 1))
        assert post_login(browser, "nia@example.org").status_code == 303
        # Success forgets the failures.
        with ctx.read() as session:
            assert session.scalars(select(SignInThrottle)).all() == []

    def test_unknown_logins_lock_exactly_like_known_ones(self, browser, local_user, settings):
        local_user("omar@example.org")
        answers = {}
        for login in ("omar@example.org", "nobody-here@example.org"):
            for _ in range(settings.signin_max_failures):
                post_login(browser, login, "wrong password 123")
            answer = post_login(browser, login, PASSWORD)
            answers[login] = (answer.status_code, answer.json()["type"], answer.json()["detail"])
        assert answers["omar@example.org"] == answers["nobody-here@example.org"]
        assert answers["omar@example.org"][1] == "urn:ica:problem:sign-in-locked"

    def test_the_throttle_names_no_login_in_clear(self, browser, ctx):
        post_login(browser, "secret-login@example.org", "wrong password 123")
        with ctx.read() as session:
            keys = session.scalars(select(SignInThrottle.login_key)).all()
        assert len(keys) == 1
        assert "secret" not in keys[0]


class TestCommandLine:
    def test_no_command_sets_or_shows_someone_elses_credentials(
        self, monkeypatch, capsys, settings, ctx, make_person, browser
    ):
        import re

        from azdev_ica.cli.main import main

        monkeypatch.setenv("ICA_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("ICA_SECRET_KEY", settings.secret_key.get_secret_value())
        monkeypatch.setenv("ICA_DATA_DIR", str(settings.data_dir))
        make_person("pat@example.org", [("admin", None)])
        # The commands that let an operator set a password or TOTP or mint a token are gone.
        for command in ("password", "totp", "token"):
            with pytest.raises(SystemExit) as exited:
                main(["user", command, "pat@example.org"])
            assert exited.value.code == 64
        capsys.readouterr()
        assert main(["user", "add", "quinn@example.org", "--name", "Quinn"]) == 0
        out = capsys.readouterr().out
        [link] = re.findall(r"https://\S+/ui/enrol/[A-Za-z0-9_-]{43}", out)
        assert "otpauth" not in out
        token = link.rsplit("/", 1)[1]
        assert browser.get(f"/ui/enrol/{token}", headers=HTML).status_code == 200
        assert main(["user", "reset", "pat@example.org", "--reason", "lost phone"]) == 0
        [reset_link] = re.findall(r"/ui/enrol/([A-Za-z0-9_-]{43})", capsys.readouterr().out)
        assert browser.get(f"/ui/enrol/{reset_link}", headers=HTML).status_code == 200
        assert actions(ctx)[-4:] == [
            "person.create",
            "enrolment.link",
            "credential.reset",
            "enrolment.link",
        ]
        assert token.encode() not in audit_bodies(ctx)
        assert reset_link.encode() not in audit_bodies(ctx)


def test_the_login_form_is_accessible(browser):
    page = browser.get("/ui/login", headers=HTML)
    for field in ("login", "password", "code"):
        assert f'<label for="{field}">' in page.text
        assert f'id="{field}"' in page.text
    assert 'autocomplete="one-time-code"' in page.text
    assert form_token(page.text)
