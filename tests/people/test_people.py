"""People over the API boundary: personal tokens authenticate as the person with the grants
held at each request; grants are per tenant; links make provider ids people; every change is
an audit entry, and personal values reach the ledger only as salted hashes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.auth.principal import Actor, Grant, Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import AuditInbox
from azdev_ica.errors import Conflict, Forbidden, NotFound, ValidationProblem
from azdev_ica.services.people import (
    create_person,
    disable_person,
    grant_role,
    issue_personal_token,
    link_person,
    person_actor,
    person_for_provider_id,
    revoke_grant,
    revoke_personal_token,
)
from tests.conftest import bearer

RUNS = "/api/v1/azdev/runs"
START = "/api/v1/azdev/run/start"
AUDIT_QUERY = "/api/v1/azdev/audit/query"
OPERATOR = Actor(kind="operator", id="test")


def start_body(run_id: str, tenant: str) -> dict[str, Any]:
    return {
        "provider": "ado",
        "project_id": "proj",
        "run_id": run_id,
        "pipeline_name": "farmer-registry",
        "tenant": tenant,
        "stage": "development",
        "start_time": "2026-11-02T09:00:00Z",
    }


def actions(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))


class TestPersonalTokens:
    def test_a_person_acts_with_their_grants_for_their_tenants(self, client, make_person):
        alice = make_person("alice@example.org", [("azdev_devops", "to")])
        assert client.post(
            START, json=start_body("1", "to"), headers=alice.headers
        ).status_code in (200, 201)
        refused = client.post(START, json=start_body("2", "ws"), headers=alice.headers)
        assert refused.status_code == 403
        listed = client.get(RUNS, headers=alice.headers).json()
        assert [item["tenant"] for item in listed["items"]] == ["to"]

    def test_a_person_without_grants_may_do_nothing(self, client, make_person):
        nobody = make_person("nobody@example.org")
        answer = client.get(RUNS, headers=nobody.headers)
        assert answer.status_code == 403
        assert answer.headers["content-type"].startswith("application/problem+json")

    def test_each_grant_has_its_own_tenants(self, client, make_person, make_key):
        # Devops for Tonga only, auditor everywhere: runs of Samoa are visible (read), but
        # starting one in Samoa is not allowed (write needs devops there).
        carol = make_person("carol@example.org", [("azdev_devops", "to"), ("azdev_auditor", None)])
        ci = make_key("azdev_devops")
        client.post(START, json=start_body("9", "ws"), headers=bearer(ci))
        assert {i["tenant"] for i in client.get(RUNS, headers=carol.headers).json()["items"]} == {
            "ws"
        }
        answer = client.post(START, json=start_body("10", "ws"), headers=carol.headers)
        assert answer.status_code == 403

    def test_a_revoked_grant_stops_at_once_not_at_token_expiry(self, ctx, client, make_person):
        dave = make_person("dave@example.org", [("azdev_auditor", None)])
        assert client.get(RUNS, headers=dave.headers).status_code == 200
        revoke_grant(
            ctx, actor=OPERATOR, login=dave.login, role=Role.AUDITOR, tenant=None, reason="left"
        )
        assert client.get(RUNS, headers=dave.headers).status_code == 403

    def test_a_grant_until_a_time_lapses_then(self, ctx, clock, client, make_person):
        erin = make_person("erin@example.org")
        grant_role(
            ctx,
            actor=OPERATOR,
            login=erin.login,
            role=Role.AUDITOR,
            tenant=None,
            expires_at=clock.now() + timedelta(hours=1),
            reason="cover for the holidays",
        )
        assert client.get(RUNS, headers=erin.headers).status_code == 200
        clock.advance(timedelta(hours=1))
        assert client.get(RUNS, headers=erin.headers).status_code == 403

    def test_expired_revoked_and_disabled_are_all_the_same_401(
        self, ctx, clock, client, make_person
    ):
        frank = make_person("frank@example.org", [("azdev_auditor", None)])
        frank_self = person_actor(frank.person_id)
        short = issue_personal_token(
            ctx, actor=frank_self, login=frank.login, name="short", ttl=timedelta(minutes=5)
        )
        revoked = issue_personal_token(ctx, actor=frank_self, login=frank.login, name="revoked")
        revoke_personal_token(ctx, actor=OPERATOR, prefix=revoked.token.prefix)
        assert client.get(RUNS, headers=bearer(short.secret)).status_code == 200
        clock.advance(timedelta(minutes=5))
        bodies = []
        for secret in (short.secret, revoked.secret, short.secret[:-1] + "A"):
            answer = client.get(RUNS, headers=bearer(secret))
            assert answer.status_code == 401
            bodies.append(answer.json()["detail"])
        disable_person(ctx, actor=OPERATOR, login=frank.login, reason="left the company")
        answer = client.get(RUNS, headers=frank.headers)
        assert answer.status_code == 401
        bodies.append(answer.json()["detail"])
        assert len(set(bodies)) == 1  # nothing tells an attacker which check failed

    def test_an_api_key_is_never_a_person_and_a_token_is(self, ctx, make_person):
        gina = make_person("gina@example.org", [("azdev_approver_tech", "to")])
        principal = gina.principal(ctx)
        assert principal.is_person
        assert principal.person_id == gina.person_id
        assert principal.holds(Role.APPROVER_TECH, "to")
        assert not principal.holds(Role.APPROVER_TECH, "ws")
        key = Principal.with_role(
            kind="api_key", id="apikey:x", name="x", role=Role.ADMIN, tenants=None
        )
        assert not key.is_person
        # A principal that claims the person kind without a person behind it is not one.
        fake = Principal(kind="person", id="person:1", name="x", grants=(Grant(Role.ADMIN),))
        assert not fake.is_person


class TestAdministration:
    def test_logins_are_unique_whatever_the_case(self, ctx):
        create_person(ctx, actor=OPERATOR, login="Hana@Example.org", display_name="Hana")
        with pytest.raises(Conflict):
            create_person(ctx, actor=OPERATOR, login="hana@example.org", display_name="Hana 2")

    @pytest.mark.parametrize("login", ["", " ", "a b", "x" * 201, "é@example.org", "-x"])
    def test_bad_logins_are_refused(self, ctx, login):
        with pytest.raises(ValidationProblem):
            create_person(ctx, actor=OPERATOR, login=login, display_name="X")

    def test_granting_an_unknown_tenant_or_to_nobody_is_refused(self, ctx, make_person):
        make_person("ivan@example.org")
        with pytest.raises(ValidationProblem, match="unknown tenant"):
            grant_role(ctx, actor=OPERATOR, login="ivan@example.org", role=Role.DEVOPS, tenant="zz")
        with pytest.raises(NotFound):
            grant_role(ctx, actor=OPERATOR, login="nobody@example.org", role=Role.DEVOPS)

    def test_granting_twice_keeps_one_grant(self, ctx, make_person):
        make_person("jane@example.org")
        first = grant_role(
            ctx, actor=OPERATOR, login="jane@example.org", role=Role.DEVOPS, tenant="to"
        )
        again = grant_role(
            ctx, actor=OPERATOR, login="jane@example.org", role=Role.DEVOPS, tenant="to"
        )
        assert first.id == again.id

    def test_a_tenant_administrator_grants_tenant_roles_in_its_tenants_only(self, ctx, make_person):
        tonga_admin = make_person("admin.to@example.org", [("tenant_admin", "to")])
        make_person("kai@example.org")
        by = tonga_admin.principal(ctx)
        actor = by.actor
        grant_role(
            ctx, actor=actor, login="kai@example.org", role=Role.APPROVER_TECH, tenant="to", by=by
        )
        with pytest.raises(Forbidden):
            grant_role(
                ctx,
                actor=actor,
                login="kai@example.org",
                role=Role.APPROVER_TECH,
                tenant="ws",
                by=by,
            )
        with pytest.raises(Forbidden):
            grant_role(
                ctx, actor=actor, login="kai@example.org", role=Role.AUDITOR, tenant=None, by=by
            )
        for role in (Role.ADMIN, Role.TENANT_ADMIN, Role.OVERRIDE_SIGNER):
            with pytest.raises(Forbidden):
                grant_role(ctx, actor=actor, login="kai@example.org", role=role, tenant="to", by=by)

    def test_a_provider_id_is_one_person(self, ctx, make_person):
        lena = make_person("lena@example.org", links=[("github", "583231")])
        make_person("mike@example.org")
        with ctx.read() as session:
            found = person_for_provider_id(session, "github", "583231")
            assert found is not None
            assert found.id == lena.person_id
            assert person_for_provider_id(session, "ado", "583231") is None
        # Linking again to the same person is a no-op; to another person a conflict.
        link_person(
            ctx,
            actor=OPERATOR,
            login="lena@example.org",
            provider="github",
            provider_user_id="583231",
        )
        with pytest.raises(Conflict):
            link_person(
                ctx,
                actor=OPERATOR,
                login="mike@example.org",
                provider="github",
                provider_user_id="583231",
            )
        with pytest.raises(ValidationProblem):
            link_person(
                ctx,
                actor=OPERATOR,
                login="mike@example.org",
                provider="gitlab",
                provider_user_id="1",
            )

    def test_a_token_lives_at_most_thirty_days(self, ctx, make_person):
        nina = make_person("nina@example.org")
        with pytest.raises(ValidationProblem):
            issue_personal_token(
                ctx,
                actor=person_actor(nina.person_id),
                login="nina@example.org",
                name="long",
                ttl=timedelta(days=31),
            )

    def test_no_one_mints_a_personal_token_for_someone_else(self, ctx, make_person):
        make_person("pia@example.org", [("azdev_approver_biz", "to")])
        quin = make_person("quin@example.org", [("admin", None)])
        for actor in (OPERATOR, person_actor(quin.person_id)):
            with pytest.raises(Forbidden, match="only by the person"):
                issue_personal_token(ctx, actor=actor, login="pia@example.org", name="theirs")


class TestAuditTrail:
    def test_every_change_is_an_entry_and_personal_values_are_hashed(self, ctx):
        olga = create_person(
            ctx,
            actor=OPERATOR,
            login="olga@example.org",
            display_name="Olga Tupou",
            email="olga@example.org",
        )
        grant_role(ctx, actor=OPERATOR, login="olga@example.org", role=Role.AUDITOR, tenant="to")
        link_person(
            ctx,
            actor=OPERATOR,
            login="olga@example.org",
            provider="ado",
            provider_user_id="4f1e-olga",
        )
        issued = issue_personal_token(
            ctx, actor=person_actor(olga.id), login="olga@example.org", name="laptop"
        )
        revoke_personal_token(ctx, actor=OPERATOR, prefix=issued.token.prefix)
        revoke_grant(
            ctx,
            actor=OPERATOR,
            login="olga@example.org",
            role=Role.AUDITOR,
            tenant="to",
            reason="moved",
        )
        disable_person(ctx, actor=OPERATOR, login="olga@example.org", reason="left")
        assert actions(ctx)[-7:] == [
            "person.create",
            "grant.create",
            "person.link",
            "token.create",
            "token.revoke",
            "grant.revoke",
            "person.disable",
        ]
        with ctx.read() as session:
            bodies = b"".join(session.scalars(select(AuditInbox.body)))
        for personal in (b"olga@example.org", b"Olga Tupou", b"4f1e-olga"):
            assert personal not in bodies
        assert issued.secret.encode() not in bodies

    def test_disabling_revokes_the_tokens(self, ctx, client, make_person):
        pete = make_person("pete@example.org", [("azdev_auditor", None)])
        disable_person(ctx, actor=OPERATOR, login=pete.login, reason="left")
        # Re-enabling is not a thing: the token stays dead even at the database level.
        from azdev_ica.db.tables import PersonToken

        with ctx.read() as session:
            assert all(
                row.revoked_at is not None
                for row in session.scalars(
                    select(PersonToken).where(PersonToken.person_id == pete.person_id)
                )
            )


class TestPermissionsOfPeople:
    def test_scope_is_per_permission(self):
        principal = Principal(
            kind="person",
            id="person:7",
            name="x",
            grants=(Grant(Role.DEVOPS, "to"), Grant(Role.AUDITOR, None)),
            person_id=7,
        )
        assert principal.scope(Permission.RUN_WRITE) == frozenset({"to"})
        assert principal.scope(Permission.RUN_READ) is None
        assert principal.scope(Permission.USER_ADMIN) == frozenset()
        assert principal.can_for(Permission.RUN_WRITE, "to")
        assert not principal.can_for(Permission.RUN_WRITE, "ws")
        assert principal.can_for(Permission.AUDIT_READ, "ws")
        assert principal.role is None  # several roles: no single one to name
