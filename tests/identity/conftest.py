"""People signing in to the web UI: a browser-like client on https (the session cookie is
`__Host-` and Secure), cheap argon2 parameters, and helpers to sign in."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from azdev_ica.auth.principal import Actor

ORIGIN = "https://testserver"
HTML = {"Accept": "text/html,application/xhtml+xml", "Origin": ORIGIN}
JSON = {"Accept": "application/json", "Origin": ORIGIN}
PASSWORD = "correct horse battery staple"
OPERATOR = Actor(kind="operator", id="test")


@pytest.fixture
def settings(settings: Any) -> Any:
    # RFC 9106 parameters cost ~130 ms a hash on 2 cores: the suite uses the cheapest.
    return settings.model_copy(update={"password_hash_profile": "cheapest"})


def new_browser(app: Any) -> TestClient:
    return TestClient(app, base_url=ORIGIN, raise_server_exceptions=False, follow_redirects=False)


@pytest.fixture
def browser(app: Any) -> Iterator[TestClient]:
    with new_browser(app) as client:
        yield client


def form_token(page: str, name: str = "csrf_token") -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found, page[:400]
    return found.group(1)


def totp_secret(uri: str) -> bytes:
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def post_login(
    browser: TestClient,
    login: str,
    password: str = PASSWORD,
    code: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    next_path: str | None = None,
) -> Any:
    page = browser.get("/ui/login", headers=HTML)
    assert page.status_code == 200
    form = {
        "csrf_token": form_token(page.text),
        "login": login,
        "password": password,
        "code": code or "",
        "next": next_path or form_token(page.text, "next"),
    }
    return browser.post("/ui/login", data=form, headers=headers or JSON)


@pytest.fixture
def local_user(ctx: Any, make_person: Callable[..., Any]) -> Callable[..., Any]:
    """A person with a local password (and, with `totp=True`, an enrolled authenticator:
    the handle's `.totp` is the secret)."""
    from tests.conftest import enrol_with_link

    def make(
        login: str, grants: list[tuple[str, str | None]] | None = None, *, totp: bool = False
    ) -> Any:
        handle = make_person(login, grants or [])
        handle.totp = enrol_with_link(ctx, login, PASSWORD, totp=totp)
        return handle

    return make
