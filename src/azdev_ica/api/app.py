"""The application factory: `create_app(settings)`, no import-time globals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

import azdev_ica
from azdev_ica.api.audit_refs import AuditRefMiddleware
from azdev_ica.api.contract import MethodNotAllowedMiddleware, exact_openapi
from azdev_ica.api.hardening import JsonTextMiddleware, SecurityHeadersMiddleware
from azdev_ica.api.limits import BodyLimitMiddleware, DuplicateSlashMiddleware
from azdev_ica.api.problems import install_problem_handlers
from azdev_ica.api.routes import (
    approvals,
    audit,
    client,
    dr,
    health,
    incidents,
    inventory,
    metrics,
    observe,
    people,
    runs,
    ui,
)
from azdev_ica.api.routes import gates as gate_routes
from azdev_ica.api.routes import github as github_routes
from azdev_ica.api.routes import notifications as notification_routes
from azdev_ica.api.routes import policy as policy_routes
from azdev_ica.api.routes import promotion as promotion_routes
from azdev_ica.api.routes import report as report_routes
from azdev_ica.api.routing import quick
from azdev_ica.api.schemas import Problem
from azdev_ica.auth.jwt_bearer import JwtVerifier
from azdev_ica.auth.signin_guard import SignInGuard
from azdev_ica.clock import Clock, SystemClock
from azdev_ica.db.engine import Database
from azdev_ica.observe.instruments import Instruments, RequestMetricsMiddleware
from azdev_ica.services.context import LedgerConfig, ServiceContext
from azdev_ica.settings import Settings
from azdev_ica.web import pages as console

MAX_BODY_BYTES = 256 * 1024

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_PROBLEM, "description": "The body is not valid JSON"},
    401: {**_PROBLEM, "description": "No valid credentials"},
    403: {**_PROBLEM, "description": "The caller's role or tenant scope does not allow this"},
    404: {**_PROBLEM, "description": "Not found (or outside the caller's tenant scope)"},
    409: {**_PROBLEM, "description": "Conflicts with the recorded state"},
    413: {**_PROBLEM, "description": "The body is larger than the limit"},
    415: {**_PROBLEM, "description": "The body is not sent as application/json"},
    422: {**_PROBLEM, "description": "The request is not valid"},
    503: {
        **_PROBLEM,
        "description": "The database is briefly unavailable: repeat the request with the same "
        "Idempotency-Key after Retry-After seconds",
    },
}


def _operation_id(route: APIRoute) -> str:
    return route.name


# The API's routers, in matching order.
API_ROUTERS = (
    runs.router,
    notification_routes.router,  # before approvals: /approval/sla
    approvals.router,
    audit.router,
    people.router,
    gate_routes.router,
    incidents.router,
    dr.router,
    metrics.router,
    inventory.router,
    promotion_routes.router,
    github_routes.router,  # signed by GitHub, not by a caller's key
    policy_routes.router,
    report_routes.router,
)


def _flat(
    routers: Iterable[APIRouter],
    *,
    prefix: str = "",
    responses: dict[int | str, dict[str, Any]] | None = None,
    include_in_schema: bool = True,
) -> list[BaseRoute]:
    """The routes of `routers` as routes of their own under `prefix`, as `include_router`
    made them before FastAPI 0.16x: each built once, at once. FastAPI now keeps an included
    router as a lazy branch that builds its routes on an app's first request (0.4-0.8 s of
    CPU for ICA's, per app) and walks its branches twice on every request (the match, then the
    handling, each asking every branch whether its routes changed): about a fifth of the CPU
    of a small request. Flat routes match as Starlette's always did, one pattern each."""
    holder = APIRouter(generate_unique_id_function=_operation_id)
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):  # none today; refuse rather than drop one
                raise TypeError(f"cannot flatten {route!r} of {router!r}")
            holder.add_api_route(
                prefix + route.path,
                route.endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=list(route.tags),
                dependencies=list(route.dependencies),
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses={**(responses or {}), **route.responses},
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                response_model_include=route.response_model_include,
                response_model_exclude=route.response_model_exclude,
                response_model_by_alias=route.response_model_by_alias,
                response_model_exclude_unset=route.response_model_exclude_unset,
                response_model_exclude_defaults=route.response_model_exclude_defaults,
                response_model_exclude_none=route.response_model_exclude_none,
                include_in_schema=route.include_in_schema and include_in_schema,
                response_class=route.response_class,
                name=route.name,
                route_class_override=quick(type(route)),
                callbacks=route.callbacks,
                openapi_extra=route.openapi_extra,
                generate_unique_id_function=route.generate_unique_id_function,
            )
    return holder.routes


