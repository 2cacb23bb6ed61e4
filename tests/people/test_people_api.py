"""The people routes: who am I, my tokens, and administering persons. Tenant administrators
act for their own tenants only; linking and disabling need an all-tenants administrator;
nobody grants roles to themselves."""

from __future__ import annotations

import re

from tests.conftest import bearer

API = "/api/v1/azdev"


def test_me_for_a_person_and_for_a_key(client, make_person, make_key):
    ana = make_person("ana@example.org", [("azdev_approver_tech", "to"), ("azdev_auditor", None)])
    me = client.get(f"{API}/me", headers=ana.headers).json()
    assert me["kind"] == "person"
    assert me["person_id"] == ana.person_id
    assert {(g["role"], g["tenant"]) for g in me["grants"]} == {
        ("azdev_approver_tech", "to"),
        ("azdev_auditor", None),
    }
    assert "approval:sign" in me["permissions"]
    assert "audit:read" in me["permissions"]
    key = client.get(f"{API}/me", headers=bearer(make_key("azdev_devops", ["ws"]))).json()
    assert key["kind"] == "api_key"
    assert key["person_id"] is None
    assert key["grants"] == [
        {"role": "azdev_devops", "tenant": "ws", "stages": None, "until": None}
    ]


def test_a_token_cannot_mint_tokens_and_a_key_has_none(client, make_person, make_key):
    ben = make_person("ben@example.org", [("azdev_devops", "to")])
    refused = client.post(f"{API}/me/tokens", json={"name": "more"}, headers=ben.headers)
    assert refused.status_code == 403
    assert "sign in" in refused.json()["detail"]
    key = client.post(
        f"{API}/me/tokens", json={"name": "x"}, headers=bearer(make_key("azdev_devops"))
    )
    assert key.status_code == 403
    assert key.json()["type"] == "urn:ica:problem:person-required"


def test_a_person_revokes_their_own_token_only(client, make_person):
    cara = make_person("cara@example.org", [("azdev_auditor", None)])
    dan = make_person("dan@example.org", [("azdev_auditor", None)])
    dan_prefix = re.match(r"icp_([a-z2-7]{10})_", dan.token).group(1)  # type: ignore[union-attr]
    other = client.delete(f"{API}/me/tokens/{dan_prefix}", headers=cara.headers)
    assert other.status_code == 404
    assert client.get(f"{API}/me", headers=dan.headers).status_code == 200
    own = client.delete(f"{API}/me/tokens/{dan_prefix}", headers=dan.headers)
    assert own.status_code == 204
    assert client.get(f"{API}/me", headers=dan.headers).status_code == 401


def test_an_administrator_manages_people(client, make_key):
    admin = bearer(make_key("admin"))
    added = client.post(
        f"{API}/people",
        json={"login": "Eve@Example.org", "display_name": "Eve", "email": "eve@example.org"},
        headers=admin,
    )
    assert added.status_code == 201, added.text
    assert added.json()["login"] == "eve@example.org"
    again = client.post(
        f"{API}/people", json={"login": "eve@example.org", "display_name": "Eve"}, headers=admin
    )
    assert again.status_code == 409
    granted = client.post(
        f"{API}/people/eve@example.org/grants",
        json={"role": "azdev_approver_biz", "tenant": "ws", "until": "2026-12-01T00:00:00Z"},
        headers=admin,
    )
    assert granted.status_code == 200, granted.text
    assert granted.json() == {
        "role": "azdev_approver_biz",
        "tenant": "ws",
        "stages": None,
        "until": "2026-12-01T00:00:00.000000Z",
    }
    linked = client.post(
        f"{API}/people/eve@example.org/links",
        json={"provider": "ado", "provider_user_id": "b7c1-eve"},
        headers=admin,
    )
    assert linked.status_code == 200
    [eve] = client.get(f"{API}/people", headers=admin).json()
    assert eve["links"] == [{"provider": "ado", "id": "b7c1-eve"}]
    revoked = client.post(
        f"{API}/people/eve@example.org/grants/revoke",
        json={"role": "azdev_approver_biz", "tenant": "ws", "reason": "rotation"},
        headers=admin,
    )
    assert revoked.status_code == 200
    disabled = client.post(
        f"{API}/people/eve@example.org/disable", json={"reason": "left"}, headers=admin
    )
    assert disabled.json()["disabled"] is True


def test_a_tenant_administrator_stays_in_its_tenants(client, make_person):
    tonga = make_person("admin.to@example.org", [("tenant_admin", "to")])
    make_person("fai@example.org")
    ok = client.post(
        f"{API}/people/fai@example.org/grants",
        json={"role": "azdev_approver_tech", "tenant": "to"},
        headers=tonga.headers,
    )
    assert ok.status_code == 200
    for body in (
        {"role": "azdev_approver_tech", "tenant": "ws"},
        {"role": "azdev_approver_tech", "tenant": None},
        {"role": "admin", "tenant": "to"},
    ):
        refused = client.post(
            f"{API}/people/fai@example.org/grants", json=body, headers=tonga.headers
        )
        assert refused.status_code == 403, body
    link = client.post(
        f"{API}/people/fai@example.org/links",
        json={"provider": "github", "provider_user_id": "1"},
        headers=tonga.headers,
    )
    assert link.status_code == 403
    # Nobody grants themselves a role, not even inside their own tenant.
    itself = client.post(
        f"{API}/people/admin.to@example.org/grants",
        json={"role": "azdev_approver_tech", "tenant": "to"},
        headers=tonga.headers,
    )
    assert itself.status_code == 403
    assert "themselves" in itself.json()["detail"]
    # The listing shows the grants of its own tenants only, and no links.
    listed = {p["login"]: p for p in client.get(f"{API}/people", headers=tonga.headers).json()}
    assert listed["fai@example.org"]["grants"] == [
        {"role": "azdev_approver_tech", "tenant": "to", "stages": None, "until": None}
    ]


def test_bad_input_is_a_problem_not_a_500(client, make_key):
    admin = bearer(make_key("admin"))
    for path, body in (
        ("/people", {"login": "x y", "display_name": "X"}),
        ("/people", {"login": "x@example.org"}),
        ("/people/nobody@example.org/grants", {"role": "azdev_devops", "tenant": "to"}),
        ("/people/nobody@example.org/grants", {"role": "king", "tenant": "to"}),
        ("/people/nobody@example.org/links", {"provider": "gitlab", "provider_user_id": "1"}),
    ):
        answer = client.post(f"{API}{path}", json=body, headers=admin)
        assert answer.status_code in (404, 422), (path, body, answer.status_code)
        assert answer.headers["content-type"] == "application/problem+json"


def test_a_person_without_roles_still_has_their_own_page(client, make_person):
    newcomer = make_person("new@example.org")
    me = client.get(f"{API}/me", headers=newcomer.headers)
    assert me.status_code == 200
    assert me.json()["grants"] == []
    assert me.json()["permissions"] == ["self"]
    assert client.get(f"{API}/runs", headers=newcomer.headers).status_code == 403
