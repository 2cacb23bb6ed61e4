"""Emergency overrides: no skip flag; a reason, an override signer's signature (two when the
policy asks), an alert at once, a review after the fact that escalates when late, and a
count per quarter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox, OutboxMessage
from azdev_ica.services.overrides import review_due, sign_override
from tests.gates.conftest import API, codes, gate, new_run, use_policy

REASON = "CVE-2026-1234 is exploited in production; hotfix cannot wait for the SLA"


@pytest.fixture
def devops(make_key: Any) -> str:
    return str(make_key("azdev_devops"))


@pytest.fixture
def signers(make_person: Any) -> dict[str, Any]:
    return {
        "ceo": make_person("ceo", [("azdev_override_signer", None)]),
        "cfo": make_person("cfo", [("azdev_override_signer", "to")]),
        "wes": make_person("wes", [("azdev_override_signer", "ws")]),
        "rita": make_person("rita", [("azdev_devops", "to"), ("azdev_override_signer", "to")]),
        "alice": make_person("alice", [("azdev_approver_tech", "to")]),
    }


def post(client: Any, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post(f"{API}{path}", json=body, headers=headers)


def ask(client: Any, key: str, run_key: str, **body: Any) -> Any:
    return post(client, "/override", {"Authorization": f"Bearer {key}"},
                {"run_key": run_key, "reason": REASON, **body})  # fmt: skip


def sign(client: Any, person: Any, override_id: int, decision: str = "approve") -> Any:
    return post(client, f"/override/{override_id}/sign", person.headers, {"decision": decision})


def topics(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(OutboxMessage.topic)
                .where(OutboxMessage.subject_type == "override")
                .order_by(OutboxMessage.id)
            )
        )


def actions(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(AuditInbox.action)
                .where(AuditInbox.action.like("override.%"))
                .order_by(AuditInbox.id)
            )
        )


class TestOverride:
    def test_a_signed_override_lets_the_gate_allow_with_reason_override(
        self, ctx, client, devops, signers
    ):
        run_key = new_run(ctx, coverage=50)  # production, no approval, low coverage
        assert gate(client, devops, run_key)["status"] == "deny"
        asked = ask(client, devops, run_key)
        assert asked.status_code == 201
        override = asked.json()
        assert (override["status"], override["tenant"], override["stage"]) == (
            "pending",
            "to",
            "production",
        )
        assert gate(client, devops, run_key)["status"] == "deny"  # not signed yet
        signed = sign(client, signers["ceo"], override["id"])
        assert signed.status_code == 200
        assert signed.json()["status"] == "signed"
        assert signed.json()["review_due_at"] is not None
        answer = gate(client, devops, run_key)
        assert (answer["status"], codes(answer)) == ("allow", ["override"])
        assert answer["override_id"] == override["id"]
        assert set(answer["overridden"]) == {"approval_missing", "coverage_below_minimum"}
        assert topics(ctx) == ["override.requested", "override.signed"]
        assert actions(ctx) == ["override.request", "override.sign"]

    def test_asking_again_returns_the_open_override(self, ctx, client, devops):
        run_key = new_run(ctx)
        first = ask(client, devops, run_key)
        again = ask(client, devops, run_key, reason="another reason")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]

    def test_an_override_does_not_lift_the_lock_or_a_finished_run(
        self, ctx, client, devops, signers
    ):
        holder = new_run(ctx, stage="staging")
        gate(client, devops, holder)
        run_key = new_run(ctx, stage="staging", coverage=10)
        sign(client, signers["ceo"], ask(client, devops, run_key).json()["id"])
        answer = gate(client, devops, run_key)
        assert (answer["status"], codes(answer)) == ("pending", ["lock_held"])

    def test_an_override_does_not_lift_the_build_rule(self, ctx, client, devops, signers):
        # Provenance is not an emergency's to waive: no recorded build, no deploy.
        run_key = new_run(ctx, build_passed=None)
        sign(client, signers["ceo"], ask(client, devops, run_key).json()["id"])
        answer = gate(client, devops, run_key)
        assert (answer["status"], codes(answer)) == ("deny", ["build_missing"])
        assert "build_missing" not in answer["overridden"]

    def test_an_override_is_bound_to_the_artifact(self, ctx, client, devops, signers):
        run_key = new_run(ctx)
        sign(client, signers["ceo"], ask(client, devops, run_key).json()["id"])
        other = gate(client, devops, run_key, artifact_digest="sha256:" + "ee" * 32)
        assert other["status"] == "deny"
        assert "override" not in codes(other)

    def test_a_rejected_override_lifts_nothing(self, ctx, client, devops, signers):
        run_key = new_run(ctx)
        override_id = ask(client, devops, run_key).json()["id"]
        assert sign(client, signers["ceo"], override_id, "reject").json()["status"] == "rejected"
        assert gate(client, devops, run_key)["status"] == "deny"


class TestSigning:
    @pytest.fixture
    def override_id(self, ctx: Any, client: Any, devops: str) -> int:
        return int(ask(client, devops, new_run(ctx, requested_for=None)).json()["id"])

    def refusal(self, response: Any) -> str:
        assert response.status_code == 403, response.text
        return str(response.json().get("code") or response.json()["type"])

    def test_a_signer_of_another_tenant_cannot_sign(self, ctx, client, signers, override_id):
        # Out of scope looks exactly like absent.
        assert sign(client, signers["wes"], override_id).status_code == 404
        assert "override.sign" not in actions(ctx)

    def test_an_approver_is_not_an_override_signer(self, client, signers, override_id):
        response = sign(client, signers["alice"], override_id)
        assert response.json()["type"] == "urn:ica:problem:forbidden"

    def test_an_api_key_never_signs(self, client, make_key, override_id):
        response = post(client, f"/override/{override_id}/sign",
                        {"Authorization": f"Bearer {make_key('admin')}"},
                        {"decision": "approve"})  # fmt: skip
        assert response.json()["type"] == "urn:ica:problem:person-required"

    def test_the_requester_never_signs(self, ctx, client, signers):
        run_key = new_run(ctx)
        override_id = ask(client, signers["rita"].token, run_key).json()["id"]
        assert self.refusal(sign(client, signers["rita"], override_id)) == "requester_cannot_sign"
        assert actions(ctx)[-1] == "override.refuse"

    def test_two_signatures_when_the_policy_asks(self, ctx, client, devops, signers):
        use_policy(ctx, "overrides:\n  signatures: 2\n")
        run_key = new_run(ctx)
        override_id = ask(client, devops, run_key).json()["id"]
        assert sign(client, signers["ceo"], override_id).json()["status"] == "pending"
        assert gate(client, devops, run_key)["status"] == "deny"
        again = sign(client, signers["ceo"], override_id)
        assert self.refusal(again) == "already_signed"
        assert sign(client, signers["cfo"], override_id).json()["status"] == "signed"
        assert gate(client, devops, run_key)["status"] == "allow"

    def test_a_signed_override_takes_no_more_signatures(self, client, signers, override_id):
        sign(client, signers["ceo"], override_id)
        assert self.refusal(sign(client, signers["cfo"], override_id)) == "override_closed"


class TestReview:
    @pytest.fixture
    def signed(self, ctx: Any, client: Any, devops: str, signers: dict[str, Any]) -> int:
        override_id = int(ask(client, devops, new_run(ctx)).json()["id"])
        sign(client, signers["ceo"], override_id)
        return override_id

    def review(self, client: Any, person: Any, override_id: int) -> Any:
        return post(client, f"/override/{override_id}/review", person.headers,
                    {"findings": "justified; patch verified"})  # fmt: skip

    def test_an_independent_person_closes_the_review(self, ctx, client, signers, signed, clock):
        assert self.review(client, signers["ceo"], signed).status_code == 403  # the signer
        done = self.review(client, signers["cfo"], signed)
        assert done.status_code == 200
        assert done.json()["reviewed_at"] is not None
        clock.advance(timedelta(days=10))
        assert review_due(ctx) == []

    def test_a_late_review_escalates_once(self, ctx, client, signers, signed, clock):
        clock.advance(timedelta(hours=71))
        assert review_due(ctx) == []
        clock.advance(timedelta(hours=2))
        assert review_due(ctx) == [signed]
        assert review_due(ctx) == []
        assert topics(ctx)[-1] == "override.review_overdue"
        assert "override.review_escalate" in actions(ctx)
        # A late review is still accepted, and recorded as late.
        assert self.review(client, signers["cfo"], signed).status_code == 200


class TestStats:
    def test_overrides_are_counted_per_quarter_against_the_target(
        self, ctx, client, devops, signers, clock, make_key
    ):
        for _ in range(3):
            sign(client, signers["ceo"], ask(client, devops, new_run(ctx)).json()["id"])
        ask(client, devops, new_run(ctx))  # asked, never signed: not counted
        clock.set(datetime(2027, 1, 5, tzinfo=UTC))
        late = ask(client, devops, new_run(ctx)).json()["id"]
        # (The test token has expired by now: sign as the person directly.)
        sign_override(ctx, principal=signers["ceo"].principal(ctx), override_id=late, approve=True)
        devops = make_key("azdev_devops")
        response = client.get(
            f"{API}/overrides/stats", headers={"Authorization": f"Bearer {devops}"}
        )
        assert response.status_code == 200
        stats = response.json()
        assert [(q["quarter"], q["total"], q["over_target"]) for q in stats["quarters"]] == [
            ("2027-Q1", 1, False),
            ("2026-Q4", 3, True),
        ]
        assert stats["quarters"][1]["by_tenant"] == {"to": 3}
        assert (stats["quarters"][0]["target"], stats["open_reviews"]) == (2, 4)

    def test_a_scoped_reader_sees_only_its_tenants(self, ctx, client, devops, signers, make_key):
        sign(client, signers["ceo"], ask(client, devops, new_run(ctx)).json()["id"])
        samoa = make_key("azdev_auditor", ["ws"])
        stats = client.get(f"{API}/overrides/stats", headers={"Authorization": f"Bearer {samoa}"})
        assert stats.json()["quarters"][0]["total"] == 0


class TestEveryoneWhoTriggeredTheRunIsItsRequester:
    """A re-run started by someone else: whoever triggered any attempt of the run is on the
    requesting side, and none of them signs or reviews its override (segregation of duties)."""

    @pytest.fixture
    def triggers(self, make_person: Any) -> dict[str, Any]:
        signer = [("azdev_override_signer", "to")]
        return {
            "ana": make_person("ana", signer, [("ado", "ana-ado-id")]),
            "ben": make_person("ben", signer, [("ado", "ben-ado-id")]),
        }

    def rerun(self, client: Any, devops: str, run_key: str, by: str) -> None:
        _, project_id, run_id = run_key.split(":")
        body = {"provider": "ado", "project_id": project_id, "run_id": run_id,
                "pipeline_name": "registry-deploy", "attempt": 2, "tenant": "to",
                "stage": "production", "requested_for": by}  # fmt: skip
        response = post(client, "/run/start", {"Authorization": f"Bearer {devops}"}, body)
        assert (response.status_code, response.json()["attempt"]) == (200, 2), response.text

    def test_neither_the_first_trigger_nor_the_one_who_re_ran_it_signs(
        self, ctx, client, devops, signers, triggers
    ):
        run_key = new_run(ctx, requested_for="ana-ado-id")  # ana ran it
        self.rerun(client, devops, run_key, "ben-ado-id")  # ben re-ran it
        override_id = ask(client, devops, run_key).json()["id"]
        for person in (triggers["ana"], triggers["ben"]):
            refused = sign(client, person, override_id)
            assert (refused.status_code, refused.json().get("code")) == (
                403,
                "requester_cannot_sign",
            ), refused.text
        assert actions(ctx)[-1] == "override.refuse"
        assert sign(client, signers["cfo"], override_id).json()["status"] == "signed"

    def test_a_re_run_after_the_request_makes_its_trigger_a_requester_too(
        self, ctx, client, devops, triggers
    ):
        run_key = new_run(ctx, requested_for="ana-ado-id")
        override_id = ask(client, devops, run_key).json()["id"]
        self.rerun(client, devops, run_key, "ben-ado-id")
        refused = sign(client, triggers["ben"], override_id)
        assert (refused.status_code, refused.json().get("code")) == (403, "requester_cannot_sign")

    def test_whoever_re_ran_it_does_not_review_it(self, ctx, client, devops, signers, triggers):
        run_key = new_run(ctx, requested_for="ana-ado-id")
        self.rerun(client, devops, run_key, "ben-ado-id")
        override_id = ask(client, devops, run_key).json()["id"]
        assert sign(client, signers["ceo"], override_id).json()["status"] == "signed"
        review = post(client, f"/override/{override_id}/review", triggers["ben"].headers,
                      {"findings": "justified; patch verified"})  # fmt: skip
        assert (review.status_code, review.json().get("code")) == (403, "signer_cannot_review")
        assert sign(client, signers["cfo"], override_id).status_code == 403  # closed already
