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


def install(app: FastAPI) -> None:
    """Mount the console's pages, its static files and the page headers on `app`."""
    app.add_middleware(PageHeadersMiddleware)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    install_step_up(app)
    templates.env.globals["console_nav"] = console_nav
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
    ):
        app.include_router(module.router)
