"""Governed policy changes (seed 000 §8.1): a proposed policy version takes effect only when
two approvers (not the proposer, two different people, holding policy:sign for every tenant)
have signed it, and only while its base version is still the active one."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AuditInbox, GateEvaluation, PolicyVersion
from azdev_ica.errors import PersonRequired, PolicyChangeRefused, StaleProposal
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.policy import parse_policy
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.policies import apply_policy
from azdev_ica.services.policy_changes import (
    get_proposal,
    propose_policy,
    sign_proposal,
    withdraw_proposal,
)
from tests.conftest import bearer
from tests.gates.conftest import PIPELINE, new_run

API = "/api/v1/azdev/policy"
CK = "name: Cook Islands"


@pytest.fixture
def active_document(ctx: Any) -> str:
    with ctx.read() as session:
        document: str = session.scalars(
            select(PolicyVersion.document).order_by(PolicyVersion.id.desc()).limit(1)
        ).one()
    return document


@pytest.fixture
def renamed(active_document: str) -> str:
    """The active policy with one tenant renamed (a real, valid change)."""
    assert CK in active_document
    return active_document.replace(CK, "name: Kūki ʻĀirani")


@pytest.fixture
def team(make_person: Any) -> dict[str, Any]:
    return {
        "dana": make_person("dana", [("azdev_devops", None)]),  # proposes
        "alice": make_person("alice", [("azdev_approver_tech", None)]),
        "bob": make_person("bob", [("azdev_approver_biz", None)]),
        "root": make_person("root", [("admin", None)]),
        "tina": make_person("tina", [("azdev_approver_tech", "to")]),  # one tenant only
        "audrey": make_person("audrey", [("azdev_auditor", None)]),
    }


def _p(ctx: Any, team: dict[str, Any], login: str) -> Principal:
    principal: Principal = team[login].principal(ctx)
    return principal


def _active_sha(ctx: Any) -> str:
    with ctx.read() as session:
        return ctx.policies.active(session).sha256  # type: ignore[no-any-return]


def _versions(ctx: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(select(func.count()).select_from(PolicyVersion)) or 0)


class TestService:
    def test_activation_only_at_the_second_signature(self, ctx, team, renamed):
        before = _active_sha(ctx)
        proposed = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="rename"
        )
        assert proposed.created
        proposal_id = proposed.proposal.id
        row = sign_proposal(
            ctx, principal=_p(ctx, team, "alice"), proposal_id=proposal_id, approve=True
        )
        assert row.status == "pending"
        assert _active_sha(ctx) == before
        assert _versions(ctx) == 1
        row = sign_proposal(
            ctx, principal=_p(ctx, team, "bob"), proposal_id=proposal_id, approve=True
        )
        assert row.status == "active"
        new_sha = parse_policy(renamed).sha256
        assert _active_sha(ctx) == new_sha
        with ctx.read() as session:
            version = session.scalars(
                select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)
            ).one()
            assert version.sha256 == new_sha
            assert version.applied_by == f"person:{team['bob'].person_id}"
            view = get_proposal(session, proposal_id)
            assert view.proposal.version_id == version.id
            assert [s.person_id for s in view.signatures] == [
                team["alice"].person_id,
                team["bob"].person_id,
            ]
            actions = list(
                session.scalars(
                    select(AuditInbox.action)
                    .where(AuditInbox.action.like("policy.%"))
                    .order_by(AuditInbox.id)
                )
            )
        assert actions[-4:] == ["policy.propose", "policy.sign", "policy.sign", "policy.activate"]

    def test_the_proposer_never_signs(self, ctx, team, renamed):
        # root may both propose and sign (admin), but never their own proposal
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "root"), document=renamed, reason="x"
        )
        with pytest.raises(PolicyChangeRefused) as refused:
            sign_proposal(
                ctx, principal=_p(ctx, team, "root"), proposal_id=proposal.proposal.id, approve=True
            )
        assert refused.value.extensions["code"] == "proposer_cannot_sign"

    def test_one_person_signs_once(self, ctx, team, renamed):
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x"
        )
        pid = proposal.proposal.id
        sign_proposal(ctx, principal=_p(ctx, team, "alice"), proposal_id=pid, approve=True)
        with pytest.raises(PolicyChangeRefused) as refused:
            sign_proposal(ctx, principal=_p(ctx, team, "alice"), proposal_id=pid, approve=True)
        assert refused.value.extensions["code"] == "already_signed"
        assert _versions(ctx) == 1

    @pytest.mark.parametrize(
        ("login", "code"), [("tina", "all_tenants_required"), ("audrey", "role_not_held")]
    )
    def test_a_signer_needs_policy_sign_for_every_tenant(self, ctx, team, renamed, login, code):
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x"
        )
        with pytest.raises(PolicyChangeRefused) as refused:
            sign_proposal(
                ctx, principal=_p(ctx, team, login), proposal_id=proposal.proposal.id, approve=True
            )
        assert refused.value.extensions["code"] == code

    def test_an_api_key_never_signs(self, ctx, team, renamed):
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x"
        )
        key = Principal.with_role(
            kind="api_key", id="api_key:a", name="a", role=Role.ADMIN, tenants=None
        )
        with pytest.raises(PersonRequired):
            sign_proposal(ctx, principal=key, proposal_id=proposal.proposal.id, approve=True)

    def test_a_stale_base_is_refused_and_must_be_proposed_again(self, ctx, team, renamed):
        first = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="a")
        other = renamed.replace("name: Samoa", "name: Sāmoa")
        second = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=other, reason="b")
        sign_proposal(
            ctx, principal=_p(ctx, team, "alice"), proposal_id=second.proposal.id, approve=True
        )
        for signer in ("alice", "bob"):
            sign_proposal(
                ctx, principal=_p(ctx, team, signer), proposal_id=first.proposal.id, approve=True
            )
        with pytest.raises(StaleProposal):
            sign_proposal(
                ctx, principal=_p(ctx, team, "bob"), proposal_id=second.proposal.id, approve=True
            )
        assert _active_sha(ctx) == parse_policy(renamed).sha256
        with ctx.read() as session:
            view = get_proposal(session, second.proposal.id)
            assert view.stale
            assert view.proposal.status == "pending"
        again = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=other, reason="b")
        assert again.created
        assert again.proposal.id != second.proposal.id
        for signer in ("alice", "bob"):
            sign_proposal(
                ctx, principal=_p(ctx, team, signer), proposal_id=again.proposal.id, approve=True
            )
        assert _active_sha(ctx) == parse_policy(other).sha256

    def test_a_break_glass_apply_makes_pending_proposals_stale(self, ctx, team, renamed):
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x"
        )
        sign_proposal(
            ctx, principal=_p(ctx, team, "alice"), proposal_id=proposal.proposal.id, approve=True
        )
        apply_policy(
            ctx,
            actor=Actor(kind="operator", id="cli:ops"),
            document=renamed.replace("name: Tonga", "name: Tonga!"),
            source="x",
            break_glass_reason="recovery",
        )
        with pytest.raises(StaleProposal):
            sign_proposal(
                ctx, principal=_p(ctx, team, "bob"), proposal_id=proposal.proposal.id, approve=True
            )

    def test_reject_and_withdraw_close_a_proposal(self, ctx, team, renamed):
        a = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x")
        row = sign_proposal(
            ctx,
            principal=_p(ctx, team, "alice"),
            proposal_id=a.proposal.id,
            approve=False,
            comment="not now",
        )
        assert row.status == "rejected"
        with pytest.raises(PolicyChangeRefused) as refused:
            sign_proposal(
                ctx, principal=_p(ctx, team, "bob"), proposal_id=a.proposal.id, approve=True
            )
        assert refused.value.extensions["code"] == "proposal_closed"
        b = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="y")
        assert b.created  # the rejected one is closed: a new proposal
        with pytest.raises(PolicyChangeRefused) as refused:
            withdraw_proposal(
                ctx, principal=_p(ctx, team, "alice"), proposal_id=b.proposal.id, reason="no"
            )
        assert refused.value.extensions["code"] == "not_the_proposer"
        row = withdraw_proposal(
            ctx, principal=_p(ctx, team, "dana"), proposal_id=b.proposal.id, reason="superseded"
        )
        assert row.status == "withdrawn"
        assert _versions(ctx) == 1

    def test_the_same_pending_document_answers_with_its_proposal(self, ctx, team, renamed):
        a = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x")
        b = propose_policy(ctx, principal=_p(ctx, team, "root"), document=renamed, reason="x")
        assert not b.created
        assert b.proposal.id == a.proposal.id

    def test_the_gate_uses_the_new_version_only_after_activation(self, ctx, team, renamed):
        old_sha, new_sha = _active_sha(ctx), parse_policy(renamed).sha256
        run_key = new_run(ctx, stage="staging")

        def decided() -> str:
            return evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key)).policy_hash

        assert decided() == old_sha
        proposal = propose_policy(
            ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x"
        )
        sign_proposal(
            ctx, principal=_p(ctx, team, "alice"), proposal_id=proposal.proposal.id, approve=True
        )
        assert decided() == old_sha
        sign_proposal(
            ctx, principal=_p(ctx, team, "bob"), proposal_id=proposal.proposal.id, approve=True
        )
        assert decided() == new_sha
        with ctx.read() as session:
            hashes = list(
                session.scalars(select(GateEvaluation.policy_hash).order_by(GateEvaluation.id))
            )
        assert hashes == [old_sha, old_sha, new_sha]

    def test_replay_rebuilds_proposals_signatures_and_versions(self, ctx, team, renamed):
        a = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="x")
        for signer in ("alice", "bob"):
            sign_proposal(
                ctx, principal=_p(ctx, team, signer), proposal_id=a.proposal.id, approve=True
            )
        other = renamed.replace("name: Samoa", "name: Sāmoa")
        b = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=other, reason="y")
        sign_proposal(
            ctx,
            principal=_p(ctx, team, "root"),
            proposal_id=b.proposal.id,
            approve=False,
            comment="no",
        )
        c = propose_policy(ctx, principal=_p(ctx, team, "dana"), document=other, reason="z")
        withdraw_proposal(
            ctx, principal=_p(ctx, team, "dana"), proposal_id=c.proposal.id, reason="w"
        )
        seal_now(ctx)
        report = replay_ledger(ctx.db)
        assert report.ok, report.text()
        assert report.rows["azdev_policy_version"] == (2, 2)
        assert report.rows["azdev_policy_proposal"] == (3, 3)
        assert report.rows["azdev_policy_signature"] == (3, 3)


class TestApi:
    def test_propose_sign_activate_over_http(self, client, ctx, team, renamed):
        answer = client.post(
            f"{API}/proposal",
            json={"document": renamed, "reason": "rename"},
            headers=team["dana"].headers,
        )
        assert answer.status_code == 201, answer.text
        proposal = answer.json()
        assert proposal["status"] == "pending"
        assert proposal["signatures"] == []
        assert proposal["base_sha256"] == _active_sha(ctx)
        again = client.post(
            f"{API}/proposal",
            json={"document": renamed, "reason": "rename"},
            headers=team["dana"].headers,
        )
        assert again.status_code == 200
        assert again.json()["id"] == proposal["id"]
        sign = f"{API}/proposal/{proposal['id']}/sign"
        refused = client.post(sign, json={"decision": "approve"}, headers=team["dana"].headers)
        assert refused.status_code == 403  # devops does not hold policy:sign
        first = client.post(sign, json={"decision": "approve"}, headers=team["alice"].headers)
        assert first.status_code == 200
        assert first.json()["status"] == "pending"
        twice = client.post(sign, json={"decision": "approve"}, headers=team["alice"].headers)
        assert twice.status_code == 403
        assert twice.json()["code"] == "already_signed"
        second = client.post(
            sign, json={"decision": "approve", "comment": "ok"}, headers=team["bob"].headers
        )
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "active"
        assert second.json()["version_id"]
        listing = client.get(f"{API}/proposal?status=active", headers=team["audrey"].headers)
        assert [p["id"] for p in listing.json()["items"]] == [proposal["id"]]
        versions = client.get(f"{API}/versions", headers=team["audrey"].headers).json()["items"]
        assert [v["active"] for v in versions] == [True, False]
        assert versions[0]["sha256"] == parse_policy(renamed).sha256
        diff = client.get(f"{API}/diff", headers=team["audrey"].headers)
        assert diff.status_code == 200, diff.text
        body = diff.json()
        assert body["summary"]["tenants_changed"] == ["ck"]
        assert body["summary"]["sections_changed"] == ["tenants"]
        assert '-      "name": "Cook Islands"' in body["unified_diff"]

    def test_an_api_key_may_propose_but_never_sign(self, client, make_key, team, renamed):
        key = make_key("admin")
        answer = client.post(
            f"{API}/proposal", json={"document": renamed, "reason": "ci"}, headers=bearer(key)
        )
        assert answer.status_code == 201
        signed = client.post(
            f"{API}/proposal/{answer.json()['id']}/sign",
            json={"decision": "approve"},
            headers=bearer(key),
        )
        assert signed.status_code == 403
        assert signed.json()["type"].endswith("person-required")

    def test_a_tenant_scoped_proposer_is_refused(self, client, make_key, renamed):
        key = make_key("azdev_devops", ["to"])
        answer = client.post(
            f"{API}/proposal", json={"document": renamed, "reason": "x"}, headers=bearer(key)
        )
        assert answer.status_code == 403
        assert answer.json()["code"] == "all_tenants_required"

    def test_a_stale_proposal_is_a_409(self, client, ctx, team, renamed):
        headers = team["dana"].headers
        first = client.post(
            f"{API}/proposal", json={"document": renamed, "reason": "a"}, headers=headers
        )
        other = renamed.replace("name: Samoa", "name: Sāmoa")
        second = client.post(
            f"{API}/proposal", json={"document": other, "reason": "b"}, headers=headers
        )
        for person in ("alice", "bob"):
            client.post(
                f"{API}/proposal/{first.json()['id']}/sign",
                json={"decision": "approve"},
                headers=team[person].headers,
            )
        answer = client.post(
            f"{API}/proposal/{second.json()['id']}/sign",
            json={"decision": "approve"},
            headers=team["alice"].headers,
        )
        assert answer.status_code == 409
        assert answer.json()["code"] == "stale_base"
        shown = client.get(f"{API}/proposal/{second.json()['id']}", headers=headers).json()
        assert shown["stale"] is True
        diff = client.get(f"{API}/diff?to=proposal:{second.json()['id']}", headers=headers).json()
        assert diff["summary"]["tenants_changed"] == ["ck", "ws"]  # against its base

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"document": "tenants: [", "reason": "x"}, 422),
            ({"document": "version: 1\n", "reason": "x"}, 422),
            ({"document": "x", "reason": ""}, 422),
            ({"document": "x"}, 422),
        ],
    )
    def test_bad_proposals_are_4xx(self, client, team, body, status):
        answer = client.post(f"{API}/proposal", json=body, headers=team["dana"].headers)
        assert answer.status_code == status, answer.text

    def test_the_active_document_again_is_a_409(self, client, team, active_document):
        answer = client.post(
            f"{API}/proposal",
            json={"document": active_document, "reason": "x"},
            headers=team["dana"].headers,
        )
        assert answer.status_code == 409
        assert answer.json()["code"] == "already_active"

    @pytest.mark.parametrize(
        "query", ["?to=zz", "?from=proposal:x", "?to=99999", "?to=abcdef0", "?to=proposal:999"]
    )
    def test_bad_diff_refs_are_4xx(self, client, team, query):
        answer = client.get(f"{API}/diff{query}", headers=team["audrey"].headers)
        assert 400 <= answer.status_code < 500, answer.text

    def test_unknown_proposal_is_404(self, client, team):
        assert client.get(f"{API}/proposal/77", headers=team["audrey"].headers).status_code == 404
        answer = client.post(
            f"{API}/proposal/77/sign", json={"decision": "approve"}, headers=team["alice"].headers
        )
        assert answer.status_code == 404


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_activation_waits_for_a_concurrent_policy_change(ctx, team, renamed, clock):
    """While another transaction changes the active policy (it holds the policy lock), a
    final signature waits for it, then finds its base gone: stale, never activated on top."""
    import threading

    from azdev_ica.services.policy_changes import lock_policy_changes

    proposal_id = propose_policy(
        ctx, principal=_p(ctx, team, "dana"), document=renamed, reason="r"
    ).proposal.id
    sign_proposal(ctx, principal=_p(ctx, team, "alice"), proposal_id=proposal_id, approve=True)
    bob = _p(ctx, team, "bob")
    outcome: list[str] = []

    def last() -> None:
        try:
            outcome.append(
                sign_proposal(ctx, principal=bob, proposal_id=proposal_id, approve=True).status
            )
        except StaleProposal:
            outcome.append("stale")

    other = renamed.replace("name: Samoa", "name: Sāmoa")
    with ctx.db.write() as session:
        lock_policy_changes(session)
        signer = threading.Thread(target=last)
        signer.start()
        signer.join(timeout=2)  # waiting for a thread, not for business time
        assert signer.is_alive()  # it waits for the policy lock
        session.add(
            PolicyVersion(
                sha256=parse_policy(other).sha256,
                document=other,
                applied_at=clock.now(),
                applied_by="test",
            )
        )
    signer.join(timeout=30)
    assert outcome == ["stale"]
    assert _versions(ctx) == 2
