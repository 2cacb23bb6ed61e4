"""End to end on Azure Pipelines' side: the README's pipeline (pipelines/azure/example-pipeline.yml)
compiled against the template and run step by step with bash against a real ICA (PostgreSQL,
real HTTP), as an agent would run it: `ica` from the project's virtualenv, the Azure variables
set, the workload identity exchanged at a local Entra ID, the environment's Invoke REST API
check played in callback mode, people signing through the API, Azure DevOps receiving
`TaskCompleted`, then the ledger verified and the run's entries proven included.

The user's `make dist`, `make test-coverage`, `make scan` and `./deploy.sh` are small stand-in
scripts in the work directory; `python3 -m pip install` is answered by a stand-in that checks it
was asked for a hashed, dependency-free install (there is no package index here)."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from azdev_ica import client_zipapp
from tests.pipelines.ado import Agent, StepRun, agent_path, compile_pipeline
from tests.pipelines.conftest import RITA_ADO_ID, Stack
from tests.pipelines.fakes import CLIENT_ID, JOB_ACCESS_TOKEN, SERVICE_CONNECTION_ID
from tests.pipelines.scripts import AZURE_EXAMPLE, AZURE_TEMPLATE
from tests.pipelines.workdir import make_workdir
from tests.support.oidc import ENTRA_TENANT

PROJECT = "6c3f0e1a-7777-4c2b-9d1e-0123456789ab"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
_build_ids = itertools.count(9001)


class AzureRun:
    """One pipeline run: its work directory, its variables and the agent that plays it."""

    def __init__(
        self,
        stack: Stack,
        tmp_path: Path,
        *,
        failing_tests: bool = False,
        failing_deploy: bool = False,
        failing_verify: bool = False,
        **overrides: Any,
    ) -> None:
        self.stack = stack
        self.build_id = str(next(_build_ids))
        self.run_key = f"ado:{PROJECT}:{self.build_id}"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.work, tools = make_workdir(
            tmp_path,
            failing_tests=failing_tests,
            failing_deploy=failing_deploy,
            failing_verify=failing_verify,
        )
        parameters = yaml.safe_load(AZURE_EXAMPLE.read_text())["extends"]["parameters"]
        parameters["icaUrl"] = stack.url
        parameters["icaClientSha256"] = client_zipapp.sha256()  # pinned by the pipeline
        parameters.update(overrides)
        self.parameters = parameters
        self.pipeline = compile_pipeline(AZURE_TEMPLATE, parameters)
        self.agent = Agent(
            workdir=self.work,
            path=agent_path(tools),
            predefined={
                "Build.BuildId": self.build_id,
                "Build.BuildNumber": f"20261123.{self.build_id}",
                "Build.DefinitionName": "farmer-registry-deploy",
                "Build.SourceBranch": "refs/heads/main",
                "Build.SourceVersion": COMMIT,
                "Build.RequestedForId": RITA_ADO_ID,
                "Build.RequestedForEmail": "rita@example.org",
                "System.TeamProjectId": PROJECT,
                "System.TeamProject": "registry",
                "System.CollectionUri": f"{stack.ado.url}/fabrikam/",
                "System.JobAttempt": "1",
                "System.HostType": "build",
                # A pipeline variable only the test sets: where "Entra ID" is.
                "ICA_ENTRA_AUTHORITY": stack.tokens.url,
                "System.OidcRequestUri": stack.tokens.oidc_request_uri(),
            },
            access_token=JOB_ACCESS_TOKEN,
            secrets={"ica-secrets": {"ICA_API_KEY": stack.keys["ci"]}},
            connections={
                "ica-deploy-wif": {
                    "idToken": stack.tokens.ado_assertion,  # issued when the step starts
                    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID": SERVICE_CONNECTION_ID,
                    "servicePrincipalId": CLIENT_ID,
                    "tenantId": ENTRA_TENANT,
                }
            },
        )
        self.callbacks: list[dict[str, Any]] = []
        self.approval: dict[str, Any] = {}

    def environment_check(self, decisions: list[tuple[str, str]]) -> Any:
        """The Invoke REST API check of the production environment, in callback mode."""

        def check() -> bool:
            job = f"job-{self.build_id}"
            before = len(self.stack.ado.requests)
            status, body = self.stack.check_callback(self.run_key, job)
            assert (status, body["status"]) == (201, "pending"), body
            assert (body["tenant"], body["stage"], body["run_key"]) == (
                "to",
                "production",
                self.run_key,
            )
            self.stack.deliver()
            assert len(self.stack.ado.requests) == before  # nothing before the decision
            for person, decision in decisions:
                self.approval = self.stack.sign(body["id"], person, decision)
            self.stack.deliver()
            [request] = self.stack.ado.requests[before:]
            assert request["path"] == (
                f"/fabrikam/{PROJECT}/_apis/distributedtask/hubs/checks/plans/plan-{job}/events"
                "?api-version=2.0-preview.1"
            )
            assert request["headers"]["authorization"] == f"Bearer job-access-token-{job}"
            callback = json.loads(request["body"])
            self.callbacks.append(callback)
            assert callback == {
                "name": "TaskCompleted",
                "taskId": f"task-{job}",
                "jobId": job,
                "result": callback["result"],
            }
            return callback["result"] == "succeeded"

        return check

    def run(self) -> dict[str, str]:
        return self.agent.run(self.pipeline)

    def step(self, name: str) -> StepRun:
        [found] = [step for step in self.agent.log if step.name == name]
        return found

    def output(self) -> str:
        return "".join(step.stdout + step.stderr for step in self.agent.log)

    def show(self) -> str:
        return "\n".join(
            f"[{s.stage}] {s.name}: {s.code}\n{s.stdout}{s.stderr}" for s in self.agent.log
        )


def answer(stdout: str) -> Any:
    """ICA's JSON answer in a step's output, without the agent's logging commands."""
    return json.loads("\n".join(x for x in stdout.splitlines() if not x.startswith("##vso[")))


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_production_deploy_runs_through_every_hook(stack, tmp_path):
    run = AzureRun(stack, tmp_path)
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    seen: dict[str, Any] = {}

    def after(step: StepRun) -> None:
        if step.name == "ICA gate":
            seen["lock"] = stack.lock()
            seen["gate"] = answer(step.stdout)

    run.agent.on_step = after
    entra_calls = stack.tokens.hits["entra"]

    assert run.run() == {
        "ica_build": "Succeeded",
        "ica_deploy": "Succeeded",
        "ica_closeout": "Succeeded",
    }, run.show()
    rollback_steps = ("ICA rollback", './deploy.sh to-production "$(ICA_ROLLBACK_DIGEST)"')
    ran = [step for step in run.agent.log if not step.name.startswith(rollback_steps)]
    assert all(step.code == 0 for step in ran), run.show()
    # Verification passed: the rollback path does not run.
    skipped = [step for step in run.agent.log if step.name.startswith(rollback_steps)]
    assert len(skipped) == 3
    assert all(step.code is None for step in skipped)

    # The gate allowed and took the lock; the deploy step ran after it; finish released it.
    assert seen["gate"]["status"] == "allow"
    assert (seen["lock"]["status"], seen["lock"]["holder_run_key"]) == ("held", run.run_key)
    assert (run.work / "deployed.txt").read_text() == (
        "deployed dist/registry.tar.gz to to-production\n"
    )
    assert stack.lock()["status"] == "free"
    assert run.callbacks == [
        {"name": "TaskCompleted", "taskId": f"task-job-{run.build_id}",
         "jobId": f"job-{run.build_id}", "result": "succeeded"},
    ]  # fmt: skip
    assert run.approval["status"] == "approved"

    recorded = stack.run(run.run_key)
    assert (recorded["status"], recorded["tenant"], recorded["stage"]) == (
        "success",
        "to",
        "production",
    )
    assert recorded["artifact_digest"] == digest_of(run.work / "dist" / "registry.tar.gz")
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert list(events) == ["build", "test", "scan", "deploy", "verify"]
    assert events["verify"]["passed"] is True
    assert events["test"] == {"passed": True, "coverage_percent": 87.3}
    assert events["scan"]["passed"] is True
    assert events["deploy"] == {
        "tenant": "to",
        "stage": "production",
        "status": "succeeded",
        "notes": "environment to-production",
    }

    # Every `ica` step got its token from Entra ID with the federation assertion, itself.
    ica_steps = [s for s in run.agent.log if s.name.startswith("ICA ") and s.code is not None]
    assert stack.tokens.hits["entra"] - entra_calls == len(ica_steps) == 9
    form = stack.tokens.seen_forms[-1]
    assert (form["client_id"], form["scope"]) == (CLIENT_ID, run.parameters["entraScope"])
    output = run.output()
    assert form["client_assertion"] not in output
    assert "eyJ" not in output  # no token of any kind printed

    # The ledger verifies, and every entry of this run is in the log with its proof.
    stack.seal()
    verified = stack.audit_verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "RESULT: OK" in verified.stdout
    refs = stack.audit_refs(run.run_key)
    actions = stack.audit_actions(run.run_key)
    for action in ("run.start", "run.event", "run.finish"):
        assert action in actions, actions
    assert len(refs) >= 6
    for ref in refs:
        status, receipt = stack.call(
            "GET", f"/api/v1/azdev/audit/receipt/{ref}", stack.keys["admin"]
        )
        assert status == 200, receipt
        assert receipt["status"] == "included"
        assert receipt["inclusion_proof"]
        assert receipt["checkpoint"]
        assert run.run_key in receipt["entry"]


