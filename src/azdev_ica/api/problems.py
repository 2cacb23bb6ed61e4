"""RFC 9457 problem+json for every error: domain errors, validation, and the unexpected."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from azdev_ica.errors import PROBLEM_BASE, IcaError
from azdev_ica.web.render import error_page, wants_html

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_SLUGS = {
    400: ("malformed", "The request body could not be read"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Send application/json"),
}


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    instance: str | None,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(jsonable_encoder(extensions or {}))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _answer(
    request: Request,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """problem+json for API clients; for a browser (Accept: text/html) the same problem as a
    page with its title and detail and a way home."""
    if wants_html(request):
        return error_page(request, status=status, title=title, detail=detail, headers=headers)
    return problem_response(
        status=status,
        slug=slug,
        title=title,
        detail=detail,
        instance=request.url.path,
        extensions=extensions,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(IcaError)
    def _domain(request: Request, exc: IcaError) -> Response:
        headers: dict[str, str] = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="ICA", Basic realm="ICA"'
        retry_after = exc.extensions.get("retry_after_seconds")
        if isinstance(retry_after, int) and retry_after > 0:
            headers["Retry-After"] = str(retry_after)
        return _answer(
            request,
            status=exc.status,
            slug=exc.slug,
            title=exc.title,
            detail=exc.detail,
            extensions=exc.extensions,
            headers=headers or None,
        )

    @app.exception_handler(RequestValidationError)
    def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        malformed = False
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                malformed = True
            location = [str(part) for part in error.get("loc", ())]
            errors.append(
                {
                    "pointer": "/" + "/".join(location[1:]),
                    "in": location[0] if location else "",
                    "detail": error.get("msg", ""),
                }
            )
        if malformed:
            return _answer(
                request,
                status=400,
                slug="malformed",
                title="The request body could not be read",
                detail="the body is not valid JSON",
            )
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
        return _answer(
            request,
            status=422,
            slug="validation",
            title="The request is not valid",
            detail=summary,
            extensions={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        return _answer(
            request,
            status=exc.status_code,
            slug=slug,
            title=title,
            detail=str(exc.detail) if exc.detail else None,
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _answer(
            request,
            status=500,
            slug="internal",
            title="Internal error",
            detail="the error was logged; the request changed nothing",
            # Answered outside the middleware that adds these to every other answer.
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )
