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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    String,
    Table,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from azdev_ica.db.tables import PipelineEvent, PipelineRun, Signoff, UnauthorisedChange
from azdev_ica.domain.runs import deployment_failure

# The phases of a run's later events that spoil its deployment.
_SPOILING_PHASES = ("monitor", "verify", "rollback_initiated")


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


def spoiled(
    found: dict[int, list[tuple[datetime, str]]], run_pk: int, deployed_at: datetime
) -> str | None:
    """Why a deployment of `run_pk` at `deployed_at` is no longer good, or None."""
    return next((why for at, why in found.get(run_pk, ()) if at >= deployed_at), None)


_EVENT = cast(Table, PipelineEvent.__table__)
_RUN = cast(Table, PipelineRun.__table__)
_UNAUTHORISED = cast(Table, UnauthorisedChange.__table__)
_SIGNOFF = cast(Table, Signoff.__table__)
# Built once per shape (which filters are given), with bound parameters, on the tables (no
# ORM layer): SQLAlchemy reuses the compiled form for every call.
_HISTORY: dict[tuple[bool, bool, bool, bool], Any] = {}


def _history_statement(
    tenant: bool,
    stage: bool,
    digest_or_stage: bool,
    signoffs: bool = False,
    *,
    exprs: dict[str, Any] | None = None,
) -> Any:
    """The history's statement for the filters given; `exprs` replaces the bound parameters
    named by its keys with expressions (for a statement that reads it beside other facts)."""
    replaced = exprs or {}

    def bound(name: str) -> Any:
        return replaced[name] if name in replaced else bindparam(name, type_=String)

    event, run = _EVENT.c, _RUN.c
    deploys = (
        select(
            literal("deploy").label("kind"),
            event.id,
            event.run_pk,
            event.occurred_at,
            event.data,
            event.phase,
            event.event_id,
            run.tenant,
            run.stage,
            run.artifact_digest,
            run.run_key,
        )
        .select_from(_EVENT.join(_RUN, run.id == event.run_pk))
        .where(event.phase == "deploy")
    )
    deploy_runs = select(event.run_pk).where(event.phase == "deploy")
    filters = []
    if tenant:
        filters.append(event.target_tenant == bound("tenant"))
    if stage:
        filters.append(event.target_stage == bound("stage"))
    if digest_or_stage:
        filters.append(
            or_(event.target_digest == bound("digest"), event.target_stage == bound("other_stage"))
        )
    deploys = deploys.where(*filters)
    deploy_runs = deploy_runs.where(*filters)
    # What spoiled those runs' deployments and which of their deploys the gate never allowed,
    # in the same round trip (one statement, three kinds of rows).
    later = _EVENT.alias("later").c
    spoiling = select(
        literal("spoil"),
        later.id,
        later.run_pk,
        later.occurred_at,
        later.data,
        later.phase,
        later.event_id,
        null(),
        null(),
        null(),
        null(),
    ).where(
        later.run_pk.in_(deploy_runs),
        # Constants in the SQL, not a list parameter expanded at each execution: the gate's
        # facts statement (`promotion_rows`) is then compiled once for the driver.
        later.phase.in_([literal_column(f"'{phase}'") for phase in _SPOILING_PHASES]),
    )
    flagged_rows = select(
        literal("unauthorised"),
        _UNAUTHORISED.c.id,
        _UNAUTHORISED.c.run_pk,
        null(),
        null(),
        null(),
        _UNAUTHORISED.c.event_id,
        null(),
        null(),
        null(),
        null(),
    ).where(_UNAUTHORISED.c.run_pk.in_(deploy_runs))
    if not signoffs:
        return union_all(deploys, spoiling, flagged_rows)
    # The sign-offs given for a target and artifact (the promotion rules read them too): the
    # kind in the `phase` column.
    signoff = _SIGNOFF.c
    given = select(
        literal("signoff"),
        signoff.id,
        null(),
        null(),
        null(),
        signoff.kind,
        null(),
        null(),
        null(),
        null(),
        null(),
    ).where(
        signoff.tenant == bound("tenant"),
        signoff.stage == bound("signoff_stage"),
        signoff.artifact_digest == bound("digest"),
    )
    return union_all(deploys, spoiling, flagged_rows, given)


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
    history, not the fleet's. One statement reads the deployments, what spoiled them and
    which of them the gate never allowed."""
    shape = (tenant is not None, stage is not None, digest_or_stage is not None, False)
    query = _HISTORY.get(shape)
    if query is None:
        query = _HISTORY.setdefault(shape, _history_statement(*shape))
    values: dict[str, Any] = {}
    if tenant is not None:
        values["tenant"] = tenant
    if stage is not None:
        values["stage"] = stage
    if digest_or_stage is not None:
        values["digest"], values["other_stage"] = digest_or_stage
    return _records(list(session.execute(query, values).all()), tenant=tenant, stage=stage)


# The promotion rules' statement: the tenant's deployments of an artifact or to a stage, and
# the sign-offs given for the target and the artifact, in one round trip.
_PROMOTION = _history_statement(tenant=True, stage=False, digest_or_stage=True, signoffs=True)


def promotion_history(
    session: Session, *, tenant: str, stage: str, digest: str, other_stage: str
) -> tuple[list[DeploymentRecord], list[str]]:
    """`deployment_history(tenant=tenant, digest_or_stage=(digest, other_stage))` and the
    kinds of the sign-offs given for `tenant`, `stage` and `digest`, in one statement."""
    rows = session.execute(
        _PROMOTION,
        {"tenant": tenant, "digest": digest, "other_stage": other_stage, "signoff_stage": stage},
    ).all()
    kinds = [row.phase for row in rows if row.kind == "signoff"]
    return _records([row for row in rows if row.kind != "signoff"], tenant=tenant), kinds


class HistoryRow(NamedTuple):
    """A row of the history's statement (as `promotion_rows` returns them in JSON)."""

    kind: str
    id: int
    run_pk: int | None
    occurred_at: datetime | None
    data: Any
    phase: str | None
    event_id: str | None
    tenant: str | None
    stage: str | None
    artifact_digest: str | None
    run_key: str | None


