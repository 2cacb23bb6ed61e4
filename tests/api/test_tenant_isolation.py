"""Tenant isolation at the HTTP boundary, on SQLite and PostgreSQL (issue 13): a pipeline key
of Samoa (`ws`) holding its own run tries to write into Tonga (`to`) through event targets and
run keys, and to read Tonga's figures. Each test here failed before the fix it guards."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select

from azdev_ica.db.tables import (
    AuditInbox,
    OutboxMessage,
    PipelineEvent,
    PipelineRun,
    RunAttempt,
    UnauthorisedChange,
)
from tests.conftest import bearer

API = "/api/v1/azdev"
PROJECT = "6c3f0e1a-1111-4c2b-9d1e-0123456789ab"
DIGEST = "sha256:" + "ab" * 32


def start_body(run_id: str, tenant: str, **overrides: Any) -> dict[str, Any]:
    return {
        "provider": "ado",
        "project_id": PROJECT,
        "run_id": run_id,
        "pipeline_name": f"registry-{tenant}",
        "branch": f"refs/heads/{tenant}-secret-branch",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "tenant": tenant,
        "stage": "production",
        "requested_for": f"requester-of-{tenant}",
        **overrides,
    }


@pytest.fixture
def samoa(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops", ["ws"]))


@pytest.fixture
def tonga(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops", ["to"]))


@pytest.fixture
def samoa_run(client: Any, samoa: dict[str, str]) -> str:
    started = client.post(f"{API}/run/start", json=start_body("100", "ws"), headers=samoa)
    assert started.status_code == 201, started.text
    return str(started.json()["run_key"])


def audit_rows(ctx: Any, tenant: str | None = None) -> list[tuple[str, str | None]]:
    with ctx.read() as session:
        query = select(AuditInbox.action, AuditInbox.tenant).order_by(AuditInbox.id)
        if tenant is not None:
            query = query.where(AuditInbox.tenant == tenant)
        return [(action, row_tenant) for action, row_tenant in session.execute(query)]


def count(ctx: Any, table: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


class TestEventTargets:
    """A deploy, verify, monitor or rollback event passes the gate's target check."""

    @pytest.mark.parametrize("target", [{"tenant": "to"}, {"tenant": "to", "stage": "production"}])
    def test_a_deploy_naming_another_tenant_is_refused_audited_and_changes_nothing(
        self, client, ctx, samoa, samoa_run, make_key, target
    ):
        events_before = count(ctx, PipelineEvent)
        body = {
            "run_key": samoa_run,
            "phase": "deploy",
            "data": {**target, "status": "succeeded"},
        }
        response = client.post(f"{API}/run/event", json=body, headers=samoa)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:ica:problem:target-out-of-scope"
        # Nothing recorded: no event, no unauthorised-deploy finding, no alert for Tonga.
        assert count(ctx, PipelineEvent) == events_before
        assert count(ctx, UnauthorisedChange) == 0
        with ctx.read() as session:
            assert (
                session.scalars(select(OutboxMessage).where(OutboxMessage.tenant == "to")).all()
                == []
            )
        # The refusal is an audit entry of the caller's own run, never one of Tonga's.
        assert audit_rows(ctx, "to") == []
        assert audit_rows(ctx)[-1] == ("run.event_refused", "ws")
        # Tonga sees nothing deployed and counts no deployment.
        auditor = bearer(make_key("azdev_auditor"))
        assert client.get(f"{API}/inventory?tenant=to", headers=auditor).json() == []
        metrics = client.get(
            f"{API}/metrics/delivery",
            params={"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "tenant": "to"},
            headers=auditor,
        ).json()
        assert metrics["deployment_frequency_per_day"] == 0

    @pytest.mark.parametrize(
        ("phase", "data"),
        [
            ("verify", {"passed": True}),
            ("monitor", {"trigger": "error_rate"}),
            ("rollback_initiated", {}),
            ("rollback_completed", {"passed": True}),
        ],
    )
    def test_verify_monitor_and_rollback_act_on_the_runs_own_target(
        self, client, ctx, samoa, samoa_run, phase, data
    ):
        # Their target is the run's: naming another one is not even valid input.
        body = {"run_key": samoa_run, "phase": phase, "data": {**data, "tenant": "to"}}
        response = client.post(f"{API}/run/event", json=body, headers=samoa)
        assert response.status_code == 422
        assert count(ctx, PipelineEvent) == 0
        body["data"] = data
        assert client.post(f"{API}/run/event", json=body, headers=samoa).status_code == 201

    def test_an_unscoped_key_cannot_move_a_tenants_run_into_another_tenant(
        self, client, ctx, make_key, samoa_run
    ):
        # Even a key reaching every tenant: a run of Samoa deploys to Samoa.
        admin = bearer(make_key("admin"))
        body = {"run_key": samoa_run, "phase": "deploy", "data": {"tenant": "to"}}
        response = client.post(f"{API}/run/event", json=body, headers=admin)
        assert response.status_code == 403
        assert response.json()["type"] == "urn:ica:problem:target-out-of-scope"
        assert count(ctx, PipelineEvent) == 0

    def test_a_run_may_deploy_several_stages_of_its_own_tenant(self, client, ctx, samoa, samoa_run):
        for stage in ("development", "test", "staging"):
            body = {
                "run_key": samoa_run,
                "phase": "deploy",
                "data": {"stage": stage, "tenant": "ws", "status": "succeeded"},
            }
            assert client.post(f"{API}/run/event", json=body, headers=samoa).status_code == 201
        with ctx.read() as session:
            stages = session.scalars(select(PipelineEvent.target_stage)).all()
        assert sorted(stages) == ["development", "staging", "test"]

    def test_a_stage_unknown_to_the_policy_is_refused_like_at_the_gate(
        self, client, ctx, samoa, samoa_run
    ):
        body = {"run_key": samoa_run, "phase": "deploy", "data": {"stage": "moon"}}
        response = client.post(f"{API}/run/event", json=body, headers=samoa)
        assert response.status_code == 422
        assert response.json()["type"] == "urn:ica:problem:unknown-stage"
        assert count(ctx, PipelineEvent) == 0
        assert audit_rows(ctx)[-1] == ("run.event_refused", "ws")

    def test_a_target_that_is_not_text_is_refused(self, client, ctx, samoa, samoa_run):
        body = {"run_key": samoa_run, "phase": "deploy", "data": {"tenant": ["to"]}}
        response = client.post(f"{API}/run/event", json=body, headers=samoa)
        assert response.status_code == 422
        assert count(ctx, PipelineEvent) == 0

    def test_a_run_without_a_tenant_deploys_only_where_the_caller_reaches(
        self, client, ctx, make_key
    ):
        # A run with no tenant of its own (started by an all-tenants key) is reached only by
        # all-tenants callers, so its targets are checked against the caller's scope.
        admin = bearer(make_key("admin"))
        started = client.post(
            f"{API}/run/start",
            json={**start_body("7", "ws"), "tenant": None, "stage": None},
            headers=admin,
        )
        assert started.status_code == 201
        run_key = started.json()["run_key"]
        samoa = bearer(make_key("azdev_devops", ["ws"]))
        body = {"run_key": run_key, "phase": "deploy", "data": {"tenant": "to"}}
        # Samoa does not reach a run without a tenant at all: absent.
        assert client.post(f"{API}/run/event", json=body, headers=samoa).status_code == 404
        assert client.post(f"{API}/run/event", json=body, headers=admin).status_code == 201


class TestRunKeys:
    """`run/start` with another tenant's run key: 409, nothing of that run, nothing reopened."""

    @pytest.fixture
    def tonga_run(self, client: Any, tonga: dict[str, str]) -> str:
        started = client.post(f"{API}/run/start", json=start_body("4711", "to"), headers=tonga)
        assert started.status_code == 201
        run_key = str(started.json()["run_key"])
        finished = client.post(
            f"{API}/run/finish", json={"run_key": run_key, "status": "Succeeded"}, headers=tonga
        )
        assert finished.status_code == 200
        return run_key

    @pytest.mark.parametrize("attempt", [1, 2])
    def test_another_tenants_run_key_is_taken(self, client, ctx, samoa, tonga_run, attempt):
        before = audit_rows(ctx)
        response = client.post(
            f"{API}/run/start", json=start_body("4711", "ws", attempt=attempt), headers=samoa
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:ica:problem:run-key-taken"
        # Nothing of Tonga's run in the answer.
        text = json.dumps(problem)
        for secret in ("registry-to", "to-secret-branch", "requester-of-to", "0123456789abcdef"):
            assert secret not in text
        # Nothing reopened: Tonga's run is finished, on its first attempt.
        with ctx.read() as session:
            run = session.scalars(select(PipelineRun)).one()
            assert (run.status, run.attempt, run.tenant) == ("success", 1, "to")
            assert session.scalar(select(func.count()).select_from(RunAttempt)) == 1
        # The attempt is audited, as the caller's, never as Tonga's.
        assert audit_rows(ctx) == [*before, ("run.start_refused", "ws")]

    def test_the_owner_still_reopens_its_run(self, client, ctx, tonga, tonga_run):
        response = client.post(
            f"{API}/run/start", json=start_body("4711", "to", attempt=2), headers=tonga
        )
        assert response.status_code == 200
        assert (response.json()["attempt"], response.json()["status"]) == (2, "running")

    def test_a_free_run_key_is_still_started(self, client, ctx, samoa, tonga_run):
        # Control: the refusal is about the stored run, so the same start for a free key is
        # accepted (the 409 above is not a blanket refusal of Samoa).
        response = client.post(f"{API}/run/start", json=start_body("4712", "ws"), headers=samoa)
        assert response.status_code == 201


class TestFiguresOfAnotherTenant:
    """Another tenant's figures are a 403, as `report/monthly` answers, never zeros."""

    PERIOD: ClassVar[dict[str, str]] = {
        "from": "2026-11-01T00:00:00Z",
        "to": "2026-12-01T00:00:00Z",
    }

    def test_delivery_metrics(self, client, samoa):
        response = client.get(
            f"{API}/metrics/delivery", params={**self.PERIOD, "tenant": "to"}, headers=samoa
        )
        assert response.status_code == 403
        assert response.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
        own = client.get(
            f"{API}/metrics/delivery", params={**self.PERIOD, "tenant": "ws"}, headers=samoa
        )
        assert own.status_code == 200

    def test_restore_figures(self, client, make_key):
        reader = bearer(make_key("azdev_auditor", ["ws"]))
        response = client.get(f"{API}/incidents/restore?tenant=to", headers=reader)
        assert response.status_code == 403
        assert response.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
        assert client.get(f"{API}/incidents/restore?tenant=ws", headers=reader).status_code == 200

    def test_the_monthly_report_already_answered_so(self, client, make_key):
        reader = bearer(make_key("azdev_auditor", ["ws"]))
        response = client.get(f"{API}/report/monthly?month=2026-11&tenant=to", headers=reader)
        assert response.status_code == 403


def test_a_tenant_admin_lists_only_people_holding_grants_in_its_tenants(client, make_person):
    make_person("sione@example.to", [("azdev_approver_tech", "to")], email="sione@example.to")
    make_person("malia@example.ws", [("azdev_approver_tech", "ws")], email="malia@example.ws")
    make_person("aroha@example.org", [("azdev_auditor", None)], email="aroha@example.org")
    admin_ws = make_person("admin@example.ws", [("tenant_admin", "ws")])
    response = client.get(f"{API}/people", headers=admin_ws.headers)
    assert response.status_code == 200
    logins = {person["login"] for person in response.json()}
    assert logins == {"malia@example.ws", "admin@example.ws"}
    assert "sione@example.to" not in response.text
    assert "aroha@example.org" not in response.text


class TestStageScope:
    """Grants and keys limited to some stages (seed 002: environments isolated)."""

    @pytest.fixture
    def tonga_dev_key(self, ctx: Any) -> dict[str, str]:
        from azdev_ica.auth.principal import Actor
        from azdev_ica.auth.roles import Role
        from azdev_ica.services.apikeys import create_api_key

        created = create_api_key(
            ctx,
            actor=Actor(kind="operator", id="test"),
            name="tonga-dev",
            role=Role.DEVOPS,
            tenants=["to"],
            expires_at=None,
            stages=["development", "test"],
        )
        return bearer(created.secret)

    def test_a_development_key_writes_no_production_run(self, client, ctx, make_key, tonga_dev_key):
        body = start_body("1", "to")
        refused = client.post(f"{API}/run/start", json=body, headers=tonga_dev_key)
        assert refused.status_code == 403
        admin = bearer(make_key("admin"))
        production = client.post(f"{API}/run/start", json=body, headers=admin).json()["run_key"]
        # Tonga's production run is out of its reach: absent.
        for path, extra in (
            ("/run/event", {"phase": "deploy", "data": {}}),
            ("/run/finish", {"status": "failed"}),
            ("/approval", {}),
            ("/override", {"reason": "walk"}),
        ):
            response = client.post(
                f"{API}{path}", json={"run_key": production, **extra}, headers=tonga_dev_key
            )
            assert response.status_code == 404, (path, response.text)
        gate = {"run_key": production, "tenant": "to", "stage": "production"}
        assert (
            client.post(f"{API}/gate/evaluate", json=gate, headers=tonga_dev_key).status_code == 403
        )
        with ctx.read() as session:
            run = session.scalars(select(PipelineRun)).one()
            assert (run.status, run.attempt) == ("running", 1)
            assert session.scalars(select(PipelineEvent)).all() == []
        own = client.post(
            f"{API}/run/start", json={**body, "run_id": "2", "stage": "test"}, headers=tonga_dev_key
        )
        assert own.status_code == 201

    def test_an_approver_for_lower_stages_does_not_sign_production(
        self, client, make_key, make_person
    ):
        admin = bearer(make_key("admin"))
        tech = make_person("tevita@example.to")
        granted = client.post(
            f"{API}/people/{tech.login}/grants",
            json={"role": "azdev_approver_tech", "tenant": "to", "stages": ["test", "staging"]},
            headers=admin,
        )
        assert granted.status_code == 200, granted.text
        assert granted.json()["stages"] == ["staging", "test"]
        me = client.get(f"{API}/me", headers=tech.headers).json()
        assert me["grants"] == [
            {
                "role": "azdev_approver_tech",
                "tenant": "to",
                "stages": ["staging", "test"],
                "until": None,
            }
        ]
        for run_id, stage, status in (("1", "production", 403), ("2", "staging", 200)):
            body = start_body(run_id, "to", stage=stage)
            run_key = client.post(f"{API}/run/start", json=body, headers=admin).json()["run_key"]
            asked = client.post(f"{API}/approval", json={"run_key": run_key}, headers=admin)
            assert asked.status_code == 201, asked.text
            signed = client.post(
                f"{API}/approval/{asked.json()['id']}/sign",
                json={"decision": "approve"},
                headers=tech.headers,
            )
            assert signed.status_code == status, (stage, signed.text)
            if status == 403:
                assert signed.json()["type"] == "urn:ica:problem:approval-refused"

    def test_an_unknown_stage_is_refused_in_a_grant(self, client, make_key, make_person):
        tech = make_person("tevita@example.to")
        response = client.post(
            f"{API}/people/{tech.login}/grants",
            json={"role": "azdev_approver_tech", "tenant": "to", "stages": ["moon"]},
            headers=bearer(make_key("admin")),
        )
        assert response.status_code == 422