def test_a_failed_test_step_fails_the_run_and_nothing_deploys(stack, tmp_path):
    run = AzureRun(
        stack, tmp_path, failing_tests=True, serviceConnection="", variableGroup="ica-secrets"
    )
    run.agent.checks["ica_deploy"] = lambda: pytest.fail("the deploy stage must not start")
    assert run.run() == {
        "ica_build": "Failed",
        "ica_deploy": "Skipped",
        "ica_closeout": "Succeeded",
    }, run.show()
    assert run.step("ICA test event (result and coverage)").code == 0
    assert run.step("ICA scan event").code == 0
    assert not (run.work / "deployed.txt").exists()
    recorded = stack.run(run.run_key)
    assert recorded["status"] == "failed"
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["test"] == {"passed": False}  # and no coverage: the report was not written
    assert "deploy" not in events
    assert stack.lock()["status"] == "free"
    assert stack.keys["ci"] not in run.output()  # the API key reached ica, never the log
    # The checked zipapp was extracted and compiled once: each `ica` step loads bytecode.
    client = tmp_path / "agent-temp" / "ica-client"
    assert list((client / "app" / "azdev_ica" / "cli" / "__pycache__").glob("wire.*.pyc"))
    assert f'python3 -S "{client}/app/__main__.py"' in (client / "ica").read_text()