@cache
def _api_routes() -> tuple[BaseRoute, ...]:
    """The API's routes, the health and metrics probes, the client download and the sign-in
    pages, built once per process and shared by every app made in it (a test's, a
    replica's). Nothing in them is per app: the routes reach their settings and services
    through `request.app.state`, and ICA uses no dependency overrides (the shared routes have
    no override provider)."""
    return (
        *_flat(API_ROUTERS, prefix="/api/v1/azdev", responses=COMMON_RESPONSES),
        # The seed's unversioned paths answer as aliases of v1 (kept out of the OpenAPI file).
        *_flat(
            API_ROUTERS, prefix="/api/azdev", responses=COMMON_RESPONSES, include_in_schema=False
        ),
        *_flat((health.router, observe.router, client.router, ui.router)),
    )


@cache
def _console_routes() -> tuple[BaseRoute, ...]:
    """The console's pages, built once per process (as `_api_routes`)."""
    return tuple(_flat(console.ROUTERS))


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the ICA application for `settings` (tests pass their own database and clock)."""
    db = database or Database.from_url(
        settings.resolved_database_url(),
        pool_size=settings.db_pool_size,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )
    ctx = ServiceContext(
        db=db,
        clock=clock or SystemClock(),
        pepper=settings.pepper(),
        ledger=LedgerConfig.from_settings(settings),
        public_url=settings.resolved_public_url(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The sealer runs beside the server; of all processes one seals at a time (a lease).
        sealer = None
        if settings.ledger_sealer:
            from azdev_ica.jobs.sealer import Sealer

            sealer = Sealer(ctx).start()
        app.state.sealer = sealer
        # Jobs (outbox delivery, approval SLA, expiries) likewise, each under its own lease.
        scheduler = None
        if settings.jobs_scheduler:
            from azdev_ica.jobs.scheduler import Scheduler

            scheduler = Scheduler(ctx, settings).start()
        app.state.scheduler = scheduler
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            if sealer is not None:
                sealer.stop()
            instruments.close()

    app = FastAPI(
        lifespan=lifespan,
        title="ICA: deployment governance",
        version=azdev_ica.__version__,
        summary="Run ledger, dual approval gates and a tamper-evident audit trail.",
        generate_unique_id_function=_operation_id,
        # /docs is the console's own page over vendored Swagger UI (works offline, strict CSP).
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "runs", "description": "The run ledger (seed 000 §1.3)"},
            {"name": "approvals", "description": "Dual approval (seed 000 §1.4)"},
            {
                "name": "gates",
                "description": "Gate, deployment locks, emergency overrides (seed 000 §5.1)",
            },
            {"name": "audit", "description": "The tamper-evident audit ledger (seed 000 §1.5, §4)"},
            {"name": "health", "description": "Liveness and readiness"},
        ],
    )
    app.state.settings = settings
    app.state.ctx = ctx
    app.state.instruments = instruments = Instruments()
    app.state.sealer = None
    app.state.jwt_verifier = JwtVerifier(settings.oidc_trust, clock=app.state.ctx.clock)
    app.state.signin_guard = SignInGuard.from_settings(settings)
    install_problem_handlers(app)
    # Innermost first: JSON text is checked on a body the size limit already bounds.
    app.add_middleware(JsonTextMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(AuditRefMiddleware)  # the ICA-Audit-Ref header of writes
    # 405 with the right Allow, before a parametrised route takes a literal path.
    app.add_middleware(MethodNotAllowedMiddleware, routes=lambda: app.routes)
    app.add_middleware(DuplicateSlashMiddleware)  # `//api/...` from a check's URL + suffix
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost: every answer counts, including those the middlewares above give.
    app.add_middleware(RequestMetricsMiddleware, instruments=instruments)

    # The routes are built once per process and shared by every app made in it (below).
    app.router.routes.extend(_api_routes())
    ui.install_ui(app)
    console.install(app)
    app.router.routes.extend(_console_routes())
    app.openapi = exact_openapi(app)  # type: ignore[method-assign]
    return app
