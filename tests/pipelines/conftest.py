"""One real ICA per test module for the end-to-end pipeline runs: PostgreSQL, the example policy,
a ledger signing key, real HTTP (uvicorn), trust in a local Entra tenant and a local GitHub
issuer, Azure DevOps callbacks allowed to a loopback listener, and the people who sign."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from tests.approvals.test_ado_callback import Recorder
from tests.conftest import EXAMPLE_POLICY, _fresh_database, example_policy
from tests.pipelines.fakes import Relay, TokenService
from tests.support.liveserver import LiveServer
from tests.support.oidc import (
    APP_ID,
    APP_URI,
    ENTRA_TENANT,
    GITHUB_AUDIENCE,
    SP_OID,
    OidcServer,
    SigningKey,
)

SECRET = "p" * 48
ENTRA_SCOPE = f"{APP_URI}/.default"
GITHUB_REPO_ID = "123456789"
RITA_ADO_ID = "b7c8d9e0-0000-4000-8000-0000000rita1"
RITA_GITHUB_ID = "5550001"  # github_claims' actor_id


@dataclass
class Stack:
    url: str
    relay: Relay
    settings: Any
    ctx: Any
    tokens: TokenService
    ado: Recorder
    data_dir: Path
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)
    people: dict[str, Any] = field(default_factory=dict)

    def call(
        self, method: str, path: str, token: str, body: Any = None, headers: Any = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def run(self, run_key: str) -> dict[str, Any]:
        status, data = self.call("GET", f"/api/v1/azdev/run/{run_key}", self.keys["admin"])
        assert status == 200, data
        return dict(data)

    def approvals(self, run_key: str) -> list[dict[str, Any]]:
        """The run's approval requests, newest first."""
        status, page = self.call(
            "GET", f"/api/v1/azdev/approvals?run_key={quote(run_key)}", self.keys["admin"]
        )
        assert status == 200, page
        return [self.approval(item["id"]) for item in page["items"]]

    def incidents(self, run_key: str) -> list[dict[str, Any]]:
        status, page = self.call("GET", "/api/v1/azdev/incidents", self.keys["admin"])
        assert status == 200, page
        return [item for item in page["items"] if item["run_key"] == run_key]

    def approval(self, approval_id: int) -> dict[str, Any]:
        status, data = self.call("GET", f"/api/v1/azdev/approval/{approval_id}", self.keys["admin"])
        assert status == 200, data
        return dict(data)

    def lock(self) -> dict[str, Any]:
        status, data = self.call("GET", "/api/v1/azdev/lock/to/production", self.keys["admin"])
        assert status == 200, data
        return dict(data)

    def sign(self, approval_id: int, person: str, decision: str) -> dict[str, Any]:
        status, data = self.call(
            "POST",
            f"/api/v1/azdev/approval/{approval_id}/sign",
            self.people[person].token,
            {"decision": decision, "comment": f"{person}: {decision}"},
        )
        assert status == 200, data
        return dict(data)

    def sign_when_asked(
        self, run_key: str, decisions: list[tuple[str, str]], *, after: float = 0.0
    ) -> threading.Thread:
        """People signing in the web UI while a job waits: as soon as the request exists
        (`after` seconds later)."""

        def sign() -> None:
            deadline = time.monotonic() + 40 + after
            while time.monotonic() < deadline:
                status, page = self.call(
                    "GET", f"/api/v1/azdev/approvals?run_key={quote(run_key)}", self.keys["admin"]
                )
                if status == 200 and page["items"]:
                    time.sleep(after)
                    for person, decision in decisions:
                        self.sign(page["items"][0]["id"], person, decision)
                    return
                time.sleep(0.2)

        thread = threading.Thread(target=sign, daemon=True)
        thread.start()
        return thread

    def check_callback(self, run_key: str, job_id: str) -> tuple[int, dict[str, Any]]:
        """What the environment's Invoke REST API check (callback mode) sends ICA."""
        basic = base64.b64encode(f":{self.keys['check']}".encode()).decode()
        request = urllib.request.Request(
            self.url + "/api/v1/azdev/approval",
            data=json.dumps({"run_key": run_key, "callback": True}).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Basic {basic}",
                "PlanUrl": f"{self.ado.url}/fabrikam/",
                "ProjectId": run_key.split(":")[1],
                "HubName": "checks",
                "PlanId": f"plan-{job_id}",
                "JobId": job_id,
                "TimelineId": f"timeline-{job_id}",
                "TaskInstanceId": f"task-{job_id}",
                "AuthToken": f"job-access-token-{job_id}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def deliver(self) -> None:
        """The delivery job's pass (the scheduler runs it in the served app)."""
        from azdev_ica.jobs.delivery import deliver_due

        deliver_due(self.ctx, self.settings, rng=lambda: 0.0)

    def seal(self) -> None:
        from azdev_ica.jobs.sealer import seal_now

        seal_now(self.ctx)

    def audit_verify(self) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "ICA_DATA_DIR": str(self.data_dir),
            "ICA_DATABASE_URL": self.database_url,
            "ICA_SECRET_KEY": SECRET,
        }
        ica = Path(sys.executable).parent / "ica"
        return subprocess.run(
            [str(ica), "audit", "verify", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def audit_refs(self, run_key: str) -> list[int]:
        from azdev_ica.db.tables import AuditInbox

        with self.ctx.read() as session:
            return list(
                session.scalars(
                    select(AuditInbox.id)
                    .where(AuditInbox.subject_id == run_key)
                    .order_by(AuditInbox.id)
                )
            )

    def audit_actions(self, run_key: str) -> list[str]:
        from azdev_ica.db.tables import AuditInbox

        with self.ctx.read() as session:
            return list(
                session.scalars(
                    select(AuditInbox.action)
                    .where(AuditInbox.subject_id == run_key)
                    .order_by(AuditInbox.id)
                )
            )


def trust_document(oidc: OidcServer) -> dict[str, Any]:
    return {
        # Scaled-down token lifetimes (tests/pipelines/fakes.py) need a small clock skew.
        "leeway_seconds": 1,
        "issuers": [
            {
                "kind": "entra",
                "name": "contoso",
                "tenant_id": ENTRA_TENANT,
                "authority": oidc.base_url,
                "audiences": [APP_ID, APP_URI],
                "identities": [
                    {
                        "name": "ica-deploy-wif",
                        "claims": {"oid": SP_OID},
                        "role": "azdev_devops",
                        "tenants": ["to"],
                    }
                ],
            },
            {
                "kind": "github",
                "name": "github",
                "discovery": oidc.github_discovery(),
                "audiences": [GITHUB_AUDIENCE, "https://ica.example.org"],
                "identities": [
                    {
                        "name": "farmer-registry-production",
                        "claims": {
                            "repository_id": GITHUB_REPO_ID,
                            "ref": "refs/heads/main",
                            "environment": "production",
                        },
                        "role": "azdev_devops",
                        "tenants": ["to"],
                    }
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from azdev_ica.api.app import create_app
    from azdev_ica.auth.principal import Actor
    from azdev_ica.auth.roles import Role
    from azdev_ica.auth.trust import OidcTrust
    from azdev_ica.cli.ledger import ensure_signing_key
    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.services.apikeys import create_api_key
    from azdev_ica.services.context import LedgerConfig, ServiceContext
    from azdev_ica.services.people import (
        create_person,
        grant_role,
        issue_personal_token,
        link_person,
        person_actor,
    )
    from azdev_ica.services.policies import apply_policy
    from azdev_ica.settings import Settings

    tmp = tmp_path_factory.mktemp("ica")
    entra_key, github_key = SigningKey.rsa("entra-1"), SigningKey.rsa("github-1")
    oidc = OidcServer().start()
    oidc.add_entra(ENTRA_TENANT, [entra_key])
    oidc.add_github([github_key])
    tokens = TokenService(entra_key=entra_key, github_key=github_key, scope=ENTRA_SCOPE).start()
    ado = Recorder()
    with _fresh_database(request, tmp, "postgresql") as url:
        settings = Settings(
            data_dir=tmp,
            database_url=url,
            secret_key=SECRET,
            api_key_touch_seconds=0,
            ledger_sealer=False,
            jobs_scheduler=False,
            ado_callback_hosts=["127.0.0.1"],
            oidc_trust=OidcTrust.model_validate(trust_document(oidc)),
        )
        db = Database.from_url(url, pool_size=5)
        ctx = ServiceContext(
            db=db,
            clock=SystemClock(),
            pepper=settings.pepper(),
            ledger=LedgerConfig.from_settings(settings),
        )
        operator = Actor(kind="operator", id="test")
        # As the rest of the suite: without the promotion section (production straight away).
        apply_policy(ctx, actor=operator, document=example_policy(), source=str(EXAMPLE_POLICY))
        ensure_signing_key(settings, ctx)
        app = create_app(settings, database=db, clock=ctx.clock)
        live = LiveServer(app).start()
        relay = Relay(int(live.url.rsplit(":", 1)[1])).start()
        stack = Stack(live.url, relay, settings, ctx, tokens, ado, tmp, url)
        for name, role in (("admin", "admin"), ("check", "azdev_devops"), ("ci", "azdev_devops")):
            stack.keys[name] = create_api_key(
                ctx,
                actor=operator,
                name=f"{name}-key",
                role=Role(role),
                tenants=None,
                expires_at=None,
            ).secret

        class Handle:
            def __init__(self, token: str) -> None:
                self.token = token

        people = {
            "rita": ([("azdev_devops", "to"), ("azdev_approver_tech", "to")],
                     [("ado", RITA_ADO_ID), ("github", RITA_GITHUB_ID)]),
            "alice": ([("azdev_approver_tech", "to")], []),
            "bob": ([("azdev_approver_biz", "to")], []),
        }  # fmt: skip
        for login, (grants, links) in people.items():
            person = create_person(ctx, actor=operator, login=login, display_name=login, email=None)
            for role, tenant in grants:
                grant_role(ctx, actor=operator, login=login, role=Role(role), tenant=tenant)
            for provider, provider_user_id in links:
                link_person(
                    ctx,
                    actor=operator,
                    login=login,
                    provider=provider,
                    provider_user_id=provider_user_id,
                )
            issued = issue_personal_token(
                ctx, actor=person_actor(person.id), login=login, name="e2e", ttl=timedelta(days=1)
            )
            stack.people[login] = Handle(issued.secret)
        try:
            yield stack
        finally:
            relay.stop()
            live.stop()
            db.dispose()
            ado.stop()
            tokens.stop()
            oidc.stop()
