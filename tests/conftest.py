"""Fixtures shared by the whole suite.

Storage tests take the `db_url` fixture, which is parametrised over SQLite and a real
PostgreSQL that this suite starts itself (once, in the controlling process; xdist workers
inherit its URL). Each test gets a fresh, migrated database: a file copy on SQLite, a
`CREATE DATABASE ... TEMPLATE` clone on PostgreSQL (made one test ahead and dropped behind it
in a background thread). A test that takes `ctx` gets its copy
from a second template where the example policy is already applied exactly as `ctx` applied
it (same actor, document and frozen clock), instead of applying it again in every test.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.pgserver import PgServer

PG_URL_ENV = "ICA_TEST_PG_URL"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def example_policy(*, promotion: bool = False) -> str:
    """The example policy's text; without its `promotion` section unless asked, since most
    tests deploy straight to a stage without passing the stages before it (tests/fleet and
    tests/promotion ask for it)."""
    text = EXAMPLE_POLICY.read_text()
    if promotion:
        return text
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("promotion:"):
            skipping = True
            continue
        if skipping and line.strip() and not line[0].isspace():
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)


_pg_server: PgServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _pg_server
    if hasattr(config, "workerinput") or os.environ.get(PG_URL_ENV):
        return
    _pg_server = PgServer.start()
    os.environ[PG_URL_ENV] = _pg_server.url()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _pg_server
    if _pg_server is not None:
        _pg_server.stop()
        os.environ.pop(PG_URL_ENV, None)
        _pg_server = None


# The longest files run first: with `-n 2` a long test drawn last would keep one core busy
# while the other has nothing left to do. Whole files move, so module-scoped fixtures are
# still set up once. (`--durations` names the candidates.)
RUN_FIRST = (
    "tests/api/test_tenant_walk.py",
    "tests/bench/test_smoke.py",
    "tests/docs/test_readme_quickstart.py",
    "tests/pipelines/test_e2e_github.py",
    "tests/replicas/test_crash.py",
    "tests/replicas/test_replicas.py",
    "tests/hardening/test_outage.py",
    "tests/pipelines/test_e2e_azure.py",
    "tests/api/test_bearer_tokens.py",
    "tests/fleet/test_fleet_simulation.py",
    "tests/observe/test_workers.py",
    "tests/deploy/test_nginx.py",
    "tests/deploy/test_image.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return RUN_FIRST.index(path) if path in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def _worker(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


def _migrate(url: str) -> None:
    from azdev_ica.db import migrate
    from azdev_ica.db.engine import make_engine

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    """Playwright's sync driver, once per worker: its event loop stays running in this thread
    while it lives, so a second `sync_playwright()` in the same worker would fail. Every test
    that drives a browser launches it from this driver (the console's `chromium` fixture,
    or its own launch with its own arguments)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        raise RuntimeError(f"{PG_URL_ENV} is not set: the suite's PostgreSQL did not start")
    return url


@pytest.fixture(scope="session")
def pg_template(request: pytest.FixtureRequest, pg_admin_url: str) -> str:
    name = f"ica_template_{_worker(request)}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    _migrate(pg_admin_url.rsplit("/", 1)[0] + "/" + name)
    return name


