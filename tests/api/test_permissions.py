"""Deny by default (DESIGN.md rule 3): every route declares a permission, and every role gets
exactly what the matrix grants it. Tenant-scoped keys see only their tenants."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

import azdev_ica
from azdev_ica.api.deps import PUBLIC, SIGNED, declared_permission
from azdev_ica.auth.roles import Permission, Role, permissions_of
from tests.conftest import bearer

API = "/api/v1/azdev"
RUN_KEY = "ado:6c3f0e1a-1111-4c2b-9d1e-0123456789ab:4711"
SHA256 = "sha256:" + "0" * 64

# Routes anyone may call. Adding one here is a decision, not a convenience.
# The pipeline client's zipapp and its hash: the published client's code, no secret, fetched
# by agents before they hold a credential (docs: README "Install the pipeline client").
PUBLIC_PATHS = {
    "/health",
    "/ready",
    "/client/ica-{version}.pyz",
    "/client/ica-{version}.pyz.sha256",
}
# The web UI's sign-in pages (docs/identity.md, "People"): public by nature, each refusing on
# its own terms (the sign-in form's CSRF token, no configured identity provider), never 5xx.
# The enrolment link's page: the link's secret is the key (single use, short-lived).
SIGN_IN_PATHS = {"/ui/login", "/ui/login/oidc", "/ui/auth/callback", "/ui/enrol/{token}"}
# The console's front door (a redirect to the home page, which asks for sign-in) and the API's
# interactive documentation (docs/console.md): both show nothing but what the OpenAPI file says.
CONSOLE_PUBLIC_PATHS = {"/", "/docs"}
# Provider webhooks: no caller credentials, the body's signature instead (docs/github.md).
# Any bearer key is refused there with a 401, like no signature at all.
SIGNED_PATHS = {f"{prefix}/github/webhook" for prefix in ("/api/v1/azdev", "/api/azdev")}

# A well-formed request per route, so an allowed role reaches the handler (and a refused one
# is refused for its role, not for a bad body). Routes not listed get `{}` and sample params.
START = {
    "provider": "ado",
    "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
    "run_id": "4711",
    "pipeline_name": "farmer-registry-ci",
    "tenant": "to",
    "stage": "production",
}
BODIES: dict[str, dict[str, Any]] = {
    "/run/start": START,
    "/run/event": {"run_key": RUN_KEY, "phase": "build", "data": {}},
    "/run/finish": {"run_key": RUN_KEY, "status": "Succeeded"},
    "/me/tokens": {"name": "walk"},
    "/people": {"login": "walk@example.org", "display_name": "Walk"},
    "/people/{login}/grants": {"role": "azdev_auditor", "tenant": "to"},
    "/people/{login}/grants/revoke": {"role": "azdev_auditor", "tenant": "to", "reason": "walk"},
    "/people/{login}/links": {"provider": "github", "provider_user_id": "1"},
    "/people/{login}/disable": {"reason": "walk"},
    "/gate/evaluate": {"run_key": RUN_KEY, "tenant": "to", "stage": "production"},
    "/lock/release": {"tenant": "to", "stage": "production", "reason": "walk"},
    "/override": {"run_key": RUN_KEY, "reason": "walk"},
    "/override/{override_id}/sign": {"decision": "approve"},
    "/override/{override_id}/review": {"findings": "walk"},
    "/incident": {"title": "walk", "severity": "low", "tenant": "to"},
    "/incident/{incident_id}/note": {"text": "walk"},
    "/incident/{incident_id}/status": {"status": "mitigated"},
    "/incident/{incident_id}/rca": {"rca": "walk"},
    "/incident/{incident_id}/tasks": {"title": "walk"},
    "/dr/backup": {
        "tenant": "to",
        "stage": "production",
        "kind": "database",
        "taken_at": "2026-11-01T00:00:00Z",
        "size_bytes": 1,
        "sha256": "0" * 64,
        "encrypted": True,
        "location": "walk",
    },
    "/dr/drill": {
        "backup_id": 999,
        "started_at": "2026-11-01T00:00:00Z",
        "finished_at": "2026-11-01T01:00:00Z",
        "succeeded": True,
    },
    # Promotion: a key is no person (sign-off, decision); a refresh request is recorded.
    "/signoff": {"tenant": "to", "stage": "staging", "artifact_digest": SHA256, "kind": "qa"},
    "/refresh": {
        "tenant": "to",
        "target_stage": "staging",
        "reason": "walk",
        "evidence": {"sha256": "0" * 64, "uri": "walk", "description": "walk"},
    },
    "/refresh/{request_id}/decide": {"decision": "approve"},
    # Approvals: the run and approval 1 do not exist (404), and the delegation ends in the
    # past (422), so an allowed role gets past its permission and no further.
    "/approval": {"run_key": RUN_KEY},
    "/approval/{approval_id}/sign": {"decision": "approve"},
    "/approval/{approval_id}/withdraw": {"reason": "walk"},
    "/approval/delegation": {
        "to_login": "nobody@example.org",
        "role": "azdev_approver_tech",
        "tenant": "to",
        "until": "2020-01-01T00:00:00Z",
        "reason": "walk",
    },
}
PATH_PARAMS = {
    "version": azdev_ica.__version__,  # the pipeline client ICA serves
    "run_key": RUN_KEY,
    "index": "0",
    "login": "nobody@example.org",
    "prefix": "aaaaaaaaaa",
    "tenant": "to",
    "stage": "production",
    "override_id": "1",
    "approval_id": "1",
    "incident_id": "1",
    "task_id": "1",
    "request_id": "1",
}
# Refusals that are not about the role: the walk accepts these on granted routes.
DOMAIN_REFUSALS = {"urn:ica:problem:person-required", "urn:ica:problem:approval-refused"}


def all_routes(app: Any) -> list[Any]:
    # FastAPI >= 0.16x keeps included routers as lazy `_IncludedRouter` entries in app.routes;
    # iter_route_contexts flattens them into routes with their effective path and dependencies.
    return list(iter_route_contexts(app.routes))


def api_routes(app: Any) -> list[Any]:
    routes = [route for route in all_routes(app) if isinstance(route.original_route, APIRoute)]
    assert routes, "no API routes found: the walk itself is broken"
    return routes


def request_for(route: Any) -> tuple[str, str, dict[str, Any] | None]:
    method = sorted(route.methods - {"HEAD"})[0]
    path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_PARAMS.get(m.group(1), "x"), route.path)
    suffix = re.sub(r"^/api(/v1)?/azdev", "", route.path)
    body = BODIES.get(suffix, {}) if method in {"POST", "PUT", "PATCH"} else None
    return method, path, body


def call(client: Any, route: Any, headers: dict[str, str]) -> Any:
    method, path, body = request_for(route)
    return client.request(method, path, json=body, headers=headers)


def test_every_route_declares_a_permission_or_is_public(app):
    undeclared = [
        f"{sorted(route.methods)} {route.path}"
        for route in api_routes(app)
        if declared_permission(route.dependant) is None
    ]
    assert undeclared == [], f"routes without a declared permission: {undeclared}"


def test_only_the_health_checks_are_public(app):
    public = {
        route.path for route in api_routes(app) if declared_permission(route.dependant) == PUBLIC
    }
    assert public == PUBLIC_PATHS | SIGN_IN_PATHS | CONSOLE_PUBLIC_PATHS


def test_only_the_provider_webhooks_are_signed(app):
    signed = {
        route.path for route in api_routes(app) if declared_permission(route.dependant) == SIGNED
    }
    assert signed == SIGNED_PATHS


def test_the_only_other_routes_are_the_api_documentation(app):
    others = {
        route.path for route in all_routes(app) if not isinstance(route.original_route, APIRoute)
    }
    assert others == {"/openapi.json", "/static"}


def test_every_declared_permission_is_a_known_one(app):
    known = {permission.value for permission in Permission} | {PUBLIC, SIGNED}
    for route in api_routes(app):
        assert declared_permission(route.dependant) in known, route.path


def test_the_run_ledger_routes_are_walked_under_both_prefixes(app):
    paths = {route.path for route in api_routes(app)}
    for suffix in ("/run/start", "/run/event", "/run/finish", "/run/{run_key}", "/runs"):
        assert f"/api/v1/azdev{suffix}" in paths
        assert f"/api/azdev{suffix}" in paths


def test_without_a_key_every_protected_route_is_401(app, client):
    for route in api_routes(app):
        response = call(client, route, {})
        if route.path in SIGN_IN_PATHS | CONSOLE_PUBLIC_PATHS:
            assert response.status_code < 500, route.path
            continue
        if route.path in PUBLIC_PATHS:
            assert response.status_code == 200, route.path
            continue
        assert response.status_code == 401, route.path
        assert response.headers["content-type"] == "application/problem+json"
        assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "credentials",
    [
        "Bearer ica_aaaaaaaaaa_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-key",
        "Basic !!!",
        "Basic " + "dXNlcjo=",  # "user:" with an empty password
        "Token abc",
        "Bearer",
    ],
)
def test_bad_credentials_are_401(app, client, credentials):
    for route in api_routes(app):
        if route.path in PUBLIC_PATHS | SIGN_IN_PATHS | CONSOLE_PUBLIC_PATHS:
            continue
        response = call(client, route, {"Authorization": credentials})
        assert response.status_code == 401, (route.path, credentials)
        assert response.json()["type"] == "urn:ica:problem:unauthenticated"


@pytest.fixture
def settings(settings: Any) -> Any:
    """The suite's settings, but a key's last use stamped at most once a minute, as shipped:
    the suite's default (every request) adds a write transaction to each of the walk's
    thousands of requests, and the stamp is no part of what the walk checks."""
    return settings.model_copy(update={"api_key_touch_seconds": 60})


@pytest.mark.parametrize("role", list(Role))
def test_each_role_gets_exactly_its_permissions(app, client, make_key, role):
    headers = bearer(make_key(role.value))
    granted = {permission.value for permission in permissions_of(role)}
    for route in api_routes(app):
        declared = declared_permission(route.dependant)
        response = call(client, route, headers)
        where = f"{role.value} {request_for(route)[0]} {route.path}: {response.status_code}"
        assert response.status_code < 500, where
        if route.path in SIGN_IN_PATHS:
            continue  # public; the sign-in form refuses a post without its own CSRF token
        if route.path in SIGNED_PATHS:
            # A key is no signature: unauthenticated, whatever the role.
            assert response.status_code == 401, where
            assert response.json()["type"] == "urn:ica:problem:unauthenticated", where
            continue
        if declared == PUBLIC or declared in granted:
            # Granted: never refused for the role (a person-only action may still say that
            # an API key is not a person, with its own problem type).
            assert response.status_code != 401, where
            assert response.status_code != 403 or response.json()["type"] in DOMAIN_REFUSALS, where
        else:
            assert response.status_code == 403, where
            assert response.json()["type"] == "urn:ica:problem:forbidden", where


def test_the_matrix_of_the_seed(app):
    # Only the pipeline role and admin write to the run ledger; everyone may read it.
    writers = {role for role in Role if Permission.RUN_WRITE in permissions_of(role)}
    readers = {role for role in Role if Permission.RUN_READ in permissions_of(role)}
    assert writers == {Role.DEVOPS, Role.ADMIN}
    # Every role of a person reads it; a monitoring system's key reads only /metrics.
    assert readers == set(Role) - {Role.MONITORING}
    assert permissions_of(Role.MONITORING) == {Permission.METRICS_READ, Permission.SELF}


class TestTenantScope:
    @pytest.fixture
    def samoa(self, make_key: Any) -> dict[str, str]:
        return bearer(make_key("azdev_devops", ["ws"]))

    @pytest.fixture
    def tonga_run(self, client: Any, make_key: Any) -> str:
        response = client.post(f"{API}/run/start", json=START, headers=bearer(make_key("admin")))
        assert response.status_code == 201
        return str(response.json()["run_key"])

    def test_a_key_of_samoa_cannot_start_a_run_for_tonga(self, client, samoa, ctx):
        response = client.post(f"{API}/run/start", json=START, headers=samoa)
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:ica:problem:tenant-out-of-scope"

    def test_a_scoped_key_must_name_its_tenant(self, client, samoa):
        body = {key: value for key, value in START.items() if key != "tenant"}
        response = client.post(f"{API}/run/start", json=body, headers=samoa)
        assert response.status_code == 403
        assert response.json()["type"] == "urn:ica:problem:tenant-out-of-scope"

    def test_a_key_of_samoa_can_start_a_run_for_samoa(self, client, samoa):
        response = client.post(f"{API}/run/start", json={**START, "tenant": "ws"}, headers=samoa)
        assert response.status_code == 201
        assert response.json()["tenant"] == "ws"

    def test_a_key_of_samoa_cannot_read_a_run_of_tonga(self, client, samoa, tonga_run):
        response = client.get(f"{API}/run/{tonga_run}", headers=samoa)
        # Out of scope answers exactly like absent: nothing leaks about other tenants.
        absent = client.get(f"{API}/run/gh:1:1", headers=samoa)
        assert response.status_code == absent.status_code == 404
        assert response.json()["type"] == absent.json()["type"]

    def test_a_key_of_samoa_does_not_list_runs_of_tonga(self, client, samoa, tonga_run):
        for query in ("", "?tenant=to"):
            response = client.get(f"{API}/runs{query}", headers=samoa)
            assert response.status_code == 200
            assert response.json()["items"] == []

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/run/event", {"phase": "deploy", "data": {}}),
            ("/run/finish", {"status": "failed"}),
        ],
    )
    def test_a_key_of_samoa_cannot_write_to_a_run_of_tonga(
        self, client, samoa, tonga_run, make_key, path, body
    ):
        response = client.post(f"{API}{path}", json={"run_key": tonga_run, **body}, headers=samoa)
        assert response.status_code == 404
        admin = bearer(make_key("admin"))
        run = client.get(f"{API}/run/{tonga_run}", headers=admin).json()
        assert run["status"] == "running"
        assert run["events"] == []

    def test_an_unscoped_reader_sees_every_tenant(self, client, make_key, tonga_run):
        auditor = bearer(make_key("azdev_auditor"))
        assert client.get(f"{API}/run/{tonga_run}", headers=auditor).status_code == 200
        assert len(client.get(f"{API}/runs", headers=auditor).json()["items"]) == 1


def test_the_audit_routes_are_for_auditors(app):
    audit = [route for route in api_routes(app) if "/azdev/audit/" in route.path]
    # query, checkpoint, entry, consistency, keys, receipt; both prefixes
    assert len(audit) == 2 * 6
    # A receipt is also for the caller who wrote the record (checked in the handler).
    assert {
        declared_permission(route.dependant)
        for route in audit
        if not route.path.endswith("/receipt/{ref}")
    } == {"audit:read"}
    receipts = [route for route in audit if route.path.endswith("/receipt/{ref}")]
    assert {declared_permission(route.dependant) for route in receipts} == {"self"}
    readers = {role for role in Role if Permission.AUDIT_READ in permissions_of(role)}
    assert readers == {Role.AUDITOR, Role.ADMIN, Role.TENANT_ADMIN}
