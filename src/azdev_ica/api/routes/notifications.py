"""Approval SLA figures for reports (seed 000 §1.4: decided within 4 hours).

Registered before the approvals router, so `/approval/sla` is not read as `/approval/{id}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Instant
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import OutOfScope, ValidationProblem
from azdev_ica.services.approval_sla import sla_compliance

router = APIRouter(tags=["approvals"])

Reader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]


class SlaComplianceOut(BaseModel):
    since: datetime | None
    until: datetime | None
    tenants: list[str] | None = Field(description="The tenants counted (null: every tenant)")
    within: int = Field(description="Requests approved or rejected by their SLA")
    breached: int = Field(
        description="Decided late, expired, withdrawn after the SLA or still open past it"
    )
    not_counted: int = Field(description="Still open before their SLA, or withdrawn before it")
    total: int
    compliance: float | None = Field(description="within / total, 0..1; null when total is 0")


@router.get("/approval/sla", response_model=SlaComplianceOut)
def approval_sla(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] = None,
    since: Annotated[Instant | None, Query(description="Requests made at or after")] = None,
    until: Annotated[Instant | None, Query(description="Requests made before")] = None,
) -> SlaComplianceOut:
    """The share of approval requests decided within their SLA, in the caller's tenants."""
    if since is not None and until is not None and until <= since:
        raise ValidationProblem("until must be after since")
    scope = principal.scope(Permission.APPROVAL_READ)
    tenants: list[str] | None
    if tenant is not None:
        if scope is not None and tenant not in scope:
            raise OutOfScope(f"tenant {tenant} is outside your scope")
        tenants = [tenant]
    else:
        tenants = None if scope is None else sorted(scope)
    figure = sla_compliance(ctx, tenants=tenants, since=since, until=until)
    return SlaComplianceOut(
        since=since,
        until=until,
        tenants=tenants,
        within=figure.within,
        breached=figure.breached,
        not_counted=figure.not_counted,
        total=figure.total,
        compliance=figure.compliance,
    )
