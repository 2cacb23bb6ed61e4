"""Runs: a filterable, paginated list (pipeline, tenant, stage, status, time), read with
`queries.runs.list_runs` and the caller's principal, as `GET /runs` of the API. Each run links
to its page `/runs/{key}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.queries.runs import RunFilter, list_runs
from azdev_ica.web.pages.forms import day, day_end, day_start, field, next_page
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]

STATUSES = ("running", "success", "failed", "cancelled")
PAGE_SIZE = 50


@router.get("/runs", dependencies=[Depends(login_redirect)])
def runs_page(request: Request, ctx: Ctx, principal: Reader) -> Response:
    since, until = day(request, "from"), day(request, "to")
    filters = RunFilter(
        tenant=field(request, "tenant"),
        stage=field(request, "stage"),
        status=field(request, "status", choices=STATUSES),
        pipeline_name=field(request, "pipeline"),
        started_after=day_start(since),
        started_before=day_end(until),
    )
    with ctx.read() as session:
        rows, cursor = list_runs(
            session,
            principal=principal,
            filters=filters,
            limit=PAGE_SIZE,
            cursor=field(request, "cursor"),
        )
    return page(
        request,
        "runs.html",
        {
            "runs": rows,
            "filters": filters,
            "since": since,
            "until": until,
            "statuses": STATUSES,
            "pager": next_page(request, cursor),
        },
    )
