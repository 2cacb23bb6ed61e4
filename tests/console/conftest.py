"""Browser tests of the console: the machine's Chromium driven by Playwright (sync API, plain
fixtures: no pytest-playwright), against a real ICA server (uvicorn) on loopback.

One browser and one live server per xdist worker (session scope); each test gets a fresh
browser context and its own app (database, settings, clock), which the worker's server
serves while the test runs. A browser test runs on PostgreSQL only: what it checks is the
console (pages, forms, scripts), and the storage under the pages is tested on both databases
by the storage and API tests; PostgreSQL, the stricter of the two (grouping, types), is the
one a console query could fail on. Every page a test opens is watched: a console error, a page
error or a failed request fails the test (`Watched.assert_clean`, called at teardown).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.approvals.conftest import run_key  # noqa: F401  (a production run of Tonga)
from tests.conftest import _fresh_database
from tests.identity.conftest import local_user, settings  # noqa: F401  (cheap hashes, people)
from tests.support.liveserver import LiveServer

# Playwright must only drive the machine's browser, never fetch one of its own.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = os.environ.get("ICA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PHONE = {"width": 390, "height": 844}


@dataclass
class Watched:
    """What went wrong in a browser context: console errors, uncaught page errors, failed
    requests and error answers (a 4xx a test expects, e.g. a 404 page, it names)."""

    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)
    # Only ICA's own pages and requests are judged (not an identity provider's pages).
    origin: str = ""

    def _ours(self, url: str) -> bool:
        return url.startswith(self.origin + "/")

    def attach(self, context: Any) -> None:
        context.on("page", self._watch_page)

    def _watch_page(self, page: Any) -> None:
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self._page_error(page, error))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, page: Any, message: Any) -> None:
        # Chromium logs every 4xx a page receives as "Failed to load resource"; those are
        # judged with their URL in `_response`.
        if not self._ours(page.url):
            return
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console error on {page.url}: {message.text}")

    def _page_error(self, page: Any, error: Any) -> None:
        if self._ours(page.url):
            self.problems.append(f"page error on {page.url}: {error}")

    def _failed(self, request: Any) -> None:
        # A navigation cancels the requests still loading on the page it leaves (the icon,
        # a poll): ERR_ABORTED is that, not a failure.
        if self._ours(request.url) and request.failure != "net::ERR_ABORTED":
            self.problems.append(
                f"request failed: {request.method} {request.url} ({request.failure})"
            )

    def _response(self, response: Any) -> None:
        status = response.status
        if not self._ours(response.url):
            return
        if status >= 500 or (status >= 400 and status not in self.expected_statuses):
            self.problems.append(f"answer {status}: {response.request.method} {response.url}")

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


@pytest.fixture(scope="session")
def chromium(playwright_driver: Any) -> Iterator[Any]:
    """The machine's Chromium, one per worker (Playwright launches it on a fresh temporary
    profile of its own and removes it at close)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make chromium`")
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(params=["postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """The suite's `db_url` (a fresh, migrated database, with the example policy when the test
    takes `ctx`), on PostgreSQL only."""
    policy = "ctx" in request.fixturenames
    with _fresh_database(request, tmp_path, request.param, policy=policy) as url:
        yield url


class CurrentApp:
    """An ASGI app that hands each request to the app of the test running now: one live
    server per worker serves every test's own app (its own database, settings and clock),
    instead of a server started and stopped around each test. Between tests it answers 503."""

    def __init__(self) -> None:
        self.app: Any = None
        self._in_flight = 0
        self._idle = threading.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if app is None:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        with self._idle:
            self._in_flight += 1
        try:
            await app(scope, receive, send)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def detach(self) -> None:
        """Serve no test's app once the requests still in flight (a page closed mid-poll)
        are answered: as stopping a server waits for them, before the database goes."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=30)
            self.app = None


@pytest.fixture(scope="session")
def live_server() -> Iterator[tuple[LiveServer, CurrentApp]]:
    """The worker's live server (uvicorn on loopback) and the switch saying whose app it
    serves."""
    current = CurrentApp()
    running = LiveServer(current).start()
    yield running, current
    running.stop()


@pytest.fixture
def server(app: Any, live_server: tuple[LiveServer, CurrentApp]) -> Iterator[LiveServer]:
    """ICA on loopback over real HTTP, on this test's database (the worker's server, serving
    this test's app while the test runs)."""
    running, current = live_server
    current.app = app
    try:
        yield running
    finally:
        current.detach()


@pytest.fixture
def watched(server: LiveServer) -> Watched:
    return Watched(origin=server.url)


@pytest.fixture
def new_context(
    chromium: Any, server: LiveServer, watched: Watched
) -> Iterator[Callable[..., Any]]:
    """Open a fresh browser context (its own cookies) on the live server; every one is
    watched and closed at teardown."""
    opened: list[Any] = []

    def open_context(**options: Any) -> Any:
        context = chromium.new_context(base_url=server.url, **options)
        # Generous: the machine is shared and sometimes very busy (waits end as soon as met).
        context.set_default_timeout(60_000)
        watched.attach(context)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()
    watched.assert_clean()


@pytest.fixture
def page(new_context: Callable[..., Any]) -> Any:
    return new_context().new_page()
