"""`/` and the API's interactive documentation, served from vendored files (works offline)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from azdev_ica.api.deps import public
from azdev_ica.web.render import DOCS_CSP, SWAGGER_CSS, SWAGGER_JS, page, redirect

router = APIRouter(include_in_schema=False)


@router.get("/", dependencies=[Depends(public())])
def root() -> Response:
    """The console's home page (which sends a stranger to the sign-in page)."""
    return redirect("/ui/")


@router.get("/docs", dependencies=[Depends(public())])
def api_docs(request: Request) -> Response:
    """Swagger UI over /openapi.json; its script and styles are ICA's own static files."""
    return page(
        request,
        "docs.html",
        {"swagger_js": SWAGGER_JS, "swagger_css": SWAGGER_CSS},
        headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"},
    )
