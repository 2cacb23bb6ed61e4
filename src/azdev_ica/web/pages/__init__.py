"""The console's pages. Each module holds one area's routes (thin: read through `queries/`,
write through `services/`, render through `web.render.page`); `install` wires them into the
app with the static files and the page headers (docs/console.md)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from azdev_ica.web.nav import console_nav
from azdev_ica.web.pages import (
    account,
    admin,
    approvals,
    audit,
    core,
    dashboards,
    home,
    incidents,
    inventory,
    notifications,
    policy,
    reports,
    run_detail,
    runs,
)
from azdev_ica.web.render import STATIC_DIR, STATIC_PREFIX, PageHeadersMiddleware, templates
from azdev_ica.web.stepup import install_step_up

# Each area's routes, in matching order (the app factory builds them once per process).
ROUTERS = tuple(
    module.router
    for module in (
        core,
        home,
        account,
        admin,
        approvals,
        runs,
        run_detail,  # /runs/{key} and /overrides/{id}
        inventory,
        dashboards,
        audit,
        incidents,
        policy,
        reports,
        notifications,
    )
)


def install(app: FastAPI) -> None:
    """The static files, the step-up answer and the page headers on `app`; the pages
    themselves (`ROUTERS`) are added after it by the app factory."""
    app.add_middleware(PageHeadersMiddleware)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    install_step_up(app)
    templates.env.globals["console_nav"] = console_nav
