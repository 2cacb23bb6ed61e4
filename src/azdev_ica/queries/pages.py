"""Read models of the pages linked from notifications and of the home page, gathering what
several API reads give one by one: the approval page (the request, its run, tests, scans,
sign-offs, release facts, gate decisions), the run page, the home overview. Every read goes
through the same scoped queries as the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import (
    GateEvaluation,
    OutboxMessage,
    Override,
    Person,
    PipelineEvent,
    Signoff,
)
from azdev_ica.domain.promotion import is_major_bump
from azdev_ica.errors import NotFound
from azdev_ica.policy.model import Policy
from azdev_ica.queries.approvals import ApprovalView, get_approval
from azdev_ica.queries.deployments import deployment_history
from azdev_ica.queries.runs import RunDetail, get_run
from azdev_ica.services.locks import LockState, lock_state
from azdev_ica.services.signoffs import list_signoffs


@dataclass(frozen=True)
class Release:
    """The version being deployed, what the major-release stage runs now, and whether the
    step between them is a major release (the promotion rules' own test)."""

    version: str | None
    current: str | None
    stage: str | None
    major: bool


@dataclass(frozen=True)
class Timeline:
    at: datetime
    phase: str
    attempt: int
    summary: str
    passed: bool | None


@dataclass
class RunFacts:
    """What a run reported: its events in words, the last test and scan results."""

    detail: RunDetail | None
    timeline: list[Timeline] = field(default_factory=list)
    tests: dict[str, Any] | None = None
    scan: dict[str, Any] | None = None
    gate_decisions: list[GateEvaluation] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    repository_url: str | None = None


@dataclass(frozen=True)
class ApprovalPage:
    view: ApprovalView
    run: RunFacts
    release: Release
    signoffs: list[tuple[Signoff, str]]
    requester_login: str | None


def _summary(event: PipelineEvent) -> tuple[str, bool | None]:
    data = event.data or {}
    passed = data.get("passed") if isinstance(data.get("passed"), bool) else None
    phase = event.phase
    parts: list[str] = []
    if phase == "test":
        if data.get("total") is not None:
            parts.append(f"{data.get('total')} tests, {data.get('failed') or 0} failed")
        if data.get("coverage_percent") is not None:
            parts.append(f"coverage {data['coverage_percent']:g}%")
    elif phase == "scan":
        findings = data.get("findings") or {}
        shown = ", ".join(
            f"{findings.get(level, 0)} {level}" for level in ("critical", "high", "medium", "low")
        )
        parts.append(f"{data.get('tool') or 'scan'}: {shown}")
    elif phase == "build" and data.get("artifact_digest"):
        parts.append(str(data["artifact_digest"]))
    elif phase == "deploy":
        target = "/".join(str(data[k]) for k in ("tenant", "stage") if data.get(k))
        parts.append(" ".join(p for p in (data.get("status"), target, data.get("version")) if p))
        passed = {"succeeded": True, "failed": False}.get(str(data.get("status")))
    elif phase == "verify":
        checks = data.get("checks") or []
        if checks:
            parts.append(
                ", ".join(f"{c['name']} {'ok' if c['passed'] else 'failed'}" for c in checks)
            )
    elif phase.startswith("rollback"):
        parts.append(" ".join(str(p) for p in (data.get("reason"), data.get("to_version")) if p))
    elif phase == "monitor":
        parts.append(str(data.get("trigger", "")))
    if data.get("notes"):
        parts.append(str(data["notes"]))
    return "; ".join(p for p in parts if p), passed


def repository_url(provider: str, project: str | None, commit: str | None) -> str | None:
    """The commit's page when the run names its repository (GitHub `owner/repo`); None when
    ICA cannot know it (an Azure DevOps project names no repository host)."""
    if provider != "gh" or not project or not commit or project.count("/") != 1:
        return None
    owner, repo = project.split("/")
    safe = all(c.isalnum() or c in "-_." for c in owner + repo)
    return f"https://github.com/{owner}/{repo}/commit/{commit}" if safe and owner and repo else None


def run_facts(session: Session, *, run_key: str, principal: Principal) -> RunFacts:
    """The run's events, results and gate decisions; out of scope like absent (NotFound)."""
    detail = get_run(session, run_key=run_key, principal=principal)
    run = detail.run
    facts = RunFacts(detail=detail)
    for event in detail.events:
        summary, passed = _summary(event)
        facts.timeline.append(
            Timeline(event.occurred_at, event.phase, event.attempt, summary, passed)
        )
        if event.phase == "test":
            facts.tests = dict(event.data or {})
        elif event.phase == "scan":
            facts.scan = dict(event.data or {})
    facts.timeline.sort(key=lambda item: item.at)
    gate_scope = principal.scope(Permission.RUN_READ)
    decisions = select(GateEvaluation).where(GateEvaluation.run_key == run.run_key)
    overrides = select(Override).where(Override.run_key == run.run_key)
    if gate_scope is not None:
        decisions = decisions.where(GateEvaluation.tenant.in_(sorted(gate_scope)))
        overrides = overrides.where(Override.tenant.in_(sorted(gate_scope)))
    facts.gate_decisions = list(session.scalars(decisions.order_by(GateEvaluation.id)))
    facts.overrides = list(session.scalars(overrides.order_by(Override.id)))
    facts.repository_url = repository_url(run.provider, run.project, run.commit)
    return facts


def release_of(
    session: Session, policy: Policy, *, tenant: str, digest: str | None, run_facts: RunFacts
) -> Release:
    """The version of `digest` (the run's deploy events, else an earlier deployment of the same
    artifact in the tenant) against what the tenant's major-release stage runs now."""
    stage = policy.promotion.major_release_stage if policy.promotion is not None else "production"
    version = None
    if run_facts.detail is not None:
        for event in run_facts.detail.events:
            if event.phase == "deploy" and (event.data or {}).get("version"):
                version = str(event.data["version"])
    history = [
        d
        for d in deployment_history(session, tenant=tenant, digest_or_stage=(digest or "", stage))
        if d.good
    ]
    if version is None and digest:
        version = next(
            (d.version for d in reversed(history) if d.artifact_digest == digest and d.version),
            None,
        )
    current = next((d.version for d in reversed(history) if d.stage == stage and d.version), None)
    return Release(version, current, stage, is_major_bump(version, current))


def approval_page(
    session: Session, *, approval_id: int, principal: Principal, policy: Policy, now: datetime
) -> ApprovalPage:
    """Everything the approval page shows; out of scope answers exactly like absent."""
    view = get_approval(session, approval_id=approval_id, principal=principal, now=now)
    row = view.approval
    try:
        facts = run_facts(session, run_key=row.run_key, principal=principal)
    except NotFound:
        facts = RunFacts(detail=None)  # the run is another tenant's, or not recorded
    signoffs = (
        list_signoffs(session, principal=principal, tenant=row.tenant, digest=row.artifact_digest)
        if row.artifact_digest and principal.can(Permission.SIGNOFF_READ)
        else []
    )
    requester = None
    if row.requester_person_id is not None:
        person = session.get(Person, row.requester_person_id)
        requester = person.login if person is not None else None
    release = release_of(
        session, policy, tenant=row.tenant, digest=row.artifact_digest, run_facts=facts
    )
    return ApprovalPage(view, facts, release, signoffs, requester)


# --- the home page --------------------------------------------------------------------------

RECENT = timedelta(days=7)
RECENT_LIMIT = 20


@dataclass(frozen=True)
class Alert:
    at: datetime
    topic: str
    severity: str
    tenant: str | None
    summary: str
    link_path: str | None


@dataclass(frozen=True)
class HomeOverview:
    queues: list[LockState]
    denials: list[GateEvaluation]
    alerts: list[Alert]


def _path_of(link: Any) -> str | None:
    """A notification's link as a path of this console (links carry the public URL)."""
    if not isinstance(link, str):
        return None
    path = urlsplit(link).path
    return path if path.startswith("/") and not path.startswith("//") else None


def home_overview(
    session: Session, *, principal: Principal, policy: Policy, now: datetime
) -> HomeOverview:
    """The deployment queue of each target in the person's scope (held or waited for), the
    gate's recent denials and the recent alerts of their tenants; newest first."""
    scope = principal.scope(Permission.RUN_READ) if principal.can(Permission.RUN_READ) else None
    if not principal.can(Permission.RUN_READ):
        return HomeOverview([], [], [])
    tenants = sorted(t for t in policy.tenants if scope is None or t in scope)
    queues = []
    for tenant in tenants:
        for stage in policy.stages:
            state = lock_state(session, tenant=tenant, stage=stage.name, now=now)
            if state.holder_run_key is not None or state.queue:
                queues.append(state)
    since = now - RECENT
    denials_query = select(GateEvaluation).where(
        GateEvaluation.status == "deny", GateEvaluation.decided_at >= since
    )
    if scope is not None:
        denials_query = denials_query.where(GateEvaluation.tenant.in_(sorted(scope)))
    denials = list(
        session.scalars(
            denials_query.order_by(
                GateEvaluation.decided_at.desc(), GateEvaluation.id.desc()
            ).limit(RECENT_LIMIT)
        )
    )
    alerts_query = select(OutboxMessage).where(OutboxMessage.created_at >= since)
    if scope is not None:
        alerts_query = alerts_query.where(OutboxMessage.tenant.in_(sorted(scope)))
    alerts = []
    for row in session.scalars(
        alerts_query.order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc()).limit(500)
    ):
        payload = row.payload or {}
        if not payload.get("severity") or not principal.can_for(Permission.RUN_READ, row.tenant):
            continue
        alerts.append(
            Alert(
                at=row.created_at,
                topic=row.topic,
                severity=str(payload["severity"]),
                tenant=row.tenant,
                summary=str(payload.get("summary") or row.topic),
                link_path=_path_of(payload.get("link")),
            )
        )
        if len(alerts) >= RECENT_LIMIT:
            break
    return HomeOverview(queues, denials, alerts)
