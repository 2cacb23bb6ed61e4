"""The OpenAPI file is exact enough for a fuzzer to hold the server to it: problems declared
as problems, security schemes, standard bounds, 405s with the right Allow, and date-time
fields that take RFC 3339 text only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.test_runs import start_body
from tests.conftest import bearer

API = "/api/v1/azdev"
COMMITTED = Path(__file__).resolve().parents[2] / "api" / "azdev-ica-openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    return loaded


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_every_error_answer_is_declared_as_a_problem(document):
    checked = 0
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if str(status)[0] in "45":
                checked += 1
                assert response["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
    assert checked > 100
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_bounds_are_standard_json_schema(document):
    nodes = _walk(document)
    for keyword in ("ge", "le", "gt", "lt"):
        assert not [node for node in nodes if keyword in node and "type" in node], keyword
    limits = document["components"]["schemas"]["AuditQuery"]["properties"]["limit"]
    assert (limits["minimum"], limits["maximum"]) == (1, 500)


def test_security_schemes_are_declared_and_every_operation_names_its_own(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["basic"] == {**schemes["basic"], "type": "http", "scheme": "basic"}
    assert schemes["session"]["in"] == "cookie"
    open_paths = set()
    for path, method, operation in _operations(document):
        assert "security" in operation, (method, path)
        if operation["security"] == []:
            open_paths.add(path)
        else:
            assert {"bearer": []} in operation["security"], (method, path)
    assert {"/health", "/ready"} <= open_paths
    assert f"{API}/run/start" not in open_paths


class TestMethodNotAllowed:
    def test_get_on_run_start_is_a_405_not_a_run_named_start(self, client, make_key):
        # /run/{run_key} would take "start" as a run key: it was a 422 (a bad key).
        response = client.get(f"{API}/run/start", headers=bearer(make_key("azdev_devops")))
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["type"] == "urn:ica:problem:method-not-allowed"
        # The run itself is still read on its own path.
        client.post(f"{API}/run/start", json=start_body(), headers=bearer(make_key("azdev_devops")))
        listed = client.get(f"{API}/runs", headers=bearer(make_key("azdev_devops"))).json()
        run_key = listed["items"][0]["run_key"]
        found = client.get(f"{API}/run/{run_key}", headers=bearer(make_key("azdev_devops")))
        assert found.status_code == 200

    def test_allow_names_every_method_of_a_path(self, client):
        answers = {
            ("delete", "/health"): "GET",
            ("put", f"{API}/runs"): "GET",
            ("get", f"{API}/gate/evaluate"): "POST",
            ("delete", f"{API}/run/ado:p:1"): "GET",
        }
        for (method, path), allow in answers.items():
            response = client.request(method.upper(), path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allow, (method, path)
            assert response.headers["content-type"] == "application/problem+json"


class TestDateTimesAreText:
    def test_a_number_for_a_date_time_is_refused(self, client, make_key):
        devops = bearer(make_key("azdev_devops"))
        for when in (1_700_000_000, 1_700_000_000.5, "1700000000"):
            response = client.post(
                f"{API}/run/start", json=start_body(start_time=when), headers=devops
            )
            assert response.status_code == 422, when
            assert response.json()["type"] == "urn:ica:problem:validation"
        accepted = client.post(
            f"{API}/run/start", json=start_body(start_time="2026-11-02T08:00:00Z"), headers=devops
        )
        assert accepted.status_code == 201

    def test_a_number_in_a_date_time_query_is_refused(self, client, make_key):
        auditor = bearer(make_key("azdev_auditor"))
        refused = client.get(
            f"{API}/metrics/delivery", params={"from": "1700000000", "to": "1800000000"},
            headers=auditor,
        )  # fmt: skip
        assert refused.status_code == 422
        assert refused.json()["type"] == "urn:ica:problem:validation"
        accepted = client.get(
            f"{API}/metrics/delivery",
            params={"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
            headers=auditor,
        )
        assert accepted.status_code != 422