def test_a_cancelled_run_is_recorded_cancelled_and_frees_the_lock(stack, tmp_path):
    run = AzureRun(stack, tmp_path)
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    run.agent.cancel_before = "./deploy.sh"  # cancelled after the gate took the lock
    results = run.run()
    assert results == {
        "ica_build": "Succeeded",
        "ica_deploy": "Canceled",
        "ica_closeout": "Canceled",  # its job ran (always()) in a cancelled run
    }, run.show()
    assert run.step("ICA run finish").code == 0
    assert run.step("ICA run finish (close-out)").code == 0  # the same status again: no-op
    assert not (run.work / "deployed.txt").exists()
    recorded = stack.run(run.run_key)
    assert recorded["status"] == "cancelled"
    assert "deploy" not in [event["phase"] for event in recorded["events"]]
    assert stack.lock()["status"] == "free"
    actions = stack.audit_actions(run.run_key)
    assert actions.index("gate.decide") < actions.index("run.finish")  # allowed, then cancelled


def test_a_run_cancelled_during_build_is_closed_cancelled(stack, tmp_path):
    run = AzureRun(stack, tmp_path)
    run.agent.checks["ica_deploy"] = lambda: pytest.fail("the deploy stage must not start")
    run.agent.cancel_before = "make test-coverage"
    assert run.run() == {
        "ica_build": "Canceled",
        "ica_deploy": "Canceled",
        "ica_closeout": "Canceled",  # its job ran (always()) in a cancelled run
    }, run.show()
    assert run.step("ICA test event (result and coverage)").code is None  # not in a cancel
    assert run.step("ICA run finish (close-out)").code == 0
    recorded = stack.run(run.run_key)
    assert recorded["status"] == "cancelled"
    assert [event["phase"] for event in recorded["events"]] == ["build"]
    assert stack.approvals(run.run_key) == []  # nothing left pending
    assert stack.lock()["status"] == "free"


