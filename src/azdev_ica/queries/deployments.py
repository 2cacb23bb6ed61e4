"""Deployments as pipelines reported them, and which of them are good.

A deployment is a `deploy` event that says how it ended (`succeeded` or `failed`); its
target is the event's `tenant`/`stage`, else the run's; its artifact is the event's digest,
else the run's. A succeeded deployment stops being good when, later on the same run:

- monitoring reported a failure trigger (`monitor` event with `trigger` error_rate — a 5xx
  rate over 5 % —, crash_loop or control_plane_unreachable): the deployment is failed;
- post-deploy verification failed (`verify` event with `status: failed`, `passed: false` or
  a check not passed): the deployment is failed;
- a rollback began (`rollback_initiated`): the deployment was rolled back.

A deployment the gate never allowed (flagged in `azdev_unauthorised_change`) is recorded as
what it is, unauthorised, and is never good: it never passes a stage for promotion, is never
a rollback's last good version, and the inventory marks it.

The promotion rules (a version passed a stage), the rollback rule (the last good version of
a target) and the inventory read this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from azdev_ica.db.tables import PipelineEvent, PipelineRun, UnauthorisedChange
from azdev_ica.domain.runs import deployment_failure


@dataclass(frozen=True)
class DeploymentRecord:
    tenant: str
    stage: str
    artifact_digest: str | None
    version: str | None
    run_pk: int
    run_key: str
    deployed_at: datetime
    event_pk: int
    succeeded: bool
    # Why a succeeded deployment is not good: "monitor:<trigger>", "verify:failed" or
    # "rolled_back".
    spoiled_by: str | None = None
    # False for a deploy the gate never allowed (an unauthorised change).
    authorised: bool = True

    @property
    def good(self) -> bool:
        return self.succeeded and self.authorised and self.spoiled_by is None


def spoilers(session: Session, run_pks: Iterable[int]) -> dict[int, list[tuple[datetime, str]]]:
    """Per run: the moments a later event spoiled its deployments, with why."""
    pks = sorted(set(run_pks))
    found: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    if not pks:
        return found
    rows = session.execute(
        select(
            PipelineEvent.run_pk, PipelineEvent.phase, PipelineEvent.occurred_at, PipelineEvent.data
        )
        .where(
            PipelineEvent.run_pk.in_(pks),
            PipelineEvent.phase.in_(("monitor", "verify", "rollback_initiated")),
        )
        .order_by(PipelineEvent.occurred_at, PipelineEvent.id)
    )
    for run_pk, phase, occurred_at, data in rows:
        if phase in ("monitor", "verify"):
            why = deployment_failure(phase, data)
            if why is not None:
                found[run_pk].append((occurred_at, why))
        else:
            found[run_pk].append((occurred_at, "rolled_back"))
    return found


def unauthorised_events(session: Session, run_pks: Iterable[int]) -> set[tuple[int, str]]:
    """The deploy events of these runs that the gate never allowed, as (run_pk, event_id)."""
    pks = sorted(set(run_pks))
    if not pks:
        return set()
    rows = session.execute(
        select(UnauthorisedChange.run_pk, UnauthorisedChange.event_id).where(
            UnauthorisedChange.run_pk.in_(pks)
        )
    )
    return {(run_pk, event_id) for run_pk, event_id in rows}


def spoiled(
    found: dict[int, list[tuple[datetime, str]]], run_pk: int, deployed_at: datetime
) -> str | None:
    """Why a deployment of `run_pk` at `deployed_at` is no longer good, or None."""
    return next((why for at, why in found.get(run_pk, ()) if at >= deployed_at), None)


def deployment_history(
    session: Session,
    *,
    tenant: str | None = None,
    stage: str | None = None,
    digest_or_stage: tuple[str, str] | None = None,
) -> list[DeploymentRecord]:
    """Every finished deployment (of `tenant` and `stage` when given), oldest first.

    `digest_or_stage` = (digest, stage) narrows to deployments of that artifact or to that
    stage (what the promotion rules read: where the artifact went, what production runs). The
    filters use the deploy events' indexed target columns, so the cost follows one target's
    history, not the fleet's."""
    query = (
        select(PipelineEvent, PipelineRun)
        .join(PipelineRun, PipelineRun.id == PipelineEvent.run_pk)
        .where(PipelineEvent.phase == "deploy")
    )
    if tenant is not None:
        query = query.where(PipelineEvent.target_tenant == tenant)
    if stage is not None:
        query = query.where(PipelineEvent.target_stage == stage)
    if digest_or_stage is not None:
        digest, other_stage = digest_or_stage
        query = query.where(
            or_(
                PipelineEvent.target_digest == digest,
                PipelineEvent.target_stage == other_stage,
            )
        )
    rows = session.execute(query.order_by(PipelineEvent.occurred_at, PipelineEvent.id)).all()
    picked: list[tuple[PipelineEvent, PipelineRun, str, str]] = []
    for event, run in rows:
        data = event.data or {}
        if data.get("status") not in ("succeeded", "failed"):
            continue
        target_tenant = data.get("tenant") or run.tenant
        target_stage = data.get("stage") or run.stage
        if target_tenant is None or target_stage is None:
            continue
        if tenant is not None and target_tenant != tenant:
            continue
        if stage is not None and target_stage != stage:
            continue
        picked.append((event, run, target_tenant, target_stage))
    found = spoilers(session, (run.id for _, run, _, _ in picked))
    flagged = unauthorised_events(session, (run.id for _, run, _, _ in picked))
    out = []
    for event, run, target_tenant, target_stage in picked:
        data = event.data or {}
        succeeded = data.get("status") == "succeeded"
        out.append(
            DeploymentRecord(
                tenant=target_tenant,
                stage=target_stage,
                artifact_digest=data.get("artifact_digest") or run.artifact_digest,
                version=data.get("version"),
                run_pk=run.id,
                run_key=run.run_key,
                deployed_at=event.occurred_at,
                event_pk=event.id,
                succeeded=succeeded,
                spoiled_by=spoiled(found, run.id, event.occurred_at) if succeeded else None,
                authorised=(run.id, event.event_id) not in flagged,
            )
        )
    return out


def last_good(
    history: list[DeploymentRecord], *, tenant: str, stage: str
) -> DeploymentRecord | None:
    """The version to roll `tenant`/`stage` back to: the newest good deployment before the
    newest deployment of the target, with another artifact than that newest one."""
    target = [d for d in history if (d.tenant, d.stage) == (tenant, stage)]
    if not target:
        return None
    current = target[-1]
    for record in reversed(target[:-1]):
        if record.good and record.artifact_digest != current.artifact_digest:
            return record
    return None
