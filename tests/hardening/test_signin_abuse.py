"""Sign-in abuse over real HTTP: a concurrent burst against one login, rate limits per client
address and per login, addresses from trusted proxies only, the ledger growing by one entry
per lockout period, and bounded password hashing."""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from ipaddress import ip_network
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox, SignInThrottle
from tests.identity.conftest import PASSWORD
from tests.support.liveserver import LiveServer

BURST = 24
LOGIN = "nia@example.org"
WRONG = "wrong password 123"
FAILED = "urn:ica:problem:sign-in-failed"
LOCKED = "urn:ica:problem:sign-in-locked"
BUSY = "urn:ica:problem:too-many-requests"


@pytest.fixture
def settings(settings: Any) -> Any:
    # The rate limits are tested on their own below; here they stay out of the way.
    return settings.model_copy(
        update={
            "password_hash_profile": "cheapest",
            "signin_rate_per_address": 10_000,
            "signin_rate_per_login": 10_000,
            "signin_hash_concurrency": 64,
        }
    )


@pytest.fixture
def live(app: Any) -> Iterator[str]:
    server = LiveServer(app).start()
    yield server.url
    server.stop()


@pytest.fixture
def person(ctx: Any, make_person: Callable[..., Any]) -> Any:
    from tests.conftest import enrol_with_link

    handle = make_person(LOGIN, [("azdev_devops", None)])
    enrol_with_link(ctx, LOGIN, PASSWORD, totp=False)
    return handle


