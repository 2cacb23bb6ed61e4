"""Enrolment links and resets over HTTP (`ica user enrol|reset` as API routes): an
administrator hands out a single-use link and never learns a credential; a reset ends every
credential at once; a tenant administrator reaches only people wholly in its tenants, and
someone of other tenants only answers exactly like someone absent."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import bearer, enrol_with_link
from tests.identity.conftest import PASSWORD

API = "/api/v1/azdev"


def test_an_administrator_gets_a_link_that_opens_the_enrolment_page(client, make_key, settings):
    admin = bearer(make_key("admin"))
    added = client.post(
        f"{API}/people", json={"login": "nia@example.org", "display_name": "Nia"}, headers=admin
    )
    assert added.status_code == 201
    first = client.post(f"{API}/people/nia@example.org/enrolment-link", headers=admin)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["login"], body["person_id"]) == ("nia@example.org", added.json()["id"])
    assert body["enrolment_link"].startswith(settings.resolved_public_url() + "/ui/enrol/")
    assert body["expires_at"].endswith("Z")
    assert first.headers["cache-control"] == "no-store"

    # A second link replaces the first: only the newest opens the page.
    second = client.post(f"{API}/people/nia@example.org/enrolment-link", headers=admin).json()
    old = client.get(urlsplit(body["enrolment_link"]).path, headers={"Accept": "text/html"})
    new = client.get(urlsplit(second["enrolment_link"]).path, headers={"Accept": "text/html"})
    assert new.status_code == 200
    assert "Set up your sign-in, Nia" in new.text
    assert old.status_code == 404
    assert "Set up your sign-in" not in old.text


def test_a_reset_ends_the_persons_credentials_and_answers_a_new_link(
    client, make_key, make_person, ctx
):
    omar = make_person("omar@example.org", [("azdev_approver_biz", "to")])
    enrol_with_link(ctx, "omar@example.org", PASSWORD, totp=True)
    assert client.get(f"{API}/me", headers=omar.headers).status_code == 200
    admin = bearer(make_key("admin"))
    reset = client.post(
        f"{API}/people/omar@example.org/reset", json={"reason": "lost phone"}, headers=admin
    )
    assert reset.status_code == 200, reset.text
    assert "/ui/enrol/" in reset.json()["enrolment_link"]
    assert client.get(f"{API}/me", headers=omar.headers).status_code == 401  # token ended
    with ctx.read() as session:
        from azdev_ica.db.tables import Credential

        row = session.get(Credential, omar.person_id)
        assert (row.password_hash, row.totp_secret) == (None, None)
    # A reason is required.
    refused = client.post(f"{API}/people/omar@example.org/reset", json={}, headers=admin)
    assert refused.status_code == 422


def test_a_tenant_administrator_reaches_its_own_people_only(client, make_person):
    tonga = make_person("admin.to@example.org", [("tenant_admin", "to")])
    make_person("pita@example.org", [("azdev_devops", "to")])
    make_person("sina@example.org", [("azdev_devops", "ws")])
    make_person("both@example.org", [("azdev_devops", "to"), ("azdev_devops", "ws")])

    own = client.post(f"{API}/people/pita@example.org/enrolment-link", headers=tonga.headers)
    assert own.status_code == 201
    reset = client.post(
        f"{API}/people/pita@example.org/reset", json={"reason": "left"}, headers=tonga.headers
    )
    assert reset.status_code == 200

    # Someone of Samoa only: the very answer someone absent gets.
    for action, body in (("enrolment-link", None), ("reset", {"reason": "x"})):
        other = client.post(
            f"{API}/people/sina@example.org/{action}", json=body, headers=tonga.headers
        )
        absent = client.post(
            f"{API}/people/nobody@example.org/{action}", json=body, headers=tonga.headers
        )
        assert other.status_code == absent.status_code == 404
        blank = {"detail": "", "instance": ""}
        assert other.json() | blank == absent.json() | blank
        assert other.json()["detail"].replace("sina", "N") == absent.json()["detail"].replace(
            "nobody", "N"
        )
    # Someone who also signs in Samoa: refused, the tenant administrator told why.
    both = client.post(f"{API}/people/both@example.org/enrolment-link", headers=tonga.headers)
    assert both.status_code == 403
    assert "outside your tenants" in both.json()["detail"]


def test_people_without_user_admin_cannot(client, make_person, make_key):
    make_person("rua@example.org", [("azdev_devops", "to")])
    approver = make_person("tui@example.org", [("azdev_approver_tech", "to")])
    for headers in (approver.headers, bearer(make_key("azdev_devops", ["to"]))):
        answer = client.post(f"{API}/people/rua@example.org/enrolment-link", headers=headers)
        assert answer.status_code == 403
        answer = client.post(
            f"{API}/people/rua@example.org/reset", json={"reason": "x"}, headers=headers
        )
        assert answer.status_code == 403
