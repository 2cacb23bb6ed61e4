"""The API contract made exact, so that a fuzzer can hold the server to its OpenAPI file.

- Every error answer is declared as what the server sends: `application/problem+json` with
  the `Problem` schema (FastAPI's own `HTTPValidationError` is never sent: validation errors
  are problems too).
- `securitySchemes`: an API key, personal token or OIDC token as a Bearer token; an API key as
  the Basic password (Azure DevOps checks can send nothing else); the console's session
  cookie. Public and provider-signed routes declare no security.
- Bounds in standard JSON Schema (`minimum`, `maximum`, ...): Pydantic writes `ge`/`le` for a
  bound placed on an annotated type inside a union, which no validator reads.
- A method a path does not have answers 405 with an `Allow` header naming the methods it has,
  also where a parametrised route would otherwise take the path (`GET /run/start` is not a
  run whose key is "start", and was a 422).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from azdev_ica.api.deps import PUBLIC, SIGNED, declared_permission
from azdev_ica.services.sessions import SESSION_COOKIE

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_CONTENT = {"application/problem+json": {"schema": PROBLEM_REF}}
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, a personal token, or a token from a trusted OIDC issuer",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "An API key as the password (the user name is ignored): for Azure "
        "DevOps checks, which can send nothing else",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The console's session (state-changing requests also need the "
        "session's X-CSRF-Token header and a same-site Origin)",
    },
}
AUTHENTICATED: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}, {"session": []}]


def _standard_bounds(node: Any) -> None:
    if isinstance(node, dict):
        for short, standard in _BOUNDS.items():
            if short in node and standard not in node:
                node[standard] = node.pop(short)
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


def _method_routes(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, frozenset[str], Any]]:
    """(path format, methods, route) of every route with methods, included routers flattened."""
    for route in iter_route_contexts(list(routes)):
        methods = route.methods
        path = route.path_format
        if methods and path:
            yield str(path), frozenset(methods), route


def _unauthenticated_operations(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path, methods, route in _method_routes(routes):
        open_route = isinstance(route.original_route, APIRoute) and declared_permission(
            route.dependant
        ) in (PUBLIC, SIGNED)
        if open_route:
            found.update((path, method.lower()) for method in methods)
    return found


def make_exact(document: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Rewrite FastAPI's generated document in place (see the module's docstring)."""
    open_operations = _unauthenticated_operations(routes)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                if str(status)[:1] in ("4", "5"):
                    response["content"] = copy.deepcopy(PROBLEM_CONTENT)
            open_operation = (path, method) in open_operations
            operation["security"] = [] if open_operation else copy.deepcopy(AUTHENTICATED)
    components = document.setdefault("components", {})
    schemas = components.get("schemas", {})
    if "HTTPValidationError" in schemas and "HTTPValidationError" not in str(document["paths"]):
        schemas.pop("HTTPValidationError")
        if "ValidationError" not in str(schemas):
            schemas.pop("ValidationError", None)
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    _standard_bounds(schemas)
    _standard_bounds(document.get("paths", {}))
    return document


def exact_openapi(app: Any) -> Callable[[], dict[str, Any]]:
    """A replacement for `app.openapi` that returns the exact document (built once)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from azdev_ica.api.event_contract import phases_and_links

            app.openapi_schema = make_exact(phases_and_links(generate()), app.routes)
        schema: dict[str, Any] = app.openapi_schema
        return schema

    return openapi


class MethodNotAllowedMiddleware:
    """405 with the right `Allow` for a method a path does not have.

    A path that is a route's literal path (no parameters) allows exactly the methods of the
    literal routes at that path, even where a parametrised route's pattern would also take
    it. Other paths: the union of the methods of every route whose pattern takes the path
    (Starlette names only the first such route's). A path no route takes passes on (404).
    """

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes
        self._literal: dict[str, frozenset[str]] | None = None
        self._patterned: list[tuple[re.Pattern[str], frozenset[str]]] = []

    def _tables(self) -> dict[str, frozenset[str]]:
        if self._literal is None:
            literal: dict[str, set[str]] = {}
            for path, methods, _ in _method_routes(self._routes()):
                regex, _, convertors = compile_path(path)
                if convertors:
                    self._patterned.append((regex, methods))
                else:
                    literal.setdefault(path, set()).update(methods)
            self._literal = {path: frozenset(methods) for path, methods in literal.items()}
        return self._literal

    def allowed(self, path: str) -> frozenset[str] | None:
        """The methods `path` has (None: no route takes it)."""
        literal = self._tables().get(path)
        if literal is not None:
            return literal
        methods: set[str] = set()
        for regex, route_methods in self._patterned:
            if regex.match(path):
                methods.update(route_methods)
        return frozenset(methods) or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            literal = self._tables().get(path)
            if literal is not None and method not in literal:
                await self._refuse(scope, receive, send, literal)
                return
            if literal is None:
                # Only a 405 from the router needs the union; look at the answer's status.
                await self.app(scope, receive, self._fixing_allow(send, path))
                return
        await self.app(scope, receive, send)

    def _fixing_allow(self, send: Send, path: str) -> Send:
        async def send_fixed(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = self.allowed(path)
                if methods:
                    headers = [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if name.lower() != b"allow"
                    ]
                    headers.append((b"allow", _allow(methods).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        return send_fixed

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, methods: frozenset[str]
    ) -> None:
        from starlette.requests import Request

        from azdev_ica.api.problems import answer_problem

        # A browser gets the same problem as a page, as from every other error.
        response = answer_problem(
            Request(scope),
            status=405,
            slug="method-not-allowed",
            title="Method not allowed",
            detail=f"{scope['path']} allows {_allow(methods)}",
            headers={"Allow": _allow(methods)},
        )
        await response(scope, receive, send)


def _allow(methods: Iterable[str]) -> str:
    return ", ".join(sorted(methods))