def promotion_rows(*, tenant: Any, digest: Any, signoff_stage: Any) -> Any:
    """PostgreSQL: the rows `promotion_history` reads, as one JSON array of arrays (a scalar
    subquery, for a statement that reads them beside other facts): `tenant`, `digest` and
    `signoff_stage` are expressions of that statement; `other_stage` stays a parameter.
    Decode them with :func:`promotion_history_of`."""
    rows = _history_statement(
        tenant=True,
        stage=False,
        digest_or_stage=True,
        signoffs=True,
        exprs={"tenant": tenant, "digest": digest, "signoff_stage": signoff_stage},
    ).subquery("promotion_rows")
    return select(func.json_agg(func.json_build_array(*rows.c))).scalar_subquery()


def promotion_history_of(
    found: list[list[Any]] | None, *, tenant: str
) -> tuple[list[DeploymentRecord], list[str]]:
    """What `promotion_history` answers, from the rows `promotion_rows` read."""
    rows = []
    for kind, *rest in found or ():
        at = rest[2]
        if at is not None:
            at = datetime.fromisoformat(at).astimezone(UTC)
        rows.append(HistoryRow(kind, rest[0], rest[1], at, *rest[3:]))
    kinds = [row.phase or "" for row in rows if row.kind == "signoff"]
    return _records([row for row in rows if row.kind != "signoff"], tenant=tenant), kinds


def _records(
    rows: list[Any], *, tenant: str | None = None, stage: str | None = None
) -> list[DeploymentRecord]:
    """The deployments of the history statement's rows, oldest first."""
    events: list[Any] = []
    spoiling_rows: list[Any] = []
    flagged: set[tuple[int, str]] = set()
    for row in rows:
        if row.kind == "deploy":
            events.append(row)
        elif row.kind == "spoil":
            spoiling_rows.append(row)
        else:
            flagged.add((row.run_pk, row.event_id))
    events.sort(key=lambda r: (r.occurred_at, r.id))
    spoiling_rows.sort(key=lambda r: (r.occurred_at, r.id))
    found: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for row in spoiling_rows:
        if row.phase in ("monitor", "verify"):
            why = deployment_failure(row.phase, row.data)
            if why is not None:
                found[row.run_pk].append((row.occurred_at, why))
        else:
            found[row.run_pk].append((row.occurred_at, "rolled_back"))
    out = []
    for row in events:
        data = row.data or {}
        if data.get("status") not in ("succeeded", "failed"):
            continue
        target_tenant = data.get("tenant") or row.tenant
        target_stage = data.get("stage") or row.stage
        if target_tenant is None or target_stage is None:
            continue
        if tenant is not None and target_tenant != tenant:
            continue
        if stage is not None and target_stage != stage:
            continue
        succeeded = data.get("status") == "succeeded"
        out.append(
            DeploymentRecord(
                tenant=target_tenant,
                stage=target_stage,
                artifact_digest=data.get("artifact_digest") or row.artifact_digest,
                version=data.get("version"),
                run_pk=row.run_pk,
                run_key=row.run_key,
                deployed_at=row.occurred_at,
                event_pk=row.id,
                succeeded=succeeded,
                spoiled_by=spoiled(found, row.run_pk, row.occurred_at) if succeeded else None,
                authorised=(row.run_pk, row.event_id) not in flagged,
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
