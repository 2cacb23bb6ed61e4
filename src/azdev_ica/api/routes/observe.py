"""`GET /metrics`: Prometheus text for monitoring (docs/observe.md).

Behind its own permission, `metrics:read`, held by the `azdev_monitoring` role (a monitoring
system's API key: it reads nothing else) and by administrators. The metrics cover every
tenant, so the grant must reach all tenants. Served on the API's own address: Prometheus
sends the key as a bearer token (`authorization.credentials_file`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.schemas import Problem
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.errors import Forbidden
from azdev_ica.observe.instruments import CONTENT_TYPE

router = APIRouter(tags=["health"])

Monitor = Annotated[Principal, Depends(require(Permission.METRICS_READ))]
_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text exposition format)",
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
        },
        401: {**_PROBLEM, "description": "No valid credentials"},
        403: {**_PROBLEM, "description": "No metrics:read grant reaching every tenant"},
    },
)
def metrics(request: Request, ctx: Ctx, principal: Monitor) -> Response:
    """Requests, errors and latency per route; gate decisions; and, read from the database at
    this scrape, approvals and their SLA, lock queues, the ledger, witnesses, jobs, the outbox
    and pipeline failure streaks. Counters add up every worker process of `ica serve`."""
    if principal.scope(Permission.METRICS_READ) is not None:
        raise Forbidden("metrics cover every tenant: reading them needs an all-tenants grant")
    body = request.app.state.instruments.exposition(ctx)
    return Response(content=body, media_type=CONTENT_TYPE)
