"""End to end on GitHub's side: the README's workflow (pipelines/github/example-deploy.yml) run
step by step with bash against a real ICA (PostgreSQL, real HTTP), its `uses:` of ICA's
composite action expanded from pipelines/github/action.yml, `ica` from the project's
virtualenv, and an OIDC token with ICA's audience from a local ID-token service, signed with a
key ICA trusts. People sign the approval through the API while the job waits for it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import yaml

from azdev_ica import client_zipapp
from tests.pipelines.ado import agent_path
from tests.pipelines.conftest import GITHUB_REPO_ID, RITA_GITHUB_ID, Stack
from tests.pipelines.fakes import RUNNER_REQUEST_TOKEN
from tests.pipelines.gha import Runner
from tests.pipelines.scripts import GITHUB_ACTION, GITHUB_EXAMPLE
from tests.pipelines.workdir import make_workdir

_run_ids = itertools.count(7700001)
ACTION = "platform/ica-pipelines/pipelines/github@"


class GitHubRun:
    def __init__(
        self,
        stack: Stack,
        tmp_path: Path,
        *,
        failing_tests: bool = False,
        failing_deploy: bool = False,
        failing_verify: bool = False,
    ) -> None:
        self.stack = stack
        self.run_id = str(next(_run_ids))
        self.run_key = f"gh:{GITHUB_REPO_ID}:{self.run_id}"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.work, tools = make_workdir(
            tmp_path,
            failing_tests=failing_tests,
            failing_deploy=failing_deploy,
            failing_verify=failing_verify,
        )
        self.workflow = yaml.safe_load(GITHUB_EXAMPLE.read_text())
        self.workflow["jobs"]["deploy"]["env"]["ICA_URL"] = stack.url
        self.workflow["jobs"]["deploy"]["env"]["ICA_CLIENT_SHA256"] = client_zipapp.sha256()
        stack.tokens.github_claims = {"run_id": self.run_id}
        self.runner = Runner(
            workdir=self.work,
            path=agent_path(tools),
            github={
                "GITHUB_RUN_ID": self.run_id,
                "GITHUB_RUN_ATTEMPT": "1",
                "GITHUB_REPOSITORY": "pacific/farmer-registry",
                "GITHUB_REPOSITORY_ID": GITHUB_REPO_ID,
                "GITHUB_SHA": "a" * 40,
                "GITHUB_REF": "refs/heads/main",
                "GITHUB_WORKFLOW": "deploy-production",
                "GITHUB_ACTOR_ID": RITA_GITHUB_ID,
            },
            actions={ACTION: GITHUB_ACTION},
            oidc={
                "ACTIONS_ID_TOKEN_REQUEST_URL": stack.tokens.github_request_url(),
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": RUNNER_REQUEST_TOKEN,
            },
        )

    def run(self) -> str:
        return self.runner.run(self.workflow, "deploy")

    def step(self, fragment: str) -> Any:
        found = [s for s in self.runner.log if fragment in s.name]
        assert found, fragment
        return found[-1]

    def show(self) -> str:
        return "\n".join(
            f"{s.name}: {s.outcome} {s.code}\n{s.stdout}{s.stderr}" for s in self.runner.log
        )


def test_a_production_deploy_with_github_oidc(stack, tmp_path):
    run = GitHubRun(stack, tmp_path)
    seen: dict[str, Any] = {}

    def after(step: Any) -> None:
        if step.name == "ICA gate":
            seen["lock"] = stack.lock()

    run.runner.on_step = after
    hits = stack.tokens.hits["github"]
    signer = stack.sign_when_asked(run.run_key, [("alice", "approve"), ("bob", "approve")])
    assert run.run() == "success", run.show()
    signer.join(timeout=5)
    # Verification passed: everything ran but the rollback path (if: failure()).
    rollback = [s for s in run.runner.log if s.outcome == "skipped"]
    assert len(rollback) == 3, run.show()
    assert all("rollback" in s.name.lower() or "ROLLBACK" in s.name for s in rollback)
    ran = [s for s in run.runner.log if s.outcome != "skipped"]
    assert all(s.outcome == "success" for s in ran), run.show()
    assert (seen["lock"]["status"], seen["lock"]["holder_run_key"]) == ("held", run.run_key)
    assert (run.work / "deployed.txt").exists()
    assert stack.lock()["status"] == "free"
    approval = json.loads(run.step("ICA approval").stdout)
    assert (approval["status"], approval["run_key"]) == ("approved", run.run_key)

    recorded = stack.run(run.run_key)
    assert (recorded["status"], recorded["provider"], recorded["requested_for"]) == (
        "success",
        "gh",
        RITA_GITHUB_ID,
    )
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert list(events) == ["build", "test", "scan", "deploy", "verify"]
    assert events["test"] == {"passed": True, "coverage_percent": 87.3}
    assert events["verify"]["passed"] is True
    ica_steps = [s for s in run.runner.log if s.name.startswith("ICA ")]
    assert stack.tokens.hits["github"] - hits == len(ica_steps) == 9  # each asked for its token
    assert "eyJ" not in "".join(s.stdout + s.stderr for s in run.runner.log)

    stack.seal()
    verified = stack.audit_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    refs = stack.audit_refs(run.run_key)
    assert len(refs) >= 6
    for ref in refs:
        status, receipt = stack.call(
            "GET", f"/api/v1/azdev/audit/receipt/{ref}", stack.keys["admin"]
        )
        assert (status, receipt["status"]) == (200, "included"), receipt
        assert receipt["inclusion_proof"]


def test_a_failed_test_step_ends_the_run_failed(stack, tmp_path):
    run = GitHubRun(stack, tmp_path, failing_tests=True)
    assert run.run() == "failure", run.show()
    assert run.step("ICA test").outcome == "success"  # if: success() || failure()
    assert run.step("'phase': 'approval'").outcome == "skipped"
    assert run.step("'phase': 'gate'").outcome == "skipped"
    assert run.step("deploy.sh").outcome == "skipped"
    assert run.step("ICA finish").outcome == "success"  # if: always()
    recorded = stack.run(run.run_key)
    assert recorded["status"] == "failed"
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["test"] == {"passed": False}
    assert events["scan"]["passed"] is False  # the scan never ran
    assert stack.lock()["status"] == "free"
    # The checked zipapp was extracted and compiled once: each `ica` step loads bytecode.
    client = run.work.parent / "runner-temp" / "ica-client"
    assert list((client / "app" / "azdev_ica" / "cli" / "__pycache__").glob("wire.*.pyc"))
    assert f'python3 -S "{client}/app/__main__.py"' in (client / "ica").read_text()


def test_a_cancelled_run_is_recorded_cancelled(stack, tmp_path):
    run = GitHubRun(stack, tmp_path)
    run.runner.cancel_before = "phase': 'approval"
    assert run.run() == "cancelled", run.show()
    assert run.step("'phase': 'approval'").outcome == "skipped"
    assert run.step("ICA finish").outcome == "success"
    assert stack.run(run.run_key)["status"] == "cancelled"
    assert stack.approvals(run.run_key) == []  # it never asked
    assert stack.lock()["status"] == "free"


def test_a_run_cancelled_while_waiting_for_the_approval_withdraws_it(stack, tmp_path):
    run = GitHubRun(stack, tmp_path)
    # Someone cancels the workflow run while its job waits for the approval to be signed.
    run.runner.cancel_during = ("ICA approval", lambda: bool(stack.approvals(run.run_key)))
    assert run.run() == "cancelled", run.show()
    assert run.step("ICA approval").outcome == "cancelled"
    assert run.step("'phase': 'gate'").outcome == "skipped"
    assert run.step("ICA finish").outcome == "success"  # if: always()
    assert not (run.work / "deployed.txt").exists()
    assert stack.run(run.run_key)["status"] == "cancelled"
    [approval] = stack.approvals(run.run_key)
    assert approval["status"] == "withdrawn"  # no pending approval is left behind
    assert approval["closed_reason"] == f"run {run.run_key} finished: cancelled"
    assert stack.lock()["status"] == "free"


def test_a_failed_deploy_is_reported_as_a_failed_deployment(stack, tmp_path):
    run = GitHubRun(stack, tmp_path, failing_deploy=True)
    signer = stack.sign_when_asked(run.run_key, [("alice", "approve"), ("bob", "approve")])
    assert run.run() == "failure", run.show()
    signer.join(timeout=5)
    assert run.step("deploy.sh to-production dist").outcome == "failure"
    assert run.step("ICA deploy").outcome == "success"  # if: success() || failure()
    recorded = stack.run(run.run_key)
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["deploy"]["status"] == "failed"
    assert recorded["status"] == "failed"
    assert stack.lock()["status"] == "free"


def test_a_failed_test_deploys_nothing_and_reports_no_deployment(stack, tmp_path):
    run = GitHubRun(stack, tmp_path, failing_tests=True)
    run.run()
    assert "deploy" not in [event["phase"] for event in stack.run(run.run_key)["events"]]


def test_without_id_token_write_no_oidc_token_is_asked(stack, tmp_path):
    run = GitHubRun(stack, tmp_path)
    run.workflow["permissions"] = {"contents": "read"}
    assert run.run() == "failure"
    start = run.step("ICA start")
    assert start.code == 4
    assert "id-token: write" in start.stderr


def test_a_failed_verification_fails_the_deployment_and_runs_the_rollback_path(stack, tmp_path):
    good = GitHubRun(stack, tmp_path / "good")
    signer = stack.sign_when_asked(good.run_key, [("alice", "approve"), ("bob", "approve")])
    assert good.run() == "success", good.show()
    signer.join(timeout=5)
    [last_good] = [e["data"] for e in stack.run(good.run_key)["events"] if e["phase"] == "build"]

    bad = GitHubRun(stack, tmp_path / "bad", failing_verify=True)
    signer = stack.sign_when_asked(bad.run_key, [("alice", "approve"), ("bob", "approve")])
    assert bad.run() == "failure", bad.show()
    signer.join(timeout=5)
    assert bad.step("./verify.sh").outcome == "failure"
    verify = bad.step("ICA verify")
    assert verify.code == 6, bad.show()  # ICA failed the deployment and named the rollback
    answer = json.loads(verify.stdout)
    assert answer["deployment_failed"] is True
    assert answer["rollback"]["artifact_digest"] == last_good["artifact_digest"]
    assert answer["rollback"]["run_key"] == good.run_key
    # The rollback phase: rollback_initiated, then the gate's rollback rule. The example policy
    # wants a fresh approval for a production rollback, so the gate denies it in this run and
    # the rollback deploy does not start.
    rollback = bad.step("ICA rollback")
    assert rollback.outcome == "failure", bad.show()
    assert "approval" in rollback.stdout
    assert bad.step('./deploy.sh to-production "$ICA_ROLLBACK_DIGEST"').outcome == "skipped"
    assert bad.step("ICA finish").outcome == "success"
    recorded = stack.run(bad.run_key)
    assert recorded["status"] == "failed"
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["verify"]["passed"] is False
    assert events["rollback_initiated"]["to_artifact_digest"] == last_good["artifact_digest"]
    assert "rollback_completed" not in events
    actions = stack.audit_actions(bad.run_key)
    assert actions.count("deployment.failed") == 1
    assert actions.index("deployment.failed") < actions.index("gate.decide", actions.index(
        "deployment.failed"))  # fmt: skip
    [incident] = stack.incidents(bad.run_key)
    assert incident["status"] == "open"
    assert stack.lock()["status"] == "free"