def _apply_example_policy(url: str) -> None:
    """The example policy, applied as the `ctx` fixture applies it."""
    from azdev_ica.auth.principal import Actor
    from azdev_ica.clock import FrozenClock
    from azdev_ica.db.engine import Database
    from azdev_ica.services.context import ServiceContext
    from azdev_ica.services.policies import apply_policy

    db = Database.from_url(url, pool_size=1)
    try:
        apply_policy(
            ServiceContext(db=db, clock=FrozenClock(T0), pepper=b"template"),
            actor=Actor(kind="operator", id="test"),
            document=example_policy(),
            source=str(EXAMPLE_POLICY),
        )
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def sqlite_policy_template(sqlite_template: Path) -> Path:
    path = sqlite_template.with_name("policy-template.db")
    shutil.copyfile(sqlite_template, path)
    _apply_example_policy(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_policy_template(request: pytest.FixtureRequest, pg_admin_url: str, pg_template: str) -> str:
    name = f"ica_policy_template_{_worker(request)}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    admin.dispose()
    _apply_example_policy(pg_admin_url.rsplit("/", 1)[0] + "/" + name)
    return name


_counter = itertools.count()
# The databases made from the policy template (the `ctx` fixture applies nothing to them).
_WITH_POLICY: set[str] = set()


class _PgClones:
    """This worker's PostgreSQL databases, cloned from a template one test ahead and dropped
    behind the test, in a background thread: a test takes a clone that is already there and
    does not wait for its drop (together about 150 ms of PostgreSQL's work per test, which
    runs while the test itself does). One thread, so a drop never races the next clone."""

    def __init__(self, admin_url: str, worker: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.base = admin_url.rsplit("/", 1)[0] + "/"
        self.worker = worker
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-clones")
        self.ahead: dict[str, Future[str]] = {}

    def _clone(self, template: str) -> str:
        name = f"ica_{self.worker}_{next(_counter)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return name

    def _drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def take(self, template: str) -> str:
        """A fresh clone of `template` (its URL), and the next one started."""
        ready = self.ahead.pop(template, None) or self.thread.submit(self._clone, template)
        name = ready.result()
        self.ahead[template] = self.thread.submit(self._clone, template)
        return self.base + name

    def give_back(self, url: str) -> None:
        self.thread.submit(self._drop, url.rsplit("/", 1)[1])

    def close(self) -> None:
        for ready in self.ahead.values():
            self.give_back(self.base + ready.result())
        self.thread.shutdown(wait=True)
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_clones(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[_PgClones]:
    clones = _PgClones(pg_admin_url, _worker(request))
    yield clones
    clones.close()


@contextmanager
def _fresh_database(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, *, policy: bool = False
) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / "ica.db"
        template_file = "sqlite_policy_template" if policy else "sqlite_template"
        shutil.copyfile(request.getfixturevalue(template_file), path)
        url = f"sqlite:///{path}"
        if policy:
            _WITH_POLICY.add(url)
        yield url
        _WITH_POLICY.discard(url)
        return
    template: str = request.getfixturevalue("pg_policy_template" if policy else "pg_template")
    clones: _PgClones = request.getfixturevalue("pg_clones")
    url = clones.take(template)
    if policy:
        _WITH_POLICY.add(url)
    try:
        yield url
    finally:
        _WITH_POLICY.discard(url)
        clones.give_back(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database on each backend (with the example policy when the test
    takes `ctx`, which would apply it first thing)."""
    policy = "ctx" in request.fixturenames
    with _fresh_database(request, tmp_path, request.param, policy=policy) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each backend with no schema at all (migrations, readiness)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    clones: _PgClones = request.getfixturevalue("pg_clones")
    url = clones.take("template1")
    try:
        yield url
    finally:
        clones.give_back(url)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database, for behaviour only PostgreSQL has (concurrent writers)."""
    with _fresh_database(request, tmp_path, "postgresql") as url:
        yield url


@pytest.fixture
def clock() -> Any:
    from azdev_ica.clock import FrozenClock

    return FrozenClock(T0)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Any:
    from azdev_ica.ledger.keyfile import create_key_file
    from azdev_ica.settings import Settings

    configured = Settings(
        data_dir=tmp_path,
        database_url=db_url,
        secret_key="s" * 48,
        api_key_touch_seconds=0,
        # Tests seal deterministically with `seal_now(ctx)`; no background sealer.
        ledger_sealer=False,
        # Callback tests run a stand-in Azure DevOps on loopback.
        ado_callback_hosts=["127.0.0.1"],
        # Tests run jobs with `jobs.scheduler.tick(...)`; no background scheduler.
        jobs_scheduler=False,
    )
    create_key_file(configured.resolved_ledger_key_file(), f"{configured.public_host}/audit")
    return configured


@pytest.fixture
def database(db_url: str) -> Iterator[Any]:
    from azdev_ica.db.engine import Database

    db = Database.from_url(db_url, pool_size=5)
    yield db
    db.dispose()


@pytest.fixture
def ctx(database: Any, clock: Any, settings: Any, db_url: str) -> Any:
    """A service context on a database with the example policy applied."""
    from azdev_ica.auth.principal import Actor
    from azdev_ica.services.context import LedgerConfig, ServiceContext
    from azdev_ica.services.policies import apply_policy

    context = ServiceContext(
        db=database,
        clock=clock,
        pepper=settings.pepper(),
        ledger=LedgerConfig.from_settings(settings),
    )
    if db_url not in _WITH_POLICY:  # made before anyone asked for `ctx`
        apply_policy(
            context,
            actor=Actor(kind="operator", id="test"),
            document=example_policy(),
            source=str(EXAMPLE_POLICY),
        )
    return context


@pytest.fixture
def make_key(ctx: Any) -> Callable[..., str]:
    """Create an API key for a role (and tenants) and return its secret."""
    from azdev_ica.auth.principal import Actor
    from azdev_ica.auth.roles import Role
    from azdev_ica.services.apikeys import create_api_key

    def make(role: str, tenants: list[str] | None = None, **kwargs: Any) -> str:
        return create_api_key(
            ctx,
            actor=Actor(kind="operator", id="test"),
            name=f"{role}-key",
            role=Role(role),
            tenants=tenants,
            expires_at=kwargs.get("expires_at"),
        ).secret

    return make


class PersonHandle:
    """A person made for a test: their id, login and a personal token (`Bearer`)."""

    def __init__(self, person_id: int, login: str, token: str) -> None:
        self.person_id = person_id
        self.login = login
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def principal(self, ctx: Any) -> Any:
        """The person's principal with the grants held now (as a request would see it)."""
        from azdev_ica.db.tables import Person
        from azdev_ica.services.people import principal_for_person

        with ctx.read() as session:
            person = session.get(Person, self.person_id)
            return principal_for_person(session, person, ctx.clock.now())


@pytest.fixture
def make_person(ctx: Any) -> Callable[..., PersonHandle]:
    """Create a person with grants [(role, tenant or None for all), ...], provider links
    [(provider, provider_user_id), ...] and a 30-day personal token."""
    from datetime import timedelta

    from azdev_ica.auth.principal import Actor
    from azdev_ica.auth.roles import Role
    from azdev_ica.services.people import (
        create_person,
        grant_role,
        issue_personal_token,
        link_person,
        person_actor,
    )

    operator = Actor(kind="operator", id="test")

    def make(
        login: str,
        grants: list[tuple[str, str | None]] | None = None,
        links: list[tuple[str, str]] | None = None,
        *,
        email: str | None = None,
    ) -> PersonHandle:
        person = create_person(
            ctx, actor=operator, login=login, display_name=login.split("@")[0], email=email
        )
        for role, tenant in grants or []:
            grant_role(ctx, actor=operator, login=login, role=Role(role), tenant=tenant)
        for provider, provider_user_id in links or []:
            link_person(
                ctx,
                actor=operator,
                login=login,
                provider=provider,
                provider_user_id=provider_user_id,
            )
        # A personal token is minted only by its person (no one signs as someone else).
        issued = issue_personal_token(
            ctx, actor=person_actor(person.id), login=login, name="test", ttl=timedelta(days=30)
        )
        return PersonHandle(person.id, person.login, issued.secret)

    return make


def enrol_with_link(ctx: Any, login: str, password: str, *, totp: bool = True) -> bytes | None:
    """Enrol a person the only way there is: an operator issues an enrolment link and the
    person follows it (through the service, as the console's page does), setting their own
    password and, with `totp`, an authenticator. Returns the TOTP secret (None without).

    The confirming code is the previous time step's (within the accepted skew), so the
    current step's code still signs in at the test's frozen clock."""
    from azdev_ica.auth import totp as totp_codes
    from azdev_ica.auth.principal import Actor
    from azdev_ica.services.enrolment import (
        complete_enrolment,
        issue_enrolment_link,
        new_pending_totp,
    )

    issued = issue_enrolment_link(ctx, actor=Actor(kind="operator", id="test"), login=login)
    secret, pending, code = None, None, None
    if totp:
        secret, pending = new_pending_totp(ctx, issued.person_id)
        code = totp_codes.code_at_step(secret, totp_codes.time_step(ctx.clock.now()) - 1)
    complete_enrolment(
        ctx,
        token=issued.token,
        password=password,
        pending_totp=pending,
        code=code,
        hash_profile="cheapest",
    )
    return secret


@pytest.fixture
def app(settings: Any, database: Any, clock: Any, ctx: Any) -> Any:
    from azdev_ica.api.app import create_app

    return create_app(settings, database=database, clock=clock)


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
