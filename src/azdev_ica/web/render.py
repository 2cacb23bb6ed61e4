"""Rendering console pages: one Jinja2 environment, the security headers every page gets, and
the friendly error page a browser sees instead of a problem+json body.

Pages never carry inline scripts or styles: the Content-Security-Policy allows only ICA's own
files (`/static/...`), so an injected `<script>` or `onclick=` does nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from azdev_ica.auth.roles import Permission

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"

# Vendored at pinned versions (their licences beside them); see docs/console.md.
HTMX = f"{STATIC_PREFIX}/vendor/htmx-2.0.11/htmx.min.js"
ECHARTS = f"{STATIC_PREFIX}/vendor/echarts-6.1.0/echarts.min.js"
SWAGGER_JS = f"{STATIC_PREFIX}/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_PREFIX}/vendor/swagger-ui-5.35.0/swagger-ui.css"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Swagger UI sets style attributes from its script: the API docs page alone allows them.
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-origin requests keep their Referer and Origin (Chromium sends `Origin: null` on a
    # form post from a `no-referrer` page); other sites learn nothing.
    "Referrer-Policy": "same-origin",
}

# The OpenID callback's URL carries the authorization code: no page reached from it, not even
# its error page, may send that URL on as a Referer.
NO_REFERRER_PATHS = frozenset({"/ui/auth/callback"})

templates = Jinja2Templates(directory=WEB_DIR / "templates")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def _duration(seconds: float | None) -> str:
    """A span in words a person reads at a glance: '3 h 20 min', '45 min', '2 d 4 h'."""
    if seconds is None:
        return ""
    total = int(abs(seconds)) // 60
    days, rest = divmod(total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def _money(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return ""
    return f"{minor / 100:,.2f} {currency or ''}".strip()


templates.env.filters["when"] = _when
templates.env.filters["duration"] = _duration
templates.env.globals.update(htmx=HTMX, echarts=ECHARTS)
templates.env.globals["money"] = _money


def wants_html(request: Request) -> bool:
    """A browser navigating (Accept names text/html); API clients get problem+json."""
    return "text/html" in request.headers.get("accept", "")


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A console page: the template `name` with `context`, the signed-in person's context
    (`principal`, `csrf_token`) when there is one, and the page headers."""
    signed_in = getattr(request.state, "web_session", None)
    principal = getattr(request.state, "principal", None)
    base: dict[str, Any] = {
        "principal": principal,
        # The nav's Administration link (accounts): shown to whoever may administer people.
        "nav_admin": principal is not None and principal.can(Permission.USER_ADMIN),
        "csrf_token": signed_in.csrf_token if signed_in is not None else None,
        "csrf_field": "csrf_token",
        "path": request.url.path,
    }
    base.update(context)
    response = templates.TemplateResponse(request, name, base, status_code=status)
    response.headers.update(PAGE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def redirect(location: str, headers: dict[str, str] | None = None) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    response.headers.update(PAGE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def error_page(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The browser's view of a problem: its title and detail in words, a way home, never a
    stack trace (the detail of an unexpected error is a fixed sentence)."""
    response = templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "title": title,
            "detail": detail,
            "principal": getattr(request.state, "principal", None),
            "csrf_token": None,
            "path": request.url.path,
        },
        status_code=status,
    )
    response.headers.update(PAGE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class PageHeadersMiddleware:
    """Every answer outside the JSON API gets the page headers it has not set itself (a
    redirect, a 404 page, the docs): no-store, the strict CSP, no framing, same-origin
    referrers. Static files are cached (their vendored paths carry the version)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC_PREFIX + "/")
        hide_referrer = path in NO_REFERRER_PATHS

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                if hide_referrer:
                    raw = [(n, v) for n, v in raw if n.lower() != b"referrer-policy"]
                    raw.append((b"referrer-policy", b"no-referrer"))
                present = {name.lower() for name, _ in raw}
                defaults = dict(PAGE_HEADERS)
                if static:
                    defaults["Cache-Control"] = "public, max-age=3600"
                for name, value in defaults.items():
                    if name.lower().encode() not in present:
                        raw.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)
