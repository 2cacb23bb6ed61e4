"""RFC 9457 problem+json for every error: domain errors, validation, and the unexpected."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from azdev_ica.db.engine import UNAVAILABLE_RETRY_AFTER, database_unavailable
from azdev_ica.errors import PROBLEM_BASE, IcaError, ServiceUnavailable
from azdev_ica.web.render import error_page, wants_html

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Where AuditRefMiddleware leaves the request's committed audit references (scope state), so
# the last-resort handler, which runs outside that middleware, can still read them.
AUDIT_REFS_STATE = "ica_audit_refs"

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


answer_problem = _answer


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

    def _database(request: Request, exc: Exception) -> Response:
        if not database_unavailable(exc):
            return _unexpected(request, exc)
        # The reason goes to the log (without the statement's values: hide_parameters).
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(getattr(exc, "orig", None) or exc).__name__,
        )
        return _answer(
            request,
            status=503,
            slug=ServiceUnavailable.slug,
            title=ServiceUnavailable.title,
            detail="the database cannot be reached just now; repeat the request with the same "
            "Idempotency-Key after Retry-After seconds (a write that was recorded is answered "
            "with its record)",
            extensions={"retry_after_seconds": UNAVAILABLE_RETRY_AFTER},
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )

    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(SqlTimeoutError, _database)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # "Changed nothing" only when this request committed nothing (an error after a
        # commit, or in a later step, must not deny the write that was recorded).
        refs = request.scope.get("state", {}).get(AUDIT_REFS_STATE)
        detail = (
            "the error was logged; the request changed nothing"
            if refs is not None and not refs
            else "the error was logged; the request may have been recorded: repeat it with "
            "the same Idempotency-Key to learn its outcome"
        )
        return _answer(
            request,
            status=500,
            slug="internal",
            title="Internal error",
            detail=detail,
            # Answered outside the middleware that adds these to every other answer.
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )
