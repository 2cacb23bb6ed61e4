"""Route matching (api/routing.py): every flat route refuses a path it cannot match with a
string comparison, and answers every request exactly as FastAPI's own matching does."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match

from azdev_ica.api.app import _api_routes, _console_routes
from azdev_ica.api.routing import QuickMatchRoute

METHODS = ("GET", "POST", "DELETE")


def _paths(routes: list[APIRoute]) -> list[str]:
    """Each route's own path with its parameters filled in, and near misses of it."""
    found = {"/", "/nothing", "/api/v1/azdev", "/api/v1/azdev/", "/health/"}
    for route in routes:
        filled = re.sub(r"\{[^}]+\}", "x1", route.path)
        found.update({filled, filled + "/", filled.rstrip("/") + "x", filled[:-1]})
        found.add(re.sub(r"\{[^}]+\}", "a/b", route.path))
    return sorted(found)


def _scope(path: str, method: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}


def _answer(result: tuple[Match, Any]) -> tuple[Match, Any]:
    match, child = result
    return match, None if match is Match.NONE else child.get("path_params")


def test_every_flat_route_matches_quickly():
    routes = [
        route for route in (*_api_routes(), *_console_routes()) if isinstance(route, APIRoute)
    ]
    assert routes
    assert all(isinstance(route, QuickMatchRoute) for route in routes)


def test_the_answers_are_fastapis_own():
    routes = [
        route for route in (*_api_routes(), *_console_routes()) if isinstance(route, APIRoute)
    ]
    compared = 0
    for path in _paths(routes):
        for method in METHODS:
            for route in routes:
                quick = _answer(route.matches(_scope(path, method)))
                own = _answer(APIRoute.matches(route, _scope(path, method)))
                assert quick == own, (route.path, path, method)
                compared += 1
    assert compared > 10_000