def test_a_run_cancelled_while_waiting_at_the_check_is_closed_cancelled(stack, tmp_path):
    run = AzureRun(stack, tmp_path)

    def cancelled_while_waiting() -> bool:
        status, body = stack.check_callback(run.run_key, f"job-{run.build_id}")
        assert (status, body["status"]) == (201, "pending"), body
        run.approval = body
        run.agent.canceled = True  # someone cancels the run while the check waits
        return False

    run.agent.checks["ica_deploy"] = cancelled_while_waiting
    assert run.run() == {
        "ica_build": "Succeeded",
        "ica_deploy": "Canceled",
        "ica_closeout": "Canceled",  # its job ran (always()) in a cancelled run
    }, run.show()
    assert run.step("ICA run finish (close-out)").code == 0
    assert stack.run(run.run_key)["status"] == "cancelled"
    [approval] = stack.approvals(run.run_key)
    assert approval["id"] == run.approval["id"]
    assert approval["status"] == "withdrawn"  # no pending approval for the SLA to escalate
    assert approval["closed_reason"] == f"run {run.run_key} finished: cancelled"
    before = len(stack.ado.requests)
    stack.deliver()  # the check that waited is answered: not approved
    [callback] = stack.ado.requests[before:]
    assert json.loads(callback["body"]) == {
        "name": "TaskCompleted",
        "taskId": f"task-job-{run.build_id}",
        "jobId": f"job-{run.build_id}",
        "result": "failed",
    }
    assert not (run.work / "deployed.txt").exists()
    assert stack.lock()["status"] == "free"


def test_a_failed_deploy_is_reported_as_a_failed_deployment(stack, tmp_path):
    run = AzureRun(stack, tmp_path, failing_deploy=True)
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    assert run.run()["ica_deploy"] == "Failed", run.show()
    assert run.step("ICA deploy event").code == 0
    recorded = stack.run(run.run_key)
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["deploy"]["status"] == "failed"  # it reaches the change failure rate
    assert recorded["status"] == "failed"
    assert stack.lock()["status"] == "free"


def test_scan_findings_from_sarif_and_the_sbom_reach_ica(stack, tmp_path):
    run = AzureRun(stack, tmp_path, sarifFiles="scan.sarif", sbomFile="bom.cdx.json")
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    assert run.run()["ica_deploy"] == "Succeeded", run.show()  # the policy does not require scans
    recorded = stack.run(run.run_key)
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["scan"]["findings"] == {"critical": 1, "high": 2, "medium": 1, "low": 1}
    assert "scan.critical" in stack.audit_actions(run.run_key)  # the alert fires through the kit
    assert answer(run.step("ICA gate").stdout)["status"] == "allow"


def test_a_rejected_approval_fails_the_run_through_the_close_out(stack, tmp_path):
    run = AzureRun(stack, tmp_path)
    run.agent.checks["ica_deploy"] = run.environment_check([("bob", "reject")])
    assert run.run() == {
        "ica_build": "Succeeded",
        "ica_deploy": "Failed",
        "ica_closeout": "Succeeded",
    }, run.show()
    assert run.callbacks[0]["result"] == "failed"
    assert run.approval["status"] == "rejected"
    assert not (run.work / "deployed.txt").exists()
    assert stack.run(run.run_key)["status"] == "failed"
    assert stack.lock()["status"] == "free"