def sign_in(
    url: str, login: str, password: str, *, forwarded_for: str | None = None
) -> tuple[int, str, dict[str, str]]:
    """POST the sign-in form as a browser would (double-submit CSRF cookie and field);
    (status, problem type or "signed-in", headers)."""
    token = secrets.token_urlsafe(16)
    body = urllib.parse.urlencode(
        {"csrf_token": token, "login": login, "password": password, "code": "", "next": "/ui"}
    ).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "Cookie": f"__Host-ica_login={token}",
    }
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    request = urllib.request.Request(f"{url}/ui/login", data=body, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect())
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, "signed-in", _lower(response.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        if exc.code == 303:
            return 303, "signed-in", _lower(exc.headers)
        return exc.code, json.loads(raw)["type"], _lower(exc.headers)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def burst(url: str, passwords: list[str]) -> list[tuple[int, str, dict[str, str]]]:
    """Send the sign-ins all at once (released together by a barrier), in threads."""
    barrier = threading.Barrier(len(passwords))
    answers: list[Any] = [None] * len(passwords)

    def one(index: int) -> None:
        barrier.wait()
        answers[index] = sign_in(url, LOGIN, passwords[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(passwords))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def actions(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))


def entries(ctx: Any, action: str) -> list[dict[str, Any]]:
    with ctx.read() as session:
        bodies = session.scalars(
            select(AuditInbox.body).where(AuditInbox.action == action).order_by(AuditInbox.id)
        )
        return [json.loads(body) for body in bodies]


def test_a_burst_of_wrong_passwords_is_checked_no_more_than_the_limit(live, person, ctx, settings):
    answers = burst(live, [WRONG] * BURST)
    kinds = Counter(kind for _, kind, _ in answers)
    limit = settings.signin_max_failures
    assert kinds == {FAILED: limit, LOCKED: BURST - limit}, kinds
    assert actions(ctx).count("signin.failed") == limit
    assert actions(ctx).count("signin.lockout") == 1
    # The right password, after the burst: the login is locked.
    assert sign_in(live, LOGIN, PASSWORD)[1] == LOCKED


def test_a_right_password_in_the_burst_signs_in_only_within_the_limit(live, person, ctx, settings):
    passwords = [WRONG] * BURST
    passwords.insert(BURST // 2, PASSWORD)
    answers = burst(live, passwords)
    mine = answers[BURST // 2][1]
    limit = settings.signin_max_failures
    trail = actions(ctx)
    if mine == "signed-in":
        # Admitted among the first `limit` attempts: fewer failures were checked before it.
        assert trail[: trail.index("signin")].count("signin.failed") <= limit - 1, trail
    else:
        assert mine == LOCKED
        assert trail.count("signin.failed") == limit
        assert "signin" not in trail


def test_a_locked_login_adds_one_ledger_entry_per_lockout_period(live, person, ctx, settings):
    for _ in range(settings.signin_max_failures):
        assert sign_in(live, LOGIN, WRONG)[1] == FAILED
    before = len(actions(ctx))
    for _ in range(40):
        assert sign_in(live, LOGIN, WRONG)[1] == LOCKED
    assert sign_in(live, LOGIN, PASSWORD)[1] == LOCKED
    assert len(actions(ctx)) == before  # 41 refusals, no entry yet
    ctx.clock.advance(timedelta(seconds=settings.signin_lockout_seconds + 1))
    assert sign_in(live, LOGIN, PASSWORD)[1] == "signed-in"
    [summary] = entries(ctx, "signin.refused")
    assert summary["data"]["count"] == 41
    assert summary["data"]["reason"] == "locked"
    assert actions(ctx)[before:] == ["signin.refused", "signin"]


def test_refusals_of_a_lockout_nobody_returns_to_are_recorded_by_retention(
    live, person, ctx, settings
):
    from azdev_ica.services.retention import purge

    for _ in range(settings.signin_max_failures):
        sign_in(live, LOGIN, WRONG)
    for _ in range(7):
        assert sign_in(live, LOGIN, WRONG)[1] == LOCKED
    purge(ctx)
    assert entries(ctx, "signin.refused") == []  # still locked: the period is not over
    ctx.clock.advance(timedelta(days=2))
    purge(ctx)
    [summary] = entries(ctx, "signin.refused")
    assert summary["data"]["count"] == 7
    with ctx.read() as session:
        assert session.scalars(select(SignInThrottle)).all() == []


def _guard(app: Any, **limits: int) -> Any:
    from azdev_ica.auth.signin_guard import SignInGuard

    values = {"per_address": 10_000, "per_login": 10_000, "hash_concurrency": 64, **limits}
    # A clock that stands still: no attempt is refilled while the test runs.
    guard = SignInGuard(**values, clock=lambda: 1000.0)
    app.state.signin_guard = guard
    return guard


def test_sign_in_is_rate_limited_per_client_address(app, live, person, ctx):
    _guard(app, per_address=3)
    for login in ("a@example.org", "b@example.org", "c@example.org"):
        assert sign_in(live, login, WRONG)[1] == FAILED
    trail = len(actions(ctx))
    status, kind, headers = sign_in(live, "d@example.org", WRONG)
    assert (status, kind) == (429, BUSY)
    assert int(headers["retry-after"]) > 0
    assert len(actions(ctx)) == trail  # refused before anything was written
    # The right password does not get past it either.
    assert sign_in(live, LOGIN, PASSWORD)[0] == 429


def test_sign_in_is_rate_limited_per_login_across_addresses(app, live, person, settings):
    app.state.settings = settings.model_copy(
        update={"trusted_proxies": [ip_network("127.0.0.1/32")]}
    )
    _guard(app, per_address=2, per_login=3)
    answers = [sign_in(live, LOGIN, WRONG, forwarded_for=f"203.0.113.{n}")[1] for n in range(4)]
    assert answers == [FAILED, FAILED, FAILED, BUSY]


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(app, live, person, settings):
    _guard(app, per_address=2)
    # Not a trusted proxy: the header is the client's own claim, and ignored.
    spoofed = [
        sign_in(live, f"x{n}@example.org", WRONG, forwarded_for=f"198.51.100.{n}")[1]
        for n in range(3)
    ]
    assert spoofed == [FAILED, FAILED, BUSY]
    # Behind a trusted proxy, each forwarded client has its own budget; a client cannot
    # pick one by prepending addresses of its own (the proxy's addition is the rightmost).
    app.state.settings = settings.model_copy(
        update={"trusted_proxies": [ip_network("127.0.0.1/32")]}
    )
    _guard(app, per_address=2)
    forwarded = [
        sign_in(live, f"y{n}@example.org", WRONG, forwarded_for=f"10.9.9.{n}, 203.0.113.7")[1]
        for n in range(3)
    ]
    assert forwarded == [FAILED, FAILED, BUSY]
    assert sign_in(live, "z@example.org", WRONG, forwarded_for="203.0.113.8")[1] == FAILED


def test_password_hashing_is_bounded_and_beyond_it_is_a_429(app, live, person, ctx):
    guard = _guard(app, hash_concurrency=1)
    assert guard.hash_slots.acquire(timeout=5)  # another sign-in is being hashed
    try:
        status, kind, headers = sign_in(live, LOGIN, PASSWORD)
    finally:
        guard.hash_slots.release()
    assert (status, kind) == (429, BUSY)
    assert headers["retry-after"] == "1"
    with ctx.read() as session:
        assert session.scalars(select(SignInThrottle)).all() == []  # nothing was counted
    assert sign_in(live, LOGIN, PASSWORD)[1] == "signed-in"
