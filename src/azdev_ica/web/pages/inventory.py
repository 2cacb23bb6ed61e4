"""Inventory: tenants x stages, what runs in each (version, short digest, age, who approved
it), unauthorised deploys marked (as `queries/deployments.py` flags them); a cell opens that
target's deployment history. Read with `queries.inventory` and `queries.deployments` and the
caller's principal (`run:read`, as `GET /inventory`); a target outside the caller's
tenants is a 404 like an absent one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import NoPolicy, NotFound
from azdev_ica.queries.deployments import DeploymentRecord, deployment_history
from azdev_ica.queries.inventory import Deployed, inventory
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]
TargetPart = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]


def short_digest(digest: str | None) -> str:
    """`sha256:` and the first 12 hex digits: enough to tell artifacts apart at a glance."""
    if not digest:
        return ""
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest[:19]


@dataclass(frozen=True)
class Cell:
    tenant: str
    stage: str
    deployed: Deployed | None
    age_seconds: float | None
    digest: str
    approvers: str
    unauthorised: bool

    @property
    def history_url(self) -> str:
        return f"/inventory/{self.tenant}/{self.stage}"


@dataclass(frozen=True)
class Grid:
    tenants: list[str]
    stages: list[str]
    rows: list[list[Cell]] = field(default_factory=list)


def _axes(ctx: Ctx, session: Session, principal: Principal, items: list[Deployed]) -> Grid:
    tenants: list[str] = []
    stages: list[str] = []
    try:
        policy = ctx.policies.active(session)
        tenants = [t for t in sorted(policy.tenants) if principal.can_for(Permission.RUN_READ, t)]
        stages = [stage.name for stage in policy.stages]
    except NoPolicy:
        pass
    for item in items:
        if item.tenant not in tenants:
            tenants.append(item.tenant)
        if item.stage not in stages:
            stages.append(item.stage)
    return Grid(tenants=tenants, stages=stages)


@router.get("/inventory", dependencies=[Depends(login_redirect)])
def inventory_page(request: Request, ctx: Ctx, principal: Reader) -> Response:
    now = ctx.clock.now()
    with ctx.read() as session:
        items = inventory(session, principal=principal)
        grid = _axes(ctx, session, principal, items)
    by_target = {(item.tenant, item.stage): item for item in items}
    for tenant in grid.tenants:
        row = []
        for stage in grid.stages:
            item = by_target.get((tenant, stage))
            row.append(
                Cell(
                    tenant=tenant,
                    stage=stage,
                    deployed=item,
                    age_seconds=(now - item.deployed_at).total_seconds() if item else None,
                    digest=short_digest(item.artifact_digest) if item else "",
                    approvers=", ".join(s["login"] for s in item.approved_by) if item else "",
                    unauthorised=item is not None and not item.authorised,
                )
            )
        grid.rows.append(row)
    return page(request, "inventory.html", {"grid": grid})


@dataclass(frozen=True)
class HistoryRow:
    record: DeploymentRecord
    digest: str
    unauthorised: bool

    @property
    def outcome(self) -> str:
        if not self.record.succeeded:
            return "failed"
        return "undone" if self.record.spoiled_by else "succeeded"


@router.get("/inventory/{tenant}/{stage}", dependencies=[Depends(login_redirect)])
def target_history(
    request: Request, ctx: Ctx, principal: Reader, tenant: TargetPart, stage: TargetPart
) -> Response:
    if not principal.can_for(Permission.RUN_READ, tenant):
        raise NotFound(f"no deployments of {tenant}/{stage}")
    with ctx.read() as session:
        history = deployment_history(session, tenant=tenant, stage=stage)
    rows = [
        HistoryRow(
            record=record,
            digest=short_digest(record.artifact_digest),
            unauthorised=not record.authorised,
        )
        for record in reversed(history)
    ]
    return page(
        request,
        "inventory_target.html",
        {"tenant": tenant, "stage": stage, "rows": rows},
    )
