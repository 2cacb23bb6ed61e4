"""People calling the API with their own Entra ID token (delegated, seed 000 §3.2): signing
an approval and querying the audit trail as the person linked to the token's object id, with
that person's grants; tokens are signed with keys made in the test and checked against a
local OpenID provider (discovery + JWKS on loopback), as the pipelines' tokens are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.auth.principal import Actor
from azdev_ica.auth.trust import OidcTrust
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.people import disable_person
from tests.api import test_bearer_tokens
from tests.approvals import conftest as approvals
from tests.conftest import bearer
from tests.support.oidc import (
    APP_ID,
    ENTRA_TENANT,
    OTHER_TENANT,
    SP_OID,
    OidcServer,
    SigningKey,
    entra_claims,
)

API = "/api/v1/azdev"
PIPELINE = approvals.PIPELINE
# Fixtures shared with the pipelines' token tests: the signing key, the local provider, a run.
key = test_bearer_tokens.key
oidc = test_bearer_tokens.oidc
run_key = approvals.run_key
SCOPE = "ica.access"
OIDS = {
    "tess": "11111111-aaaa-4bbb-8ccc-000000000001",
    "bea": "11111111-aaaa-4bbb-8ccc-000000000002",
    "sam": "11111111-aaaa-4bbb-8ccc-000000000003",
    "aud": "11111111-aaaa-4bbb-8ccc-000000000004",
    "nobody": "11111111-aaaa-4bbb-8ccc-000000000099",
}


def trust(server: OidcServer, *, user_scopes: list[str]) -> OidcTrust:
    return OidcTrust.model_validate(
        {
            "issuers": [
                {
                    "kind": "entra",
                    "name": "contoso",
                    "tenant_id": ENTRA_TENANT,
                    "authority": server.base_url,
                    "audiences": [APP_ID],
                    "user_scopes": user_scopes,
                    "identities": [
                        {
                            "name": "tonga-deployer",
                            "claims": {"oid": SP_OID},
                            "role": "azdev_devops",
                            "tenants": ["to"],
                        }
                    ],
                }
            ]
        }
    )


def _client(settings: Any, database: Any, clock: Any, configured: OidcTrust) -> TestClient:
    app = create_app(
        settings.model_copy(update={"oidc_trust": configured}), database=database, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(settings, database, clock, ctx, oidc) -> Iterator[Any]:
    with _client(settings, database, clock, trust(oidc, user_scopes=[SCOPE])) as test_client:
        yield test_client


@pytest.fixture
def people(make_person: Any) -> dict[str, Any]:
    grants = {
        "tess": [("azdev_approver_tech", "to")],
        "bea": [("azdev_approver_biz", "to")],
        "sam": [("azdev_approver_tech", "ws")],
        "aud": [("azdev_auditor", None)],
    }
    return {
        name: make_person(f"{name}@example.org", roles, [("entra", OIDS[name])])
        for name, roles in grants.items()
    }


@pytest.fixture
def approval_id(ctx: Any, run_key: str) -> int:
    outcome = request_approval(ctx, principal=PIPELINE, command=RequestApproval(run_key=run_key))
    return int(outcome.approval.id)


def user_token(key: SigningKey, clock: Any, oid: str, **overrides: Any) -> dict[str, str]:
    claims = entra_claims(clock.now(), oid=oid, sub=f"pairwise-{oid[-4:]}", idtyp="user")
    claims.pop("roles")
    claims.update({"scp": f"User.Read {SCOPE}", "name": "A person"})
    claims.update(overrides)
    return bearer(key.sign(claims))


def test_people_sign_and_read_the_audit_trail_with_their_entra_token(
    client,
    key,
    clock,
    ctx,
    people,
    approval_id,
):
    me = client.get(f"{API}/me", headers=user_token(key, clock, OIDS["tess"])).json()
    assert (me["kind"], me["person_id"]) == ("person", people["tess"].person_id)

    for name, status in (("tess", "technical_approved"), ("bea", "approved")):
        signed = client.post(
            f"{API}/approval/{approval_id}/sign",
            json={"decision": "approve", "comment": "from my own token"},
            headers=user_token(key, clock, OIDS[name]),
        )
        assert signed.status_code == 200, signed.text
        assert signed.json()["status"] == status
        logins = [s["login"] for s in signed.json()["signatures"]]
        assert logins[-1] == f"{name}@example.org"

    seal_now(ctx)
    found = client.post(
        f"{API}/audit/query",
        json={"action": "approval.sign"},
        headers=user_token(key, clock, OIDS["aud"]),
    )
    assert found.status_code == 200, found.text
    actors = {item["actor_id"] for item in found.json()["items"]}
    assert actors == {f"person:{people['tess'].person_id}", f"person:{people['bea'].person_id}"}


def test_scope_on_the_object_is_the_persons(client, key, clock, people, approval_id):
    samoa = user_token(key, clock, OIDS["sam"])
    other = client.get(f"{API}/approval/{approval_id}", headers=samoa)
    absent = client.get(f"{API}/approval/{approval_id + 1000}", headers=samoa)
    assert other.status_code == absent.status_code == 404
    refused = client.post(
        f"{API}/approval/{approval_id}/sign", json={"decision": "approve"}, headers=samoa
    )
    assert refused.status_code == 404


def test_tokens_that_are_not_a_linked_persons_are_refused(
    client,
    key,
    clock,
    ctx,
    people,
    approval_id,
):
    def status(headers: dict[str, str]) -> int:
        return int(client.get(f"{API}/me", headers=headers).status_code)

    assert status(user_token(key, clock, OIDS["nobody"])) == 403  # valid, linked to no one
    assert status(user_token(key, clock, OIDS["tess"], scp="User.Read")) == 401  # not our scope
    assert status(user_token(key, clock, OIDS["tess"], aud="api://someone-else")) == 401
    other_tenant = user_token(
        key,
        clock,
        OIDS["tess"],
        tid=OTHER_TENANT,
        iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0",
    )
    assert status(other_tenant) == 401
    v1 = entra_claims(clock.now(), version="1.0", oid=OIDS["tess"], idtyp="user", scp=SCOPE)
    assert status(bearer(key.sign(v1))) == 401  # people's tokens from the v2.0 issuer only
    expired = user_token(key, clock, OIDS["tess"], exp=int(clock.now().timestamp()) - 3600)
    assert status(expired) == 401
    forged = SigningKey.rsa("k1")  # the right key id, another key
    claims = entra_claims(clock.now(), oid=OIDS["tess"], idtyp="user", scp=SCOPE)
    assert status(bearer(forged.sign(claims))) == 401
    disable_person(
        ctx, actor=Actor(kind="operator", id="test"), login="tess@example.org", reason="left"
    )
    assert status(user_token(key, clock, OIDS["tess"])) == 401


def test_without_user_scopes_a_persons_token_is_refused(
    settings,
    database,
    clock,
    ctx,
    oidc,
    key,
    people,
):
    with _client(settings, database, clock, trust(oidc, user_scopes=[])) as closed:
        answer = closed.get(f"{API}/me", headers=user_token(key, clock, OIDS["tess"]))
    assert answer.status_code == 401