def test_in_wait_mode_the_deploy_job_asks_and_waits_for_the_approval(stack, tmp_path):
    run = AzureRun(
        stack, tmp_path, approvalMode="wait", serviceConnection="", variableGroup="ica-secrets"
    )
    signer = stack.sign_when_asked(run.run_key, [("alice", "approve"), ("bob", "approve")])
    assert run.run() == {
        "ica_build": "Succeeded",
        "ica_deploy": "Succeeded",
        "ica_closeout": "Succeeded",
    }, run.show()
    signer.join(timeout=5)
    waited = json.loads(run.step("ICA approval (ask and wait)").stdout)
    assert (waited["status"], waited["budget_minor"], waited["currency"]) == (
        "approved",
        200000,
        "NZD",
    )
    assert (run.work / "deployed.txt").exists()
    assert stack.run(run.run_key)["status"] == "success"
    assert stack.lock()["status"] == "free"


def test_a_wait_longer_than_every_token_lifetime_keeps_its_workload_identity(stack, tmp_path):
    """Scaled down: the step's idToken lives 2 s (Azure DevOps: about 10 minutes) and the
    Entra token 3 s (about an hour); the approval arrives after both expired, twice over."""
    run = AzureRun(
        stack, tmp_path, approvalMode="wait", approvalPollSeconds=0.5, approvalPollMaxSeconds=0.5
    )
    tokens = stack.tokens
    tokens.id_token_seconds, tokens.access_token_seconds = 2, 3
    fetched = tokens.hits["ado_oidc"]
    try:
        signer = stack.sign_when_asked(
            run.run_key, [("alice", "approve"), ("bob", "approve")], after=8
        )
        results = run.run()
        signer.join(timeout=5)
    finally:
        tokens.id_token_seconds, tokens.access_token_seconds = 600, 3599
    assert results["ica_deploy"] == "Succeeded", run.show()
    waited = run.step("ICA approval (ask and wait)")
    assert json.loads(waited.stdout)["status"] == "approved"
    assert tokens.hits["ado_oidc"] - fetched >= 2  # fresh assertions, asked the documented way
    assert JOB_ACCESS_TOKEN not in run.output()
    assert stack.run(run.run_key)["status"] == "success"


def test_a_client_that_does_not_match_the_pinned_sha256_never_runs(stack, tmp_path):
    run = AzureRun(stack, tmp_path, icaClientSha256="0" * 64, variableGroup="ica-secrets")
    run.agent.checks["ica_deploy"] = lambda: pytest.fail("the deploy stage must not start")
    results = run.run()
    assert results["ica_build"] == "Failed", run.show()
    install = [s for s in run.agent.log if s.name.startswith("Install ica")]
    assert install[0].code == 1
    assert "does not match icaClientSha256" in install[0].stdout
    assert run.step("ICA run start").code is None  # nothing after it ran
    assert not (tmp_path / "agent-temp" / "ica-client" / "ica.pyz").exists()


def test_the_client_can_come_from_your_own_index_into_a_virtual_environment(stack, tmp_path):
    run = AzureRun(
        stack, tmp_path, icaClient="index", serviceConnection="", variableGroup="ica-secrets"
    )
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    assert run.run()["ica_deploy"] == "Succeeded", run.show()
    installs = [s for s in run.agent.log if s.name.startswith("Install ica")]
    assert all("azdev-ica is installed (hash checked)" in s.stdout for s in installs)
    assert (tmp_path / "agent-temp" / "ica-venv" / "bin" / "ica").exists()
    assert stack.run(run.run_key)["status"] == "success"


