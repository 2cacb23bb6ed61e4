"""A simulated fleet (seed 002), through HTTP, on SQLite and PostgreSQL: the example policy;
five tenants; a release promoted through every stage of every tenant with every sign-off (CI,
QA, UAT by each country's national counterpart, data migration, dual approval, and the
major-release approver for a major bump); one refused promotion per gate; a freeze; a
rollback after a monitoring trigger; an incident. The inventory and the delivery metrics then
match what the simulation did, exactly."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import bearer
from tests.promotion.conftest import API, COMMIT, PROJECT, use_promotion_policy

TENANTS = ("ck", "ws", "sb", "to", "vu")
CHAIN = ("development", "test", "staging", "production", "dr")
APPROVED = frozenset({"production", "dr"})  # the stages marked production
V1, V2, V3 = ("sha256:" + c * 64 for c in "abc")
FREEZE = """windows:
  - stage: production
    freezes:
      - {reason: census week, start: "2026-11-20T00:00", hours: 72}
"""
PERIOD = "from=2026-11-01T00:00:00Z&to=2027-01-01T00:00:00Z"
PERIOD_DAYS = 61


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Fleet:
    """Drives pipelines over HTTP and counts what it did, to compare with ICA's numbers."""

    def __init__(self, client: Any, clock: Any, key: str, people: dict[str, Any]) -> None:
        self.client, self.clock, self.people = client, clock, people
        self.headers = bearer(key)
        self.run_ids = itertools.count(1)
        self.runs: Counter[str] = Counter()  # success / failed
        self.production: list[dict[str, Any]] = []  # production deploy events
        self.approvals = 0
        self.refusals: Counter[str] = Counter()

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        self.clock.advance(timedelta(minutes=5))
        response = self.client.post(f"{API}{path}", json=body, headers=headers or self.headers)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def start(self, tenant: str, stage: str, digest: str, *, tests_passed: bool = True) -> str:
        body = {
            "provider": "ado",
            "project_id": PROJECT,
            "run_id": str(next(self.run_ids)),
            "pipeline_name": "farmer-registry-cd",
            "commit": COMMIT,
            "tenant": tenant,
            "stage": stage,
            "artifact_digest": digest,
        }
        run_key = str(self.post("/run/start", body)["run_key"])
        self.event(run_key, "build", {"artifact_digest": digest})
        self.event(run_key, "test", {"passed": tests_passed, "coverage_percent": 88.0})
        self.event(run_key, "scan", {"passed": True, "findings": {"critical": 0, "high": 0}})
        return run_key

    def event(self, run_key: str, phase: str, data: dict[str, Any]) -> None:
        self.post("/run/event", {"run_key": run_key, "phase": phase, "data": data})

    def approve(self, run_key: str) -> None:
        approval_id = self.post("/approval", {"run_key": run_key})["id"]
        for half in ("tech", "biz"):
            signed = self.post(
                f"/approval/{approval_id}/sign", {"decision": "approve"}, self.people[half].headers
            )
            assert signed["status"] in ("technical_approved", "approved")
        self.approvals += 1

    def sign(self, who: str, tenant: str, stage: str, digest: str, kind: str) -> None:
        body = {"tenant": tenant, "stage": stage, "artifact_digest": digest, "kind": kind}
        self.post("/signoff", body, self.people[who].headers)

    def gate(self, run_key: str, **extra: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.post("/gate/evaluate", {"run_key": run_key, **extra})
        if answer["status"] == "deny":
            self.refusals.update(reason["code"] for reason in answer["reasons"])
        return answer

    def deploy(self, run_key: str, tenant: str, stage: str, digest: str, version: str) -> None:
        data = {"status": "succeeded", "artifact_digest": digest, "version": version}
        self.event(run_key, "deploy", data)
        if stage == "production":
            self.production.append(
                {"tenant": tenant, "run_key": run_key, "good": True, "failed_change": False}
            )

    def finish(self, run_key: str, status: str) -> None:
        self.post("/run/finish", {"run_key": run_key, "status": status})
        self.runs["success" if status == "Succeeded" else "failed"] += 1

    def attempt(
        self,
        tenant: str,
        stage: str,
        digest: str,
        version: str,
        *,
        approve: bool | None = None,
        tests_passed: bool = True,
        **gate: Any,
    ) -> dict[str, Any]:
        """One pipeline run for a target: approved where the stage needs it (unless told),
        deployed and finished Succeeded on allow, finished Failed on a refusal."""
        run_key = self.start(tenant, stage, digest, tests_passed=tests_passed)
        if approve if approve is not None else stage in APPROVED:
            self.approve(run_key)
        answer = self.gate(run_key, **gate)
        if answer["status"] == "allow":
            self.deploy(run_key, tenant, stage, digest, version)
            self.finish(run_key, "Succeeded")
        else:
            self.finish(run_key, "Failed")
        answer["run_key"] = run_key
        return answer

    def promote(self, tenant: str, digest: str, version: str, stages: tuple[str, ...]) -> None:
        """Every sign-off, then every stage, each allowed."""
        for stage in stages:
            if stage == "staging":
                self.sign("qa", tenant, stage, digest, "qa")
            if stage == "production":
                self.sign(f"uat-{tenant}", tenant, stage, digest, "uat")
                self.sign("data", tenant, stage, digest, "data")
            answer = self.attempt(tenant, stage, digest, version)
            assert answer["status"] == "allow", (tenant, stage, answer)


@pytest.fixture
def fleet(ctx: Any, client: Any, clock: Any, make_key: Any, make_person: Any) -> Fleet:
    use_promotion_policy(ctx, FREEZE, rollback="{production: true}")
    people = {
        "tech": make_person("tech", [("azdev_approver_tech", None)]),
        "biz": make_person("biz", [("azdev_approver_biz", None)]),
        "qa": make_person("qa", [("azdev_signoff_qa", None)]),
        "data": make_person("data", [("azdev_signoff_data", None)]),
        "fao": make_person("fao", [("azdev_approver_major", None)]),
    }
    for tenant in TENANTS:
        people[f"uat-{tenant}"] = make_person(f"uat-{tenant}", [("azdev_signoff_uat", tenant)])
    return Fleet(client, clock, make_key("azdev_devops"), people)


def test_a_simulated_fleet(fleet, client, clock, make_key):
    # 1. Release 1.0.0 through every stage of all five tenants.
    for tenant in TENANTS:
        fleet.promote(tenant, V1, "1.0.0", CHAIN)

    # 2. One refused promotion per gate.
    skipped = fleet.attempt("ws", "test", V2, "1.1.0")  # Dev -> Test not passed
    assert skipped["status"] == "deny"
    assert [r["code"] for r in skipped["reasons"]] == ["previous_stage_not_passed"]
    assert fleet.attempt("ws", "development", V2, "1.1.0")["status"] == "allow"
    red = fleet.attempt("ws", "test", V2, "1.1.0", tests_passed=False)  # no green CI
    assert {r["code"] for r in red["reasons"]} == {"tests_failed", "signoff_missing"}
    assert fleet.attempt("ws", "test", V2, "1.1.0")["status"] == "allow"
    no_qa = fleet.attempt("ws", "staging", V2, "1.1.0")  # Test -> Staging without QA
    assert [r["code"] for r in no_qa["reasons"]] == ["signoff_missing"]
    fleet.sign("qa", "ws", "staging", V2, "qa")
    assert fleet.attempt("ws", "staging", V2, "1.1.0")["status"] == "allow"
    fleet.sign("uat-ws", "ws", "production", V2, "uat")
    no_data = fleet.attempt("ws", "production", V2, "1.1.0", approve=False)
    assert sorted(r["code"] for r in no_data["reasons"]) == ["approval_missing", "signoff_missing"]

    # 3. A major release in Tonga needs the major-release approver (FAO).
    fleet.promote("to", V3, "2.0.0", CHAIN[:3])
    fleet.sign("uat-to", "to", "production", V3, "uat")
    fleet.sign("data", "to", "production", V3, "data")
    major = fleet.start("to", "production", V3)
    fleet.approve(major)
    refused = fleet.gate(major)
    assert [r["code"] for r in refused["reasons"]] == ["major_release_approval_missing"]
    fleet.sign("fao", "to", "production", V3, "major")
    assert fleet.gate(major)["status"] == "allow"
    fleet.deploy(major, "to", "production", V3, "2.0.0")
    fleet.finish(major, "Succeeded")

    # 4. Vanuatu: 1.1.0 reaches production, monitoring sees 5xx over 5 %, the deployment is
    # failed, an incident opens, a rollback to 1.0.0 passes the gate without a fresh approval.
    fleet.promote("vu", V2, "1.1.0", CHAIN[:4])
    bad = fleet.production[-1]
    bad.update(good=False, failed_change=True)
    fleet.event(bad["run_key"], "monitor", {"trigger": "error_rate", "value": 9.1, "threshold": 5})
    detected = clock.now()
    incident = fleet.post(
        "/incident",
        {
            "title": "5xx over 5% after 1.1.0",
            "severity": "critical",
            "run_key": bad["run_key"],
            "detected_at": iso(detected),
        },
    )
    fleet.event(bad["run_key"], "rollback_initiated", {"reason": "5xx", "to_artifact_digest": V1})
    wrong = fleet.attempt("vu", "production", V3, "2.0.0", approve=False, rollback=True)
    assert "rollback_not_last_good" in [r["code"] for r in wrong["reasons"]]
    back = fleet.attempt("vu", "production", V1, "1.0.0", approve=False, rollback=True)
    assert [r["code"] for r in back["reasons"]] == ["rollback"]
    fleet.event(bad["run_key"], "rollback_completed", {"passed": True})
    fleet.post(f"/incident/{incident['id']}/status", {"status": "mitigated"})
    fleet.post(f"/incident/{incident['id']}/status", {"status": "resolved"})
    restored = clock.now() - detected
    fleet.post(f"/incident/{incident['id']}/rca", {"rca": "a migration locked the table"})
    fleet.post(f"/incident/{incident['id']}/status", {"status": "closed"})

    # 5. A freeze: census week, production of every tenant.
    assert clock.now() < datetime(2026, 11, 19, tzinfo=UTC)
    clock.set(datetime(2026, 11, 21, 0, 0, tzinfo=UTC))
    frozen = fleet.attempt("ck", "production", V2, "1.1.0", approve=True)
    assert "frozen" in [r["code"] for r in frozen["reasons"]]

    # Every refusal code of the promotion gates was seen.
    assert set(fleet.refusals) >= {
        "previous_stage_not_passed",
        "signoff_missing",
        "tests_failed",
        "approval_missing",
        "major_release_approval_missing",
        "rollback_not_last_good",
        "frozen",
    }

    # The inventory says what runs where.
    reader = bearer(make_key("azdev_auditor"))
    items = client.get(f"{API}/inventory", headers=reader).json()
    running = {(i["tenant"], i["stage"]): (i["artifact_digest"], i["version"]) for i in items}
    expected = {(tenant, stage): (V1, "1.0.0") for tenant in TENANTS for stage in CHAIN}
    expected.update({("ws", "development"): (V2, "1.1.0"), ("ws", "test"): (V2, "1.1.0")})
    expected[("ws", "staging")] = (V2, "1.1.0")
    expected.update({("to", stage): (V3, "2.0.0") for stage in CHAIN[:4]})
    expected.update({("vu", stage): (V2, "1.1.0") for stage in CHAIN[:3]})
    assert running == expected  # Vanuatu's production is 1.0.0 again: the rollback's
    assert {i["run_key"] for i in items if (i["tenant"], i["stage"]) == ("vu", "production")} == {
        back["run_key"]
    }
    production = [i for i in items if i["stage"] == "production" and i["tenant"] != "vu"]
    assert all(len(i["approved_by"]) == 2 for i in production)

    # The metrics say what happened, exactly.
    metrics = client.get(f"{API}/metrics/delivery?{PERIOD}", headers=reader).json()
    finished = fleet.runs["success"] + fleet.runs["failed"]
    assert metrics["pipeline_success_rate"] == pytest.approx(fleet.runs["success"] / finished)
    good = sum(d["good"] for d in fleet.production)
    assert good == 5 + 1 + 1  # 1.0.0 everywhere, Tonga's 2.0.0, Vanuatu's rollback
    assert metrics["deployment_frequency_per_day"] == pytest.approx(good / PERIOD_DAYS)
    failed = sum(d["failed_change"] for d in fleet.production)
    assert metrics["change_failure_rate"] == pytest.approx(failed / len(fleet.production))
    assert metrics["mttr_seconds"] == restored.total_seconds()
    assert metrics["approval_sla_compliance"] == 1.0
    vanuatu = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=vu", headers=reader).json()
    assert vanuatu["change_failure_rate"] == pytest.approx(1 / 3)
    assert vanuatu["deployment_frequency_per_day"] == pytest.approx(2 / PERIOD_DAYS)
    tonga = client.get(f"{API}/metrics/delivery?{PERIOD}&tenant=to", headers=reader).json()
    assert tonga["change_failure_rate"] == 0.0
    assert tonga["mttr_seconds"] is None
