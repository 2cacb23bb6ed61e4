"""Route matching at the cost of a string comparison for the routes a request cannot take.

Starlette's router asks every route in turn whether it matches the request, and a FastAPI
route's answer costs a look-up of FastAPI's included-router context, the route path of the
scope and a regular expression: a request for a route near the end of ICA's list (GET
/health, the console's pages) paid that for some 140 routes before its own (about a fifth of
the server's instructions for GET /health). `QuickMatchRoute` answers "no" at once when the
request's path is not its path (a route without parameters) or does not start with its path
up to the first parameter, and asks FastAPI otherwise: the same answers, in the same order.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope


class QuickMatchRoute(APIRoute):
    """An APIRoute that refuses a request whose path it cannot match before asking FastAPI
    (see the module). Made for flat routes (`api/app.py` builds them so): a route reached
    through an included router's prefix would be asked with a path it does not know."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        brace = self.path.find("{")
        self._literal = self.path if brace < 0 else None
        self._prefix = self.path if brace < 0 else self.path[:brace]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Behind a root_path the scope's path carries it: FastAPI's own matching knows how.
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if (
                path != self._literal
                if self._literal is not None
                else not path.startswith(self._prefix)
            ):
                return Match.NONE, {}
        return super().matches(scope)


def quick(route_class: type[APIRoute]) -> type[APIRoute]:
    """`route_class`, or QuickMatchRoute in place of FastAPI's own APIRoute."""
    return QuickMatchRoute if route_class is APIRoute else route_class
