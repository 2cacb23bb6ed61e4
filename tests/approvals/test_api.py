"""Approvals at the HTTP boundary, on SQLite and PostgreSQL: the pipeline asks (as an Azure
DevOps check would, with Basic auth and a small body), people sign with personal tokens, and the
body's flat `status` is what the check's success criterion reads."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.db.tables import AuditInbox
from tests.approvals.conftest import COMMIT, DIGEST, RUN_KEY, TECH
from tests.conftest import bearer

API = "/api/v1/azdev"
SAM_ADO_ID = "a1b2c3d4-0000-4000-8000-000000000sam"


def basic(key: str) -> dict[str, str]:
    """How an Azure DevOps Invoke REST API check authenticates: the key as Basic password."""
    return {"Authorization": "Basic " + base64.b64encode(f"ado:{key}".encode()).decode()}


def ado_success_criterion(body: str) -> bool:
    """`eq(root['status'], 'approved')`, as the check evaluates it on the response body."""
    root = json.loads(body)
    return isinstance(root, dict) and root.get("status") == "approved"


@pytest.fixture
def devops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops", ["to"]))


@pytest.fixture
def asked(client: Any, devops: dict[str, str], run_key: str, people: Any) -> dict[str, Any]:
    response = client.post(f"{API}/approval", json={"run_key": run_key}, headers=devops)
    assert response.status_code == 201, response.text
    return dict(response.json())


def sign(client: Any, person: Any, approval_id: int, **body: Any) -> Any:
    return client.post(
        f"{API}/approval/{approval_id}/sign",
        json={"decision": "approve", **body},
        headers=person.headers,
    )


class TestAzureDevOpsCheck:
    def test_polling_a_check_until_approved(self, client, make_key, run_key, people):
        key = make_key("azdev_devops", ["to"])
        body = json.dumps(
            {
                "run_key": run_key,
                "tenant": "to",
                "stage": "production",
                "artifact_digest": DIGEST,
                "cost_impact_minor": 125000,
                "budget_minor": 500000,
                "currency": "NZD",
            }
        )
        assert len(body) <= 2000  # the check's body limit
        headers = {**basic(key), "Content-Type": "application/json"}

        def evaluate() -> Any:
            response = client.post(f"{API}/approval", content=body, headers=headers)
            assert response.status_code in (200, 201)
            return response

        first = evaluate()
        assert first.status_code == 201
        assert first.json()["status"] == "pending"
        assert not ado_success_criterion(first.text)
        approval_id = first.json()["id"]
        assert sign(client, people["alice"], approval_id).json()["status"] == "technical_approved"
        again = evaluate()
        assert (again.status_code, again.json()["id"]) == (200, approval_id)
        assert not ado_success_criterion(again.text)
        assert sign(client, people["bob"], approval_id).status_code == 200
        done = evaluate()
        assert ado_success_criterion(done.text)
        assert done.json()["awaiting"] == []

    def test_a_rejection_reads_as_not_approved(self, client, asked, people):
        response = sign(client, people["bob"], asked["id"], decision="reject", comment="budget")
        assert response.status_code == 200
        assert response.json()["status"] == "rejected"
        assert not ado_success_criterion(response.text)


class TestRequestAndRead:
    def test_the_answer_binds_the_scope_and_links_to_a_page(self, asked, clock):
        assert asked["status"] == "pending"
        assert (asked["tenant"], asked["stage"]) == ("to", "production")
        assert (asked["artifact_digest"], asked["commit"]) == (DIGEST, COMMIT)
        assert asked["link"] == f"https://ica.localhost/approvals/{asked['id']}"
        assert asked["signatures"] == []
        assert asked["awaiting"] == ["technical", "business"]
        assert asked["expires_at"].startswith("2026-11-03T09:00:00")
        assert asked["sla_due_at"].startswith("2026-11-02T13:00:00")

    def test_an_idempotency_key_replays_the_first_answer(self, client, devops, run_key, ctx):
        headers = {**devops, "Idempotency-Key": "approval-1"}
        first = client.post(f"{API}/approval", json={"run_key": run_key}, headers=headers)
        second = client.post(f"{API}/approval", json={"run_key": run_key}, headers=headers)
        assert first.status_code == 201
        assert second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        reused = client.post(
            f"{API}/approval", json={"run_key": run_key, "stage": "staging"}, headers=headers
        )
        assert reused.status_code == 422
        with ctx.read() as session:
            count = session.scalar(
                select(func.count())
                .select_from(AuditInbox)
                .where(AuditInbox.action == "approval.request")
            )
        assert count == 1

    def test_read_with_signatures_and_under_the_seed_alias(self, client, asked, people):
        sign(client, people["alice"], asked["id"], comment="tests green")
        for prefix in (API, "/api/azdev"):
            response = client.get(f"{prefix}/approval/{asked['id']}", headers=people["bob"].headers)
            assert response.status_code == 200
            body = response.json()
            assert body["status"] == "technical_approved"
            [signature] = body["signatures"]
            assert signature["login"] == "alice"
            assert (signature["half"], signature["decision"]) == ("technical", "approve")
            assert signature["comment"] == "tests green"
            assert body["awaiting"] == ["business"]

    def test_an_expired_request_reads_as_expired_at_once(self, client, asked, devops, clock):
        clock.advance(timedelta(hours=24))
        response = client.get(f"{API}/approval/{asked['id']}", headers=devops)
        assert response.json()["status"] == "expired"

    def test_another_tenant_sees_nothing(self, client, asked, make_key, people):
        samoa = bearer(make_key("azdev_auditor", ["ws"]))
        hidden = client.get(f"{API}/approval/{asked['id']}", headers=samoa)
        absent = client.get(f"{API}/approval/999999", headers=samoa)
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["type"] == absent.json()["type"]
        assert sign(client, people["walt"], asked["id"]).status_code == 404
        listed = client.get(f"{API}/approvals", headers=samoa)
        assert listed.json()["items"] == []

    @pytest.mark.parametrize(
        "body",
        [
            {"run_key": RUN_KEY, "artifact_digest": "sha256:XYZ"},
            {"run_key": RUN_KEY, "cost_impact_minor": "100", "currency": "NZD"},
            {"run_key": RUN_KEY, "cost_impact_minor": 1.5, "currency": "NZD"},
            {"run_key": RUN_KEY, "cost_impact_minor": -1, "currency": "NZD"},
            {"run_key": RUN_KEY, "currency": "nzd"},
            {"run_key": RUN_KEY, "cost_impact_minor": 100},
            {"run_key": RUN_KEY, "surprise": True},
            {"run_key": "not-a-key"},
        ],
    )
    def test_bad_input_is_a_422_problem(self, client, devops, run_key, body):
        response = client.post(f"{API}/approval", json=body, headers=devops)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"

    def test_bad_ids_are_422_or_404_never_500(self, client, devops, run_key):
        for path in ("x", "0", "99999999999999999999", "9223372036854775807"):
            response = client.get(f"{API}/approval/{path}", headers=devops)
            assert response.status_code in (404, 422), path


class TestSigning:
    def test_refusals_are_403_problems_naming_the_rule(self, client, asked, people, make_key):
        requester = sign(client, people["rita"], asked["id"])
        assert requester.status_code == 403
        assert requester.headers["content-type"] == "application/problem+json"
        problem = requester.json()
        assert problem["type"] == "urn:ica:problem:approval-refused"
        assert problem["code"] == "requester_cannot_sign"
        key = client.post(
            f"{API}/approval/{asked['id']}/sign",
            json={"decision": "approve"},
            headers=bearer(make_key("azdev_approver_tech")),
        )
        assert key.json()["code"] == "signer_not_a_person"
        business = sign(client, people["bob"], asked["id"])
        assert business.json()["code"] == "technical_half_first"
        assert sign(client, people["carol"], asked["id"], half="technical").status_code == 200
        both = sign(client, people["carol"], asked["id"], half="business")
        assert both.json()["code"] == "same_person_both_halves"

    def test_a_person_with_both_roles_says_which_half_when_it_matters(
        self, client, asked, people, ctx
    ):
        response = sign(client, people["carol"], asked["id"], decision="reject")
        assert response.status_code == 422
        assert "which half" in response.json()["detail"]

    def test_withdrawal_by_the_pipeline(self, client, asked, devops, people):
        response = client.post(
            f"{API}/approval/{asked['id']}/withdraw", json={"reason": "superseded"}, headers=devops
        )
        assert response.status_code == 200
        assert response.json()["status"] == "withdrawn"
        assert response.json()["closed_reason"] == "superseded"
        late = sign(client, people["alice"], asked["id"])
        assert late.json()["code"] == "approval_decided"


class TestListAndDelegate:
    def test_list_filters_and_pages(self, client, asked, devops, make_key, people):
        auditor = bearer(make_key("azdev_auditor"))
        client.post(
            f"{API}/approval/{asked['id']}/withdraw", json={"reason": "again"}, headers=devops
        )
        second = client.post(f"{API}/approval", json={"run_key": asked["run_key"]}, headers=devops)
        assert second.status_code == 201
        page = client.get(f"{API}/approvals?limit=1", headers=auditor).json()
        assert [item["id"] for item in page["items"]] == [second.json()["id"]]
        rest = client.get(f"{API}/approvals?limit=1&cursor={page['next_cursor']}", headers=auditor)
        assert [item["id"] for item in rest.json()["items"]] == [asked["id"]]
        assert rest.json()["next_cursor"] is None
        withdrawn = client.get(f"{API}/approvals?status=withdrawn", headers=auditor).json()
        assert [item["id"] for item in withdrawn["items"]] == [asked["id"]]
        still_open = client.get(f"{API}/approvals?open=true&tenant=to", headers=auditor).json()
        assert [item["id"] for item in still_open["items"]] == [second.json()["id"]]
        bad = client.get(f"{API}/approvals?cursor=nonsense", headers=auditor)
        assert bad.status_code == 422

    def test_delegating_an_approver_role(self, client, asked, people, make_person, clock):
        dave = make_person("dave", [("azdev_auditor", "to")])
        until = (clock.now() + timedelta(hours=8)).isoformat()
        body = {
            "to_login": "dave",
            "role": "azdev_approver_tech",
            "tenant": "to",
            "until": until,
            "reason": "alice on leave",
        }
        response = client.post(
            f"{API}/approval/delegation", json=body, headers=people["alice"].headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["delegated_from"] is not None
        assert sign(client, dave, asked["id"]).json()["status"] == "technical_approved"
        refused = client.post(
            f"{API}/approval/delegation",
            json={**body, "to_login": "erin"},
            headers=people["bob"].headers,
        )
        assert refused.status_code == 403


def test_the_status_field_spells_the_state_machine():
    from typing import get_args

    from azdev_ica.api.routes.approvals import Status
    from azdev_ica.domain.approvals import ApprovalStatus

    assert set(get_args(Status)) == {status.value for status in ApprovalStatus}


class TestARunThatFinishesWithdrawsItsRequests:
    """Finishing a run (any status) withdraws its open requests: a finished run deploys
    nothing more, so nobody should be paged, escalated to or asked to sign for it."""

    @pytest.mark.parametrize(
        ("status", "recorded"),
        [("Canceled", "cancelled"), ("failed", "failed"), ("success", "success")],
    )
    def test_the_open_request_ends_withdrawn_and_the_sla_stops(
        self, client, ctx, clock, asked, devops, people, status, recorded
    ):
        from azdev_ica.services.approval_sla import run_sla

        assert sign(client, people["alice"], asked["id"]).json()["status"] == ("technical_approved")
        finish = client.post(
            f"{API}/run/finish", json={"run_key": asked["run_key"], "status": status},
            headers=devops,
        )  # fmt: skip
        assert finish.status_code == 200, finish.text
        assert finish.json()["status"] == recorded
        polled = client.get(f"{API}/approval/{asked['id']}", headers=devops).json()
        assert polled["status"] == "withdrawn"  # a polling pipeline reads a final status
        assert polled["closed_reason"] == f"run {asked['run_key']} finished: {recorded}"
        late = sign(client, people["bob"], asked["id"])
        assert (late.status_code, late.json()["code"]) == (403, "approval_decided")
        clock.advance(timedelta(days=3))  # past the warning, the SLA and the expiry
        assert (run_sla(ctx).warned, run_sla(ctx).escalated) == ([], [])
        with ctx.read() as session:
            trail = session.execute(
                select(AuditInbox.action, AuditInbox.subject_id).order_by(AuditInbox.id)
            ).all()
        assert ("approval.withdraw", str(asked["id"])) in trail  # audited
        report = replay_ledger(ctx.db)  # and the ledger alone rebuilds it
        assert report.ok, report.text()

    def test_a_new_attempt_asks_afresh_and_an_old_attempt_finishing_late_withdraws_nothing(
        self, client, asked, devops
    ):
        run_key = asked["run_key"]
        client.post(f"{API}/run/finish", json={"run_key": run_key, "status": "failed"},
                    headers=devops)  # fmt: skip
        rerun = {"provider": "ado", "project_id": run_key.split(":")[1], "run_id": "4711",
                 "pipeline_name": "farmer-registry-ci", "attempt": 2, "tenant": "to",
                 "stage": "production"}  # fmt: skip
        assert client.post(f"{API}/run/start", json=rerun, headers=devops).status_code == 200
        second = client.post(f"{API}/approval", json={"run_key": run_key}, headers=devops)
        assert second.status_code == 201  # the withdrawn request leaves the way open
        assert second.json()["status"] == "pending"
        stale = client.post(
            f"{API}/run/finish",
            json={"run_key": run_key, "status": "failed", "attempt": 1},
            headers=devops,
        )
        assert stale.status_code == 200  # attempt 1 finished already, the same status again
        polled = client.get(f"{API}/approval/{second.json()['id']}", headers=devops).json()
        assert polled["status"] == "pending"


class TestEveryoneWhoTriggeredTheRunIsItsRequester:
    """A re-run started by someone else: whoever triggered any attempt of the run is on the
    requesting side, and none of them signs its approval (segregation of duties)."""

    def rerun(self, client: Any, devops: dict[str, str], run_key: str, by: str) -> None:
        body = {"provider": "ado", "project_id": run_key.split(":")[1], "run_id": "4711",
                "pipeline_name": "farmer-registry-ci", "attempt": 2, "tenant": "to",
                "stage": "production", "requested_for": by}  # fmt: skip
        response = client.post(f"{API}/run/start", json=body, headers=devops)
        assert response.status_code == 200, response.text
        assert response.json()["attempt"] == 2

    def test_the_person_who_re_ran_it_does_not_sign(
        self, client, ctx, devops, run_key, people, make_person
    ):
        sam = make_person("sam", [(TECH, "to")], [("ado", SAM_ADO_ID)])
        self.rerun(client, devops, run_key, SAM_ADO_ID)  # rita ran it, sam re-ran it
        asked = client.post(f"{API}/approval", json={"run_key": run_key}, headers=devops)
        assert asked.status_code == 201, asked.text
        for person in (sam, people["rita"]):
            refused = sign(client, person, asked.json()["id"])
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "requester_cannot_sign"
        assert sign(client, people["alice"], asked.json()["id"]).status_code == 200
        report = replay_ledger(ctx.db)  # who triggered each attempt rebuilds from the ledger
        assert report.ok, report.text()
        assert report.rows["azdev_pipeline_run_requester"] == (2, 2)

    def test_a_re_run_after_the_request_makes_its_trigger_a_requester_too(
        self, client, devops, asked, people, make_person
    ):
        sam = make_person("sam", [(TECH, "to")], [("ado", SAM_ADO_ID)])
        self.rerun(client, devops, asked["run_key"], SAM_ADO_ID)
        refused = sign(client, sam, asked["id"])
        assert (refused.status_code, refused.json()["code"]) == (403, "requester_cannot_sign")
