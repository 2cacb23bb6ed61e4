"""The run ledger: `run/start`, `run/event`, `run/finish` and reading runs (seed 000 §1.3, §3.2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from azdev_ica.api.deps import Ctx, IdempotencyKey, OneHandOffRoute, json_body, require
from azdev_ica.api.schemas import (
    AttemptOut,
    EventOut,
    EventRecordedOut,
    RollbackOut,
    RunDetailOut,
    RunEventRequest,
    RunFinishRequest,
    RunKey,
    RunOut,
    RunPage,
    RunStartRequest,
    Str,
)
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.rows import EventRow, RunRow
from azdev_ica.db.tables import PipelineEvent, PipelineRun
from azdev_ica.domain.runs import Provider
from azdev_ica.errors import ValidationProblem
from azdev_ica.queries.runs import RunFilter, get_run, list_runs
from azdev_ica.services.idempotency import IdempotencyRequest
from azdev_ica.services.runs import (
    FinishRun,
    RecordEvent,
    StartRun,
    finish_run,
    record_event,
    start_run,
)

router = APIRouter(tags=["runs"], route_class=OneHandOffRoute)

JSON = "application/json"

Writer = Annotated[Principal, Depends(require(Permission.RUN_WRITE))]
Reader = Annotated[Principal, Depends(require(Permission.RUN_READ))]

_WRITE_RESPONSES: dict[int | str, dict[str, str]] = {
    200: {"description": "Already recorded: the existing record (a retry, never a duplicate)"},
    201: {"description": "Recorded"},
}


def run_out(run: PipelineRun | RunRow) -> RunOut:
    return RunOut.model_validate(run, from_attributes=True)


def event_out(event: PipelineEvent | EventRow) -> EventOut:
    return EventOut.model_validate(event, from_attributes=True)


def _answer(model: BaseModel, status_code: int) -> Response:
    """`model` encoded once, here. Returned as a model, FastAPI would validate it again against
    the route's response model (for a plain `def` route in a worker thread of its own: one more
    hand-off per request) and then encode it. The response model stays declared on the route
    for the contract (the OpenAPI file)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON)


def _idempotency(
    principal: Principal, key: str | None, operation: str, body: BaseModel
) -> IdempotencyRequest | None:
    if key is None:
        return None
    return IdempotencyRequest.of(
        principal=principal.id,
        key=key,
        operation=operation,
        body=body.model_dump(mode="json"),
    )


@router.post(
    "/run/start",
    status_code=201,
    response_model=RunOut,
    responses=_WRITE_RESPONSES,
    dependencies=[Depends(json_body)],
)
def run_start(
    body: RunStartRequest,
    ctx: Ctx,
    principal: Writer,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Record the start of a pipeline run (creates `azdev_pipeline_run`)."""
    outcome = start_run(
        ctx,
        principal=principal,
        command=StartRun(**body.model_dump()),
        idempotency=_idempotency(principal, idempotency_key, "run.start", body),
    )
    return _answer(run_out(outcome.run), 201 if outcome.created else 200)


@router.post(
    "/run/event",
    status_code=201,
    response_model=EventRecordedOut,
    responses=_WRITE_RESPONSES,
    dependencies=[Depends(json_body)],
)
def run_event(
    body: RunEventRequest,
    ctx: Ctx,
    principal: Writer,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Append a phase marker (build, test, scan, approval, deploy, verify, rollback, monitor)."""
    outcome = record_event(
        ctx,
        principal=principal,
        command=RecordEvent(
            run_key=body.the_run_key,
            phase=body.the_phase,
            attempt=body.attempt,
            event_id=body.event_id,
            occurred_at=body.occurred_at,
            data=body.data,
        ),
        idempotency=_idempotency(principal, idempotency_key, "run.event", body),
    )
    answer = EventRecordedOut(
        run=run_out(outcome.run),
        event=event_out(outcome.event),
        deployment_failed=outcome.rollback is not None,
        rollback=RollbackOut(**outcome.rollback) if outcome.rollback is not None else None,
    )
    return _answer(answer, 201 if outcome.created else 200)


@router.post("/run/finish", response_model=RunOut, dependencies=[Depends(json_body)])
def run_finish(
    body: RunFinishRequest,
    ctx: Ctx,
    principal: Writer,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Close an attempt of a run with success, failed or cancelled (or a provider's spelling)."""
    outcome = finish_run(
        ctx,
        principal=principal,
        command=FinishRun(
            run_key=body.run_key,
            status=body.status,
            attempt=body.attempt,
            end_time=body.end_time,
        ),
        idempotency=_idempotency(principal, idempotency_key, "run.finish", body),
    )
    return _answer(run_out(outcome.run), 200)


@router.get("/run/{run_key}", response_model=RunDetailOut)
def run_detail(run_key: RunKey, ctx: Ctx, principal: Reader) -> RunDetailOut:
    """One run with its attempts and events."""
    with ctx.read() as session:
        detail = get_run(session, run_key=run_key, principal=principal)
        return RunDetailOut(
            **run_out(detail.run).model_dump(),
            attempts=[AttemptOut.model_validate(a, from_attributes=True) for a in detail.attempts],
            events=[event_out(event) for event in detail.events],
        )


@router.get("/runs", response_model=RunPage)
def runs_list(
    ctx: Ctx,
    principal: Reader,
    tenant: Annotated[Str | None, Query(max_length=32)] = None,
    stage: Annotated[Str | None, Query(max_length=32)] = None,
    status: Literal["running", "success", "failed", "cancelled"] | None = None,
    provider: Provider | None = None,
    pipeline_name: Annotated[Str | None, Query(max_length=200)] = None,
    branch: Annotated[Str | None, Query(max_length=400)] = None,
    started_after: Annotated[
        str | None, Query(description="RFC 3339 time with offset", max_length=40)
    ] = None,
    started_before: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Str | None, Query(max_length=200)] = None,
) -> RunPage:
    """Runs, newest first, filtered; follow `next_cursor` for more."""
    filters = RunFilter(
        tenant=tenant,
        stage=stage,
        status=status,
        provider=provider.value if provider else None,
        pipeline_name=pipeline_name,
        branch=branch,
        started_after=_aware(started_after, "started_after"),
        started_before=_aware(started_before, "started_before"),
    )
    with ctx.read() as session:
        rows, next_cursor = list_runs(
            session, principal=principal, filters=filters, limit=limit, cursor=cursor
        )
        return RunPage(items=[run_out(row) for row in rows], next_cursor=next_cursor)


def _aware(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationProblem(f"{name}: not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValidationProblem(f"{name}: give a time zone offset (e.g. Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationProblem(f"{name}: the time is out of range") from None
