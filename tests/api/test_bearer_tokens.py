"""Pipelines calling the API with bearer JWTs (Entra ID, GitHub Actions OIDC), end to end.

The app runs on both databases with an `ICA_OIDC_TRUST` that points at a local OpenID
provider (discovery + JWKS on loopback); tokens are signed with keys made in the test.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.api.deps import PUBLIC, declared_permission
from azdev_ica.auth.roles import Role, permissions_of
from azdev_ica.auth.trust import OidcTrust
from tests.api.test_permissions import (
    DOMAIN_REFUSALS,
    PUBLIC_PATHS,
    SIGN_IN_PATHS,
    SIGNED_PATHS,
    api_routes,
    call,
    request_for,
)
from tests.conftest import bearer
from tests.support.oidc import (
    APP_ID,
    APP_URI,
    ENTRA_TENANT,
    GITHUB_AUDIENCE,
    OTHER_TENANT,
    SP_OID,
    OidcServer,
    SigningKey,
    entra_claims,
    github_claims,
    hmac_with_public_key,
    unsigned,
)

API = "/api/v1/azdev"
REPO_ID = "123456789"
AUDITOR_REPO_ID = "222222222"
DEV_REPO_ID = "333333333"
DEPLOY_WORKFLOW = "pacific/automation/.github/workflows/deploy.yml@refs/heads/main"
GH_START = {
    "provider": "gh",
    "project_id": REPO_ID,
    "run_id": "9876543210",
    "pipeline_name": "release",
    "project": "pacific/farmer-registry",
    "tenant": "to",
    "stage": "production",
}
ADO_START = {
    "provider": "ado",
    "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
    "run_id": "4711",
    "pipeline_name": "farmer-registry-cd",
    "tenant": "to",
    "stage": "production",
}
REFUSED = {
    "type": "urn:ica:problem:unauthenticated",
    "title": "Authentication required",
    "status": 401,
    "detail": "the credentials are not valid",
}
# One Entra service principal per role, for the route walk (Entra rather than GitHub: a
# GitHub token reaches only its own repository's runs, which the walk's bodies do not name).
ROLE_OIDS = {
    role: f"00000000-0000-4000-8000-{9000 + index:012d}" for index, role in enumerate(Role)
}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.rsa("k1")


@pytest.fixture(scope="module")
def stranger() -> SigningKey:
    return SigningKey.rsa("k1")


@pytest.fixture
def oidc(key: SigningKey) -> Iterator[OidcServer]:
    server = OidcServer().start()
    server.add_entra(ENTRA_TENANT, [key])
    server.add_entra(OTHER_TENANT, [key])
    server.add_github([key])
    yield server
    server.stop()


def trust_for(server: OidcServer) -> OidcTrust:
    role_identities = [
        {
            "name": f"walk-{role.value}",
            "claims": {"oid": oid},
            "role": role.value,
            "tenants": "*",
        }
        for role, oid in ROLE_OIDS.items()
    ]
    return OidcTrust.model_validate(
        {
            "issuers": [
                {
                    "kind": "entra",
                    "name": "contoso",
                    "tenant_id": ENTRA_TENANT,
                    "authority": server.base_url,
                    "audiences": [APP_ID, APP_URI],
                    "identities": [
                        {
                            "name": "tonga-deployer",
                            "claims": {"oid": SP_OID},
                            "role": "azdev_devops",
                            "tenants": ["to"],
                        },
                        *role_identities,
                    ],
                },
                {
                    "kind": "github",
                    "name": "github",
                    "discovery": server.github_discovery(),
                    "audiences": [GITHUB_AUDIENCE],
                    "identities": [
                        {
                            "name": "farmer-registry-prod",
                            "claims": {
                                "repository_id": REPO_ID,
                                "ref": "refs/heads/main",
                                "environment": "production",
                                "job_workflow_ref": DEPLOY_WORKFLOW,
                            },
                            "role": "azdev_devops",
                            "tenants": ["to", "ws"],
                        },
                        {
                            # A development pipeline's identity: Tonga's lower stages only.
                            "name": "farmer-registry-dev",
                            "claims": {"repository_id": DEV_REPO_ID},
                            "role": "azdev_devops",
                            "tenants": ["to"],
                            "stages": ["development", "test"],
                        },
                        {
                            "name": "reporting",
                            "claims": {"repository_id": AUDITOR_REPO_ID},
                            "role": "azdev_auditor",
                            "tenants": ["to"],
                        },
                    ],
                },
            ]
        }
    )


@pytest.fixture
def client(settings: Any, database: Any, clock: Any, ctx: Any, oidc: OidcServer) -> Iterator[Any]:
    configured = settings.model_copy(update={"oidc_trust": trust_for(oidc)})
    app = create_app(configured, database=database, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def github(key: SigningKey, clock: Any) -> dict[str, str]:
    return bearer(key.sign(github_claims(clock.now())))


def test_a_github_deploy_job_records_its_run_end_to_end(client, github, make_key):
    started = client.post(f"{API}/run/start", json=GH_START, headers=github)
    assert started.status_code == 201, started.text
    run_key = started.json()["run_key"]
    assert run_key == f"gh:{REPO_ID}:9876543210"
    event = {"run_key": run_key, "phase": "deploy", "data": {}, "event_id": "deploy-1"}
    assert client.post(f"{API}/run/event", json=event, headers=github).status_code == 201
    finished = client.post(
        f"{API}/run/finish", json={"run_key": run_key, "status": "success"}, headers=github
    )
    assert finished.status_code in (200, 201), finished.text
    # A retry with the same token and Idempotency-Key answers with the first record.
    retry = {**github, "Idempotency-Key": "start-1"}
    first = client.post(f"{API}/run/start", json={**GH_START, "run_id": "1"}, headers=retry)
    again = client.post(f"{API}/run/start", json={**GH_START, "run_id": "1"}, headers=retry)
    assert (first.status_code, again.status_code) == (201, 200)
    seen = client.get(f"{API}/run/{run_key}", headers=bearer(make_key("admin")))
    assert seen.json()["status"] == "success"
    assert [e["phase"] for e in seen.json()["events"]] == ["deploy"]


def test_an_entra_service_principal_records_a_run_for_its_tenant(client, key, clock):
    for version, audience in (("1.0", APP_URI), ("2.0", APP_ID)):
        token = key.sign(entra_claims(clock.now(), version=version, aud=audience))
        # An Azure Pipelines job on a workload-identity service connection.
        body = {**ADO_START, "run_id": "47" + version[0]}
        response = client.post(f"{API}/run/start", json=body, headers=bearer(token))
        assert response.status_code == 201, response.text
        assert response.json()["tenant"] == "to"


def test_the_mapped_tenant_scope_is_enforced(client, key, clock):
    token = bearer(key.sign(entra_claims(clock.now())))  # scoped to Tonga
    response = client.post(f"{API}/run/start", json={**GH_START, "tenant": "ws"}, headers=token)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:ica:problem:tenant-out-of-scope"


def test_the_mapped_stage_scope_is_enforced(client, key, clock, make_key):
    token = bearer(key.sign(github_claims(clock.now(), repository_id=DEV_REPO_ID)))
    body = {**GH_START, "project_id": DEV_REPO_ID}
    # A development pipeline's identity cannot start a production run of its own tenant.
    production = client.post(f"{API}/run/start", json=body, headers=token)
    assert production.status_code == 403
    assert production.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
    started = client.post(f"{API}/run/start", json={**body, "stage": None}, headers=token)
    assert started.status_code == 201, started.text
    run_key = started.json()["run_key"]
    # It deploys its stages, and no other, nor asks the gate about another.
    for stage, status in (("development", 201), ("test", 201), ("production", 403)):
        event = {"run_key": run_key, "phase": "deploy", "data": {"stage": stage}}
        response = client.post(f"{API}/run/event", json=event, headers=token)
        assert response.status_code == status, (stage, response.text)
    gate = {"run_key": run_key, "tenant": "to", "stage": "production"}
    refused = client.post(f"{API}/gate/evaluate", json=gate, headers=token)
    assert refused.status_code == 403
    seen = client.get(f"{API}/run/{run_key}", headers=bearer(make_key("admin")))
    assert [e["data"].get("stage") for e in seen.json()["events"]] == ["development", "test"]


def test_the_mapped_role_is_enforced(client, key, clock):
    token = bearer(key.sign(github_claims(clock.now(), repository_id=AUDITOR_REPO_ID)))
    response = client.post(f"{API}/run/start", json=GH_START, headers=token)
    assert response.status_code == 403
    assert response.json()["type"] == "urn:ica:problem:forbidden"
    assert client.get(f"{API}/runs", headers=token).status_code == 200


def _invalid_tokens(key: SigningKey, stranger: SigningKey, now: Any) -> dict[str, str]:
    at = int(now.timestamp())
    return {
        "expired": key.sign(github_claims(now, iat=at - 7200, nbf=at - 7200, exp=at - 3600)),
        "not yet valid": key.sign(github_claims(now, nbf=at + 3600)),
        "wrong audience": key.sign(github_claims(now, aud="https://github.com/pacific")),
        "unknown issuer": key.sign(github_claims(now, iss="https://evil.example")),
        "another tenant": key.sign(entra_claims(now, tenant=OTHER_TENANT)),
        "alg none": unsigned(github_claims(now), key.kid),
        "hs256 with the public key": hmac_with_public_key(github_claims(now), key),
        "another key": stranger.sign(github_claims(now)),
        "unknown kid": stranger.sign(github_claims(now), kid="k-unknown"),
        "no exp": key.sign({k: v for k, v in github_claims(now).items() if k != "exp"}),
        "user token": key.sign(entra_claims(now, scp="user_impersonation")),
    }


def test_invalid_tokens_are_401_and_all_look_the_same(client, key, stranger, clock, caplog):
    tokens = _invalid_tokens(key, stranger, clock.now())
    with caplog.at_level(logging.WARNING, logger="azdev_ica.api.deps"):
        for name, token in tokens.items():
            response = client.post(f"{API}/run/start", json=GH_START, headers=bearer(token))
            assert response.status_code == 401, name
            assert response.headers["content-type"] == "application/problem+json", name
            assert "Bearer" in response.headers["www-authenticate"], name
            body = response.json()
            body.pop("instance")
            # Nothing in the answer says which check failed.
            assert body == REFUSED, name
    # The server's log does say why, for the operator.
    logged = " | ".join(record.getMessage() for record in caplog.records)
    for reason in ("expired", "audience", "unknown issuer", "not allowed", "signature"):
        assert reason in logged
    assert all(token not in logged for token in tokens.values())  # never the token itself


@pytest.mark.parametrize(
    "claims",
    [
        {"repository_id": "555000111"},  # same name, another repository
        {"ref": "refs/heads/feature"},
        {"environment": "staging"},
        {"job_workflow_ref": "pacific/farmer-registry/.github/workflows/own.yml@refs/heads/main"},
    ],
)
def test_a_valid_but_unmapped_token_is_403_without_hints(client, key, clock, claims):
    token = bearer(key.sign(github_claims(clock.now(), **claims)))
    response = client.post(f"{API}/run/start", json=GH_START, headers=token)
    assert response.status_code == 403
    body = response.json()
    assert body["type"] == "urn:ica:problem:forbidden"
    assert body["detail"] == "this identity is not authorised"
    assert not set(body) - {"type", "title", "status", "detail", "instance"}


def test_an_unreachable_provider_is_503_not_a_verdict(client, oidc, github):
    oidc.failing = True
    response = client.post(f"{API}/run/start", json=GH_START, headers=github)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


def test_api_keys_keep_working_beside_tokens(client, make_key, github):
    secret = make_key("azdev_devops")
    basic = "Basic " + base64.b64encode(f"ado-check:{secret}".encode()).decode()
    assert client.get(f"{API}/runs", headers=bearer(secret)).status_code == 200
    assert client.get(f"{API}/runs", headers={"Authorization": basic}).status_code == 200
    assert client.get(f"{API}/runs", headers=github).status_code == 200


def test_a_token_sent_as_a_basic_password_is_not_a_token(client, github):
    token = github["Authorization"].removeprefix("Bearer ")
    basic = "Basic " + base64.b64encode(f"x:{token}".encode()).decode()
    response = client.get(f"{API}/runs", headers={"Authorization": basic})
    assert response.status_code == 401


def test_without_trusted_issuers_every_token_is_refused(app, key, clock):
    # The default settings trust no issuer: a well-signed token is still just refused.
    with TestClient(app, raise_server_exceptions=False) as plain:
        token = bearer(key.sign(github_claims(clock.now())))
        response = plain.get(f"{API}/runs", headers=token)
    assert response.status_code == 401
    assert response.json()["detail"] == REFUSED["detail"]


def test_a_pipeline_of_each_role_gets_exactly_its_permissions(client, key, clock):
    # The permission walk of test_permissions.py, with pipeline principals instead of keys
    # (one app and database for all roles: the walk is about the mapping, not storage).
    for role in Role:
        token = key.sign(entra_claims(clock.now(), oid=ROLE_OIDS[role], sub=ROLE_OIDS[role]))
        headers = bearer(token)
        granted = {permission.value for permission in permissions_of(role)}
        for route in api_routes(client.app):
            declared = declared_permission(route.dependant)
            response = call(client, route, headers)
            where = f"{role.value} {request_for(route)[0]} {route.path}: {response.status_code}"
            assert response.status_code < 500, where
            if route.path in SIGN_IN_PATHS:
                continue  # public; the sign-in form refuses a post without its CSRF token
            if route.path in SIGNED_PATHS:
                # A provider webhook: a bearer token is no signature, whatever its role.
                assert response.status_code == 401, where
            elif route.path in PUBLIC_PATHS or declared == PUBLIC or declared in granted:
                assert response.status_code != 401, where
                refused = response.status_code == 403
                assert not refused or response.json()["type"] in DOMAIN_REFUSALS, where
            else:
                assert response.status_code == 403, where


def test_a_github_token_reaches_only_its_own_repository(client, github, make_key):
    other_repo = {**GH_START, "project_id": "987654321"}
    refused = client.post(f"{API}/run/start", json=other_repo, headers=github)
    assert refused.status_code == 403
    assert "its own repository" in refused.json()["detail"]
    azure = client.post(f"{API}/run/start", json={**ADO_START, "tenant": "to"}, headers=github)
    assert azure.status_code == 403
    # A run of another repository recorded by someone else: the token cannot touch it.
    admin = bearer(make_key("admin"))
    assert client.post(f"{API}/run/start", json=other_repo, headers=admin).status_code == 201
    event = {"run_key": "gh:987654321:9876543210", "phase": "deploy", "data": {}}
    assert client.post(f"{API}/run/event", json=event, headers=github).status_code == 404


def test_the_requester_comes_from_the_token_not_the_body(client, github, make_key):
    started = client.post(f"{API}/run/start", json=GH_START, headers=github)
    assert started.status_code == 201
    seen = client.get(
        f"{API}/run/{started.json()['run_key']}", headers=bearer(make_key("admin"))
    ).json()
    assert seen["requested_for"] == "5550001"
    lying = {**GH_START, "run_id": "2", "requested_for": "someone-else"}
    refused = client.post(f"{API}/run/start", json=lying, headers=github)
    assert refused.status_code == 422
    assert "actor_id" in refused.json()["detail"]


def test_whoever_triggered_any_attempt_of_a_github_run_never_signs_it(
    client, key, clock, make_person
):
    """GitHub's token of a re-run names who started the re-run; whoever started the first
    attempt stays a requester too, and neither signs the run's approval."""
    mele = make_person("mele", [("azdev_approver_tech", "to")], [("github", "5550001")])
    tavita = make_person("tavita", [("azdev_approver_tech", "to")], [("github", "5550002")])
    first = bearer(key.sign(github_claims(clock.now())))
    rerun = bearer(key.sign(github_claims(clock.now(), run_attempt="2", actor_id="5550002")))
    assert client.post(f"{API}/run/start", json=GH_START, headers=first).status_code == 201
    again = client.post(f"{API}/run/start", json={**GH_START, "attempt": 2}, headers=rerun)
    assert (again.status_code, again.json()["attempt"]) == (200, 2)
    run_key = again.json()["run_key"]
    asked = client.post(f"{API}/approval", json={"run_key": run_key}, headers=rerun)
    assert asked.status_code == 201, asked.text
    for person in (mele, tavita):
        refused = client.post(
            f"{API}/approval/{asked.json()['id']}/sign",
            json={"decision": "approve"},
            headers=person.headers,
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "requester_cannot_sign"
