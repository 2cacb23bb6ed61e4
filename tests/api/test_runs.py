"""The run ledger at the HTTP boundary, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.db.tables import AuditInbox, PipelineEvent, PipelineRun
from tests.conftest import bearer
from tests.support.cases import case

API = "/api/v1/azdev"
DIGEST = "sha256:" + "ab" * 32


def start_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "ado",
        "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
        "run_id": "4711",
        "pipeline_name": "farmer-registry-ci",
        "project": "FarmerRegistry",
        "branch": "refs/heads/main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "tenant": "to",
        "stage": "production",
        "requested_for": "a1b2c3d4-requester",
    }
    body.update(overrides)
    return body


RUN_KEY = "ado:6c3f0e1a-1111-4c2b-9d1e-0123456789ab:4711"


@pytest.fixture
def devops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


def audit_actions(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))


def count(ctx: Any, table: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


class TestStart:
    def test_creates_the_run_and_its_audit_record(self, client, devops, ctx):
        response = client.post(f"{API}/run/start", json=start_body(), headers=devops)
        assert response.status_code == 201
        run = response.json()
        assert run["run_key"] == RUN_KEY
        assert run["status"] == "running"
        assert run["attempt"] == 1
        assert run["tenant"] == "to"
        assert run["start_time"].startswith("2026-11-02T09:00:00")
        assert audit_actions(ctx)[-1] == "run.start"

    def test_a_repeated_start_answers_with_the_existing_run(self, client, devops, ctx):
        first = client.post(f"{API}/run/start", json=start_body(), headers=devops)
        second = client.post(
            f"{API}/run/start", json=start_body(pipeline_name="other"), headers=devops
        )
        assert (first.status_code, second.status_code) == (201, 200)
        assert second.json() == first.json()
        assert count(ctx, PipelineRun) == 1
        assert audit_actions(ctx).count("run.start") == 1

    def test_the_seed_path_is_an_alias_of_v1(self, client, devops):
        response = client.post("/api/azdev/run/start", json=start_body(), headers=devops)
        assert response.status_code == 201
        assert client.get(f"/api/azdev/run/{RUN_KEY}", headers=devops).status_code == 200

    def test_a_higher_attempt_reopens_the_run(self, client, devops, ctx):
        client.post(f"{API}/run/start", json=start_body(), headers=devops)
        client.post(
            f"{API}/run/finish", json={"run_key": RUN_KEY, "status": "Failed"}, headers=devops
        )
        reopened = client.post(f"{API}/run/start", json=start_body(attempt=2), headers=devops)
        assert reopened.status_code == 200
        assert reopened.json()["status"] == "running"
        assert reopened.json()["attempt"] == 2
        assert reopened.json()["end_time"] is None
        assert "run.reopen" in audit_actions(ctx)

    @pytest.mark.parametrize(
        ("field", "value", "problem"),
        [
            ("tenant", "fiji", "unknown-tenant"),
            ("stage", "qa", "unknown-stage"),
        ],
    )
    def test_unknown_tenant_or_stage_is_refused(self, client, devops, ctx, field, value, problem):
        response = client.post(
            f"{API}/run/start", json=start_body(**{field: value}), headers=devops
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"urn:ica:problem:{problem}"
        assert value in response.json()["detail"]
        assert count(ctx, PipelineRun) == 0

    def test_a_scoped_key_naming_an_unknown_tenant_is_told_it_is_unknown(
        self, client, make_key, ctx
    ):
        # A typo in the tenant is not a permission problem; a known tenant out of reach is.
        key = make_key("azdev_devops", ["ws"])
        unknown = client.post(
            f"{API}/run/start", json=start_body(tenant="fiji"), headers=bearer(key)
        )
        assert unknown.status_code == 422
        assert unknown.json()["type"] == "urn:ica:problem:unknown-tenant"
        assert "fiji" in unknown.json()["detail"]
        other = client.post(f"{API}/run/start", json=start_body(tenant="to"), headers=bearer(key))
        assert other.status_code == 403
        assert count(ctx, PipelineRun) == 0

    def test_a_github_run_has_a_github_run_key(self, client, devops):
        body = start_body(provider="gh", project_id="123456789", run_id="99", attempt=3)
        response = client.post(f"{API}/run/start", json=body, headers=devops)
        assert response.json()["run_key"] == "gh:123456789:99"
        assert response.json()["attempt"] == 3


INVALID_START_OVERRIDES = [
    {"colour": "red"},  # unknown field
    {"attempt": True},  # a boolean is not an integer
    {"attempt": "2"},  # nor is a string
    {"attempt": 0},
    {"run_id": 4711},  # ids are strings of digits
    {"run_id": "47a"},
    {"provider": "jenkins"},
    {"pipeline_name": ""},
    {"pipeline_name": "x" * 201},
    {"commit": "not-a-sha"},
    {"artifact_digest": "sha256:short"},
    {"start_time": "2026-11-02T09:00:00"},  # no offset
    {"tenant": "TO"},
]


INVALID_EVENTS = [
    {"phase": "test", "data": {"passed": "yes"}},
    {"phase": "test", "data": {"passed": True, "coverage_percent": 101}},
    {"phase": "test", "data": {"passed": True, "coverage_percent": True}},
    {"phase": "test", "data": {}},
    {"phase": "scan", "data": {"passed": True, "findings": {"critical": -1}}},
    {"phase": "build", "data": {"artifact_digest": "md5:abc"}},
    {"phase": "deploy", "data": {"status": "maybe"}},
    {"phase": "monitor", "data": {"trigger": "moon_phase"}},
    {"phase": "lunch"},
    {"phase": "build", "event": "build"},
    {"phase": "build", "run_id": RUN_KEY},
]


BAD_LISTING_PARAMS = [
    {"cursor": "not-a-cursor"},
    {"limit": 0},
    {"limit": 501},
    {"started_after": "yesterday"},
    {"started_after": "2026-11-02T09:00:00"},
    {"status": "exploded"},
]


class TestStrictInput:
    def test_invalid_start_bodies_get_a_validation_problem(self, client, devops, ctx):
        for overrides in INVALID_START_OVERRIDES:
            with case(overrides):
                response = client.post(
                    f"{API}/run/start", json=start_body(**overrides), headers=devops
                )
                assert response.status_code == 422, response.text
                problem = response.json()
                assert problem["type"] == "urn:ica:problem:validation"
                assert problem["status"] == 422
                assert problem["errors"]
                assert count(ctx, PipelineRun) == 0

    def test_an_integral_float_is_a_json_integer(self, client, devops):
        response = client.post(f"{API}/run/start", json=start_body(attempt=2.0), headers=devops)
        assert response.status_code == 201
        assert response.json()["attempt"] == 2

    def test_malformed_json_is_a_400_problem(self, client, devops):
        response = client.post(
            f"{API}/run/start",
            content=b'{"provider": ',
            headers={**devops, "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["type"] == "urn:ica:problem:malformed"

    def test_a_body_over_the_limit_is_a_413_problem(self, client, devops):
        body = start_body(branch="x" * 300_000)
        response = client.post(f"{API}/run/start", json=body, headers=devops)
        assert response.status_code == 413
        assert response.json()["type"] == "urn:ica:problem:payload-too-large"

    def test_unknown_routes_and_methods_are_problems(self, client, devops):
        missing = client.get(f"{API}/nothing-here", headers=devops)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        wrong_method = client.delete(f"{API}/run/start", headers=devops)
        assert wrong_method.status_code == 405
        assert wrong_method.json()["type"] == "urn:ica:problem:method-not-allowed"


class TestEvents:
    @pytest.fixture(autouse=True)
    def _run(self, client, devops):
        assert client.post(f"{API}/run/start", json=start_body(), headers=devops).status_code == 201

    def post(self, client, devops, **body: Any):
        return client.post(f"{API}/run/event", json={"run_key": RUN_KEY, **body}, headers=devops)

    def test_phase_events_are_appended_in_order(self, client, devops, ctx):
        self.post(client, devops, phase="build", data={"artifact_digest": DIGEST})
        self.post(client, devops, phase="test", data={"passed": True, "coverage_percent": 84.5})
        scan = {"passed": True, "findings": {"critical": 0, "high": 1}}
        self.post(client, devops, phase="scan", data=scan)
        run = client.get(f"{API}/run/{RUN_KEY}", headers=devops).json()
        assert [event["phase"] for event in run["events"]] == ["build", "test", "scan"]
        assert run["events"][1]["data"] == {"passed": True, "coverage_percent": 84.5}
        assert run["events"][2]["data"]["findings"] == {
            "critical": 0,
            "high": 1,
            "medium": 0,
            "low": 0,
        }
        assert run["artifact_digest"] == DIGEST
        assert audit_actions(ctx).count("run.event") == 3

    def test_a_repeated_event_id_is_answered_not_duplicated(self, client, devops, ctx):
        first = self.post(client, devops, phase="test", event_id="e-1", data={"passed": True})
        again = self.post(client, devops, phase="test", event_id="e-1", data={"passed": True})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["event"] == first.json()["event"]
        assert count(ctx, PipelineEvent) == 1

    def test_the_seed_rollback_shape_is_accepted(self, client, devops):
        response = client.post(
            f"{API}/run/event",
            json={"run_id": RUN_KEY, "event": "rollback_initiated"},
            headers=devops,
        )
        assert response.status_code == 201
        assert response.json()["event"]["phase"] == "rollback_initiated"

    def test_invalid_events_are_refused(self, client, devops, ctx):
        for body in INVALID_EVENTS:
            with case(body):
                response = self.post(client, devops, **body)
                assert response.status_code == 422, response.text
                assert count(ctx, PipelineEvent) == 0

    def test_an_event_for_an_unknown_run_is_a_404(self, client, devops):
        response = client.post(
            f"{API}/run/event", json={"run_key": "ado:p:1", "phase": "build"}, headers=devops
        )
        assert response.status_code == 404
        assert response.json()["type"] == "urn:ica:problem:not-found"

    def test_after_finish_only_post_deploy_phases_are_accepted(self, client, devops):
        client.post(
            f"{API}/run/finish", json={"run_key": RUN_KEY, "status": "success"}, headers=devops
        )
        refused = self.post(client, devops, phase="deploy", data={})
        assert refused.status_code == 409
        assert refused.json()["type"] == "urn:ica:problem:run-finished"
        for phase, data in [
            ("verify", {"passed": True}),
            ("rollback_initiated", {"reason": "5xx above 5%"}),
            ("rollback_completed", {"passed": True}),
            ("monitor", {"trigger": "error_rate", "value": 7.5, "threshold": 5}),
        ]:
            assert self.post(client, devops, phase=phase, data=data).status_code == 201

    def test_an_event_of_a_new_attempt_reopens_the_run(self, client, devops):
        client.post(
            f"{API}/run/finish", json={"run_key": RUN_KEY, "status": "failed"}, headers=devops
        )
        response = self.post(client, devops, phase="build", attempt=2, data={})
        assert response.status_code == 201
        assert response.json()["run"]["status"] == "running"
        assert response.json()["run"]["attempt"] == 2

    def test_an_event_of_an_attempt_never_started_is_a_conflict(self, client, devops):
        self.post(client, devops, phase="build", attempt=3, data={})
        response = self.post(client, devops, phase="build", attempt=2, data={})
        assert response.status_code == 409


class TestFinish:
    @pytest.fixture(autouse=True)
    def _run(self, client, devops):
        client.post(f"{API}/run/start", json=start_body(), headers=devops)

    def finish(self, client, devops, **body: Any):
        return client.post(f"{API}/run/finish", json={"run_key": RUN_KEY, **body}, headers=devops)

    @pytest.mark.parametrize(
        ("given", "status", "flagged"),
        [
            ("success", "success", False),
            ("failed", "failed", False),
            ("cancelled", "cancelled", False),
            ("Succeeded", "success", False),
            ("SucceededWithIssues", "success", True),
            ("Failed", "failed", False),
            ("Canceled", "cancelled", False),
            ("failure", "failed", False),
        ],
    )
    def test_statuses_of_every_provider_map_to_the_ledger(
        self, client, devops, clock, given, status, flagged
    ):
        clock.advance(timedelta(minutes=7))
        run = self.finish(client, devops, status=given).json()
        assert (run["status"], run["flagged"]) == (status, flagged)
        assert run["end_time"].startswith("2026-11-02T09:07:00")

    def test_an_unknown_status_is_refused(self, client, devops):
        assert self.finish(client, devops, status="partial").status_code == 422

    def test_the_same_finish_again_is_idempotent(self, client, devops, ctx):
        first = self.finish(client, devops, status="success")
        again = self.finish(client, devops, status="Succeeded")
        assert (first.status_code, again.status_code) == (200, 200)
        assert audit_actions(ctx).count("run.finish") == 1

    def test_another_status_for_a_finished_attempt_is_a_409(self, client, devops):
        self.finish(client, devops, status="success")
        response = self.finish(client, devops, status="failed")
        assert response.status_code == 409
        assert response.json()["recorded_status"] == "success"

    def test_a_rerun_sets_the_status_by_its_own_finish(self, client, devops):
        self.finish(client, devops, status="failed", attempt=1)
        client.post(f"{API}/run/start", json=start_body(attempt=2), headers=devops)
        run = self.finish(client, devops, status="success", attempt=2).json()
        assert (run["status"], run["attempt"]) == ("success", 2)
        detail = client.get(f"{API}/run/{RUN_KEY}", headers=devops).json()
        assert [(a["attempt"], a["status"]) for a in detail["attempts"]] == [
            (1, "failed"),
            (2, "success"),
        ]

    def test_a_late_finish_of_an_old_attempt_does_not_change_the_run(self, client, devops):
        client.post(f"{API}/run/start", json=start_body(attempt=2), headers=devops)
        run = self.finish(client, devops, status="cancelled", attempt=1).json()
        assert (run["status"], run["attempt"]) == ("running", 2)


class TestIdempotencyKey:
    def test_a_retry_with_the_same_key_gets_the_first_answer(self, client, devops, ctx):
        headers = {**devops, "Idempotency-Key": "retry-1"}
        event = {"run_key": RUN_KEY, "phase": "build", "data": {}}
        client.post(f"{API}/run/start", json=start_body(), headers=devops)
        first = client.post(f"{API}/run/event", json=event, headers=headers)
        again = client.post(f"{API}/run/event", json=event, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["event"]["event_id"] == first.json()["event"]["event_id"]
        assert count(ctx, PipelineEvent) == 1

    def test_the_same_key_for_another_request_is_refused(self, client, devops, ctx):
        headers = {**devops, "Idempotency-Key": "retry-2"}
        client.post(f"{API}/run/start", json=start_body(), headers=devops)
        client.post(
            f"{API}/run/event", json={"run_key": RUN_KEY, "phase": "build"}, headers=headers
        )
        response = client.post(
            f"{API}/run/event",
            json={"run_key": RUN_KEY, "phase": "test", "data": {"passed": False}},
            headers=headers,
        )
        assert response.status_code == 422
        assert response.json()["type"] == "urn:ica:problem:idempotency-key-reused"
        assert count(ctx, PipelineEvent) == 1

    def test_a_malformed_key_is_refused(self, client, devops):
        headers = {**devops, "Idempotency-Key": "has space"}
        response = client.post(f"{API}/run/start", json=start_body(), headers=headers)
        assert response.status_code == 422


class TestListing:
    @pytest.fixture(autouse=True)
    def _runs(self, client, devops, clock):
        for number in range(7):
            clock.advance(timedelta(minutes=1))
            tenant = "to" if number % 2 == 0 else "ws"
            body = start_body(run_id=str(100 + number), tenant=tenant)
            assert client.post(f"{API}/run/start", json=body, headers=devops).status_code == 201
        client.post(
            f"{API}/run/finish",
            json={"run_key": RUN_KEY.replace("4711", "100"), "status": "failed"},
            headers=devops,
        )

    def test_pages_follow_the_cursor_newest_first(self, client, devops):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"{API}/runs", params=params, headers=devops).json()
            seen += [item["run_id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [str(100 + n) for n in reversed(range(7))]

    def test_filters(self, client, devops):
        def run_ids(**params: Any) -> list[str]:
            page = client.get(f"{API}/runs", params=params, headers=devops).json()
            return [item["run_id"] for item in page["items"]]

        assert run_ids(tenant="ws") == ["105", "103", "101"]
        assert run_ids(status="failed") == ["100"]
        assert run_ids(started_after="2026-11-02T09:06:00+00:00") == ["106", "105"]
        assert run_ids(started_before="2026-11-02T20:02:30+11:00") == ["101", "100"]

    def test_bad_parameters_are_problems(self, client, devops):
        for params in BAD_LISTING_PARAMS:
            with case(params):
                response = client.get(f"{API}/runs", params=params, headers=devops)
                assert response.status_code == 422
                assert response.headers["content-type"] == "application/problem+json"


class TestAuthentication:
    def test_no_credentials_is_a_401_with_a_challenge(self, client):
        response = client.post(f"{API}/run/start", json=start_body())
        assert response.status_code == 401
        assert "Bearer" in response.headers["www-authenticate"]
        assert response.json()["type"] == "urn:ica:problem:unauthenticated"

    @pytest.mark.parametrize(
        "authorization",
        [
            "Bearer nonsense",
            "Bearer ica_aaaaaaaaaa_" + "A" * 43,
            "Basic !!!",
            "Token abc",
            "Bearer",
        ],
    )
    def test_bad_credentials_are_a_401_that_says_nothing_more(self, client, authorization):
        response = client.get(f"{API}/runs", headers={"Authorization": authorization})
        assert response.status_code == 401
        assert response.json()["detail"] in {
            "the credentials are not valid",
            "send an API key as a Bearer token or as the Basic password",
        }

    def test_a_key_works_as_the_basic_password(self, client, make_key):
        key = make_key("azdev_devops")
        basic = base64.b64encode(f"azure-devops:{key}".encode()).decode()
        response = client.post(
            f"{API}/run/start", json=start_body(), headers={"Authorization": f"Basic {basic}"}
        )
        assert response.status_code == 201

    def test_a_tampered_key_is_refused(self, client, make_key):
        key = make_key("azdev_devops")
        tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert client.get(f"{API}/runs", headers=bearer(tampered)).status_code == 401

    def test_a_revoked_key_is_refused(self, client, make_key, ctx):
        from azdev_ica.auth.principal import Actor
        from azdev_ica.services.apikeys import revoke_api_key

        key = make_key("azdev_devops")
        assert client.get(f"{API}/runs", headers=bearer(key)).status_code == 200
        revoke_api_key(ctx, actor=Actor(kind="operator", id="t"), prefix=key[4:14], reason="left")
        assert client.get(f"{API}/runs", headers=bearer(key)).status_code == 401
        assert "apikey.revoke" in audit_actions(ctx)

    def test_an_expired_key_is_refused(self, client, make_key, clock):
        key = make_key("azdev_devops", expires_at=clock.now() + timedelta(hours=1))
        assert client.get(f"{API}/runs", headers=bearer(key)).status_code == 200
        clock.advance(timedelta(hours=1))
        assert client.get(f"{API}/runs", headers=bearer(key)).status_code == 401

    def test_last_use_is_recorded(self, client, make_key, ctx):
        from azdev_ica.db.tables import ApiKey

        key = make_key("azdev_auditor")
        client.get(f"{API}/runs", headers=bearer(key))
        with ctx.read() as session:
            used = session.scalars(select(ApiKey.last_used_at).where(ApiKey.prefix == key[4:14]))
            assert used.one() is not None

    def test_a_reader_cannot_write(self, client, make_key):
        response = client.post(
            f"{API}/run/start", json=start_body(), headers=bearer(make_key("azdev_auditor"))
        )
        assert response.status_code == 403
        assert response.json()["type"] == "urn:ica:problem:forbidden"


class TestTenantScope:
    def test_a_scoped_key_writes_only_its_tenants(self, client, make_key, ctx):
        tonga = bearer(make_key("azdev_devops", tenants=["to"]))
        assert client.post(f"{API}/run/start", json=start_body(), headers=tonga).status_code == 201
        samoa_run = start_body(run_id="2", tenant="ws")
        refused = client.post(f"{API}/run/start", json=samoa_run, headers=tonga)
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
        no_tenant = client.post(
            f"{API}/run/start", json=start_body(run_id="3", tenant=None), headers=tonga
        )
        assert no_tenant.status_code == 403

    def test_a_scoped_key_sees_only_its_tenants(self, client, make_key, devops):
        client.post(f"{API}/run/start", json=start_body(), headers=devops)
        samoa_key = RUN_KEY.replace("4711", "2")
        client.post(f"{API}/run/start", json=start_body(run_id="2", tenant="ws"), headers=devops)
        samoa = bearer(make_key("azdev_auditor", tenants=["ws"]))
        listed = client.get(f"{API}/runs", headers=samoa).json()["items"]
        assert [item["tenant"] for item in listed] == ["ws"]
        assert client.get(f"{API}/run/{RUN_KEY}", headers=samoa).status_code == 404
        assert client.get(f"{API}/run/{samoa_key}", headers=samoa).status_code == 200
        event = {"run_key": RUN_KEY, "phase": "build"}
        samoa_writer = bearer(make_key("azdev_devops", tenants=["ws"]))
        assert client.post(f"{API}/run/event", json=event, headers=samoa_writer).status_code == 404
