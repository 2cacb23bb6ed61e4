"""Shared set-up for promotion: the example policy *with* its `promotion` section, and a
pipeline that drives runs through HTTP (start, test, scan, approval, gate, deploy, finish)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from azdev_ica.auth.principal import Actor
from azdev_ica.services.policies import apply_policy
from tests.conftest import bearer, example_policy

API = "/api/v1/azdev"
PROJECT = "5d1b6a2e-3333-4c2b-9d1e-0123456789ab"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
OPERATOR = Actor(kind="operator", id="test")
V1 = "sha256:" + "11" * 32
V2 = "sha256:" + "22" * 32
V3 = "sha256:" + "33" * 32


def use_promotion_policy(ctx: Any, extra_yaml: str = "", *, rollback: str = "false") -> None:
    """Apply the example policy with its promotion section (and `extra_yaml` appended);
    `rollback`: the section's rollback_without_approval value."""
    document = example_policy(promotion=True).replace(
        "rollback_without_approval: false", f"rollback_without_approval: {rollback}"
    )
    document += "\n" + extra_yaml
    apply_policy(ctx, actor=OPERATOR, document=document, source="promotion-policy")


@dataclass
class Attempt:
    run_key: str
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.gate.get("status"))

    @property
    def codes(self) -> list[str]:
        return [reason["code"] for reason in self.gate.get("reasons", [])]


class Pipeline:
    """A release pipeline talking to ICA over HTTP with a devops key."""

    _ids = itertools.count(1000)

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.headers = bearer(key)

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return self.client.post(f"{API}{path}", json=body, headers=headers or self.headers)

    def start(
        self,
        tenant: str,
        stage: str,
        digest: str,
        *,
        tests_passed: bool = True,
        requested_for: str | None = None,
        build: bool = True,
    ) -> str:
        """Start a run for the target; it reports its build of `digest` (unless `build` is
        False: a promotion run deploying an artifact built by an earlier run), tests, scan."""
        body: dict[str, Any] = {
            "provider": "ado",
            "project_id": PROJECT,
            "run_id": str(next(self._ids)),
            "pipeline_name": "farmer-registry-cd",
            "commit": COMMIT,
            "tenant": tenant,
            "stage": stage,
            "artifact_digest": digest,
        }
        if requested_for is not None:
            body["requested_for"] = requested_for
        started = self.post("/run/start", body)
        assert started.status_code == 201, started.text
        run_key = str(started.json()["run_key"])
        if build:
            self.event(run_key, "build", {"artifact_digest": digest})
        self.event(run_key, "test", {"passed": tests_passed, "coverage_percent": 91.0})
        self.event(run_key, "scan", {"passed": True, "findings": {"critical": 0, "high": 0}})
        return run_key

    def event(self, run_key: str, phase: str, data: dict[str, Any]) -> None:
        response = self.post("/run/event", {"run_key": run_key, "phase": phase, "data": data})
        assert response.status_code == 201, response.text

    def approve(self, run_key: str, signers: list[Any]) -> int:
        asked = self.post("/approval", {"run_key": run_key})
        assert asked.status_code in (200, 201), asked.text
        approval_id = int(asked.json()["id"])
        for person in signers:
            signed = self.post(
                f"/approval/{approval_id}/sign", {"decision": "approve"}, person.headers
            )
            assert signed.status_code == 200, signed.text
        return approval_id

    def gate(self, run_key: str, **extra: Any) -> dict[str, Any]:
        response = self.post("/gate/evaluate", {"run_key": run_key, **extra})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def deploy(self, run_key: str, digest: str, version: str, outcome: str = "succeeded") -> None:
        data = {"status": outcome, "artifact_digest": digest, "version": version}
        self.event(run_key, "deploy", data)

    def finish(self, run_key: str, status: str = "Succeeded") -> None:
        response = self.post("/run/finish", {"run_key": run_key, "status": status})
        assert response.status_code in (200, 201), response.text

    def release(
        self,
        tenant: str,
        stage: str,
        digest: str,
        version: str,
        *,
        approvers: list[Any] | None = None,
        finish: bool = True,
        build: bool = True,
        **gate: Any,
    ) -> Attempt:
        """Start a run for the target, have it approved when signers are given, ask the gate;
        on allow deploy and finish. Returns the run and the gate's answer."""
        run_key = self.start(tenant, stage, digest, build=build)
        if approvers:
            self.approve(run_key, approvers)
        attempt = Attempt(run_key, self.gate(run_key, **gate))
        if attempt.status == "allow":
            self.deploy(run_key, digest, version)
            if finish:
                self.finish(run_key)
        return attempt


def sign_off(
    client: Any, person: Any, tenant: str, stage: str, digest: str, kind: str, **extra: Any
) -> Any:
    body = {"tenant": tenant, "stage": stage, "artifact_digest": digest, "kind": kind, **extra}
    return client.post(f"{API}/signoff", json=body, headers=person.headers)


@pytest.fixture
def pipeline(client: Any, make_key: Any) -> Pipeline:
    return Pipeline(client, make_key("azdev_devops"))