def test_ica_briefly_unreachable_is_retried(stack, tmp_path):
    run = AzureRun(stack, tmp_path, icaUrl=stack.relay.url)
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    refused = stack.relay.refused

    def before_gate(step: StepRun) -> None:
        if step.stage == "ica_deploy" and step.name == "Install ica (from ICA, SHA-256 pinned)":
            stack.relay.down = True  # ICA restarts while the gate is asked
            threading.Timer(1.5, lambda: setattr(stack.relay, "down", False)).start()

    run.agent.on_step = before_gate
    assert run.run()["ica_deploy"] == "Succeeded", run.show()
    assert stack.relay.refused > refused
    assert answer(run.step("ICA gate").stdout)["status"] == "allow"
    assert stack.run(run.run_key)["status"] == "success"


def test_ica_unreachable_for_too_long_fails_closed(stack, tmp_path):
    run = AzureRun(stack, tmp_path, icaUrl=stack.relay.url, icaTimeoutSeconds=3)
    run.agent.checks["ica_deploy"] = run.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )

    def around_gate(step: StepRun) -> None:
        if step.stage == "ica_deploy" and step.name == "Install ica (from ICA, SHA-256 pinned)":
            stack.relay.down = True
        if step.name == "ICA gate":
            stack.relay.down = False  # back for the finish

    run.agent.on_step = around_gate
    try:
        results = run.run()
    finally:
        stack.relay.down = False
    assert results["ica_deploy"] == "Failed", run.show()
    gate = run.step("ICA gate")
    assert gate.code == 5
    assert "is unreachable" in gate.stderr
    assert "gave up after" in gate.stderr
    deploy = run.step("./deploy.sh to-production dist/registry.tar.gz")
    assert deploy.code is None  # not run
    assert not (run.work / "deployed.txt").exists()
    assert stack.run(run.run_key)["status"] == "failed"
    assert stack.lock()["status"] == "free"


def test_a_failed_verification_fails_the_deployment_and_runs_the_rollback_path(stack, tmp_path):
    good = AzureRun(stack, tmp_path / "good")
    good.agent.checks["ica_deploy"] = good.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    assert good.run()["ica_deploy"] == "Succeeded", good.show()
    last_good = stack.run(good.run_key)["artifact_digest"]

    bad = AzureRun(stack, tmp_path / "bad", failing_verify=True)
    bad.agent.checks["ica_deploy"] = bad.environment_check(
        [("alice", "approve"), ("bob", "approve")]
    )
    assert bad.run() == {
        "ica_build": "Succeeded",
        "ica_deploy": "Failed",
        "ica_closeout": "Succeeded",  # it closed the run: failed
    }, bad.show()
    assert bad.step("./verify.sh to-production").code == 1
    verify = bad.step("ICA verify event")
    assert verify.code == 6, bad.show()  # ICA failed the deployment and named the rollback
    answer_ = answer(verify.stdout)
    assert answer_["deployment_failed"] is True
    assert (answer_["rollback"]["artifact_digest"], answer_["rollback"]["run_key"]) == (
        last_good,
        good.run_key,
    )
    # The rollback path: rollback_initiated, then the gate's rollback rule for that digest. The
    # example policy wants a fresh approval for a production rollback, so the gate denies it
    # in this run and the rollback steps do not start.
    rollback = bad.step("ICA rollback (the gate's rollback rule)")
    assert rollback.code == 1, bad.show()
    assert answer(rollback.stdout)["status"] == "deny"
    assert bad.step('./deploy.sh to-production "$(ICA_ROLLBACK_DIGEST)"').code is None
    assert bad.step("ICA rollback completed").code is None
    recorded = stack.run(bad.run_key)
    assert recorded["status"] == "failed"
    events = {event["phase"]: event["data"] for event in recorded["events"]}
    assert events["verify"]["passed"] is False
    assert events["rollback_initiated"]["to_artifact_digest"] == last_good
    actions = stack.audit_actions(bad.run_key)
    assert actions.count("deployment.failed") == 1
    [incident] = stack.incidents(bad.run_key)
    assert incident["status"] == "open"
    assert stack.lock()["status"] == "free"
