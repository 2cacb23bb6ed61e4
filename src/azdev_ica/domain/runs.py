"""Run-ledger rules: run keys, finish statuses, phases and what an attempt accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Provider(StrEnum):
    AZURE = "ado"
    GITHUB = "gh"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    BUILD = "build"
    TEST = "test"
    SCAN = "scan"
    APPROVAL = "approval"
    DEPLOY = "deploy"
    VERIFY = "verify"
    ROLLBACK_INITIATED = "rollback_initiated"
    ROLLBACK_COMPLETED = "rollback_completed"
    MONITOR = "monitor"


# After an attempt finished, only what happens after a deployment may still arrive:
# post-deploy checks, rollbacks (seed 000 §6.1) and automatic monitoring triggers.
AFTER_FINISH = frozenset(
    {Phase.VERIFY, Phase.ROLLBACK_INITIATED, Phase.ROLLBACK_COMPLETED, Phase.MONITOR}
)

RUN_KEY_RE = re.compile(r"^(ado|gh):([A-Za-z0-9._-]{1,100}):([0-9]{1,20})$")


def run_key(provider: Provider, project_id: str, run_id: str) -> str:
    """`ado:{projectId}:{buildId}` or `gh:{repositoryId}:{runId}` (DESIGN.md)."""
    key = f"{provider.value}:{project_id}:{run_id}"
    # fullmatch: `$` would also match before a trailing newline ("ado:p:1\n").
    if not RUN_KEY_RE.fullmatch(key):
        raise ValueError(f"not a valid run key: {key!r}")
    return key


@dataclass(frozen=True)
class FinishStatus:
    status: RunStatus
    flagged: bool  # Azure's SucceededWithIssues: a success, with warnings worth a look
    provider_status: str


_FINISH_SPELLINGS: dict[str, tuple[RunStatus, bool]] = {
    # ICA's own
    "success": (RunStatus.SUCCESS, False),
    "failed": (RunStatus.FAILED, False),
    "cancelled": (RunStatus.CANCELLED, False),
    # Azure Pipelines: Agent.JobStatus
    "succeeded": (RunStatus.SUCCESS, False),
    "succeededwithissues": (RunStatus.SUCCESS, True),
    "canceled": (RunStatus.CANCELLED, False),
    # GitHub Actions: job.status
    "failure": (RunStatus.FAILED, False),
}

FINISH_STATUSES = (
    "success",
    "failed",
    "cancelled",
    "Succeeded",
    "SucceededWithIssues",
    "Failed",
    "Canceled",
    "failure",
)


def normalise_finish_status(value: str) -> FinishStatus:
    """Map ICA, Azure Pipelines and GitHub Actions spellings onto the ledger's statuses."""
    found = _FINISH_SPELLINGS.get(value.strip().lower())
    if found is None:
        raise ValueError(
            f"unknown finish status {value!r}; use one of {', '.join(FINISH_STATUSES)}"
        )
    return FinishStatus(status=found[0], flagged=found[1], provider_status=value)


@dataclass(frozen=True)
class AttemptState:
    attempt: int
    finished: bool


class EventRefusal(StrEnum):
    FINISHED = "finished"
    UNKNOWN_ATTEMPT = "unknown_attempt"


def event_refusal(
    *, phase: Phase, attempt: int, current_attempt: int, attempt_state: AttemptState | None
) -> EventRefusal | None:
    """Why an event for `attempt` cannot be taken now, or None when it can.

    A higher attempt than the run's current one is a re-run and reopens the run, so it is
    always taken. A lower attempt must exist. A finished attempt takes only AFTER_FINISH.
    """
    if attempt > current_attempt:
        return None
    if attempt_state is None:
        return EventRefusal.UNKNOWN_ATTEMPT
    if attempt_state.finished and phase not in AFTER_FINISH:
        return EventRefusal.FINISHED
    return None


# Events that name a target (tenant x stage): what was deployed where, its checks, its
# monitoring and its rollbacks. Their target passes the gate's target check (issue 13).
TARGET_PHASES = frozenset(
    {
        Phase.DEPLOY,
        Phase.VERIFY,
        Phase.MONITOR,
        Phase.ROLLBACK_INITIATED,
        Phase.ROLLBACK_COMPLETED,
    }
)


def event_target(
    phase: Phase, data: dict[str, object] | None, *, run_tenant: str | None, run_stage: str | None
) -> tuple[str | None, str | None] | None:
    """The tenant and stage a target-naming event acts on: its own `tenant`/`stage` when it
    names them, else the run's; None for an event that names no target (build, test, ...)."""
    if phase not in TARGET_PHASES:
        return None
    data = data or {}

    def text(name: str, fallback: str | None) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) and value else fallback

    return text("tenant", run_tenant), text("stage", run_stage)


def deploy_target(
    phase: str,
    data: dict[str, object] | None,
    *,
    run_tenant: str | None,
    run_stage: str | None,
    run_digest: str | None,
) -> tuple[str | None, str | None, str | None]:
    """A deploy event's target tenant, stage and artifact digest: the event's own values, else
    the run's; (None, None, None) for any other phase."""
    if phase != Phase.DEPLOY.value:
        return None, None, None
    data = data or {}

    def text(name: str, fallback: str | None) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) and value else fallback

    return (
        text("tenant", run_tenant),
        text("stage", run_stage),
        text("artifact_digest", run_digest),
    )


# Monitoring triggers that mark a deployment failed (seed 000 §6.1 automatic rollback: a 5xx
# error rate over 5 %, a crash loop, the control plane unreachable).
FAILURE_TRIGGERS = frozenset({"error_rate", "crash_loop", "control_plane_unreachable"})


# The seed's error-rate trigger: a 5xx rate over 5 % (seed 000 §6.1).
ERROR_RATE_THRESHOLD_PERCENT = 5.0


def deployment_failure(phase: str, data: dict[str, object] | None) -> str | None:
    """Why a post-deploy event marks its target's deployment failed (seed 000 §5.2, §6.1), or
    None: `verify:failed` for a verification that failed (`passed: false`, or any of its
    `checks` not passed), `monitor:<trigger>` for a failure trigger (an `error_rate` whose
    reported `value` is not over the seed's 5 % is no failure)."""
    data = data or {}
    if phase == Phase.VERIFY.value:
        checks = data.get("checks")
        failed_check = isinstance(checks, list) and any(
            isinstance(check, dict) and check.get("passed") is False for check in checks
        )
        if data.get("passed") is False or failed_check:
            return "verify:failed"
        return None
    if phase == Phase.MONITOR.value:
        trigger = data.get("trigger")
        value = data.get("value")
        if (
            trigger == "error_rate"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value <= ERROR_RATE_THRESHOLD_PERCENT
        ):
            return None
        if isinstance(trigger, str) and trigger in FAILURE_TRIGGERS:
            return f"monitor:{trigger}"
    return None
