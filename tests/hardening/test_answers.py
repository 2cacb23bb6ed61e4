"""Small 500s and answer headers: lone surrogates, out-of-range months, nosniff, no-store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import bearer

API = "/api/v1/azdev"
PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
# A lone surrogate: valid JSON text, but no Unicode scalar value, so no encoding can store it.
LONE = '"bad \\ud800 text"'


@pytest.fixture
def admin(make_key: Any) -> dict[str, str]:
    return bearer(make_key("admin"))


def _raw(template: str) -> bytes:
    return template.replace("LONE", LONE).encode()


SURROGATE_BODIES = [
    (
        "/run/start",
        '{"provider": "ado", "project_id": "p1", "run_id": "1", "pipeline_name": LONE,'
        ' "tenant": "to", "stage": "production"}',
        "/pipeline_name",
    ),
    (
        "/incident",
        '{"title": LONE, "severity": "high", "tenant": "to", "stage": "production"}',
        "/title",
    ),
    ("/people", '{"login": "a@example.org", "display_name": LONE}', "/display_name"),
    ("/audit/query", '{"actor": LONE}', "/actor"),
    (
        "/run/event",
        '{"run_key": "ado:p1:1", "phase": "deploy", "data": {"k/x": [1, {"deep": LONE}]}}',
        "/data/k~1x/1/deep",
    ),
    ("/run/start", "{LONE: 1}", ""),
]


@pytest.mark.parametrize(("path", "body", "pointer"), SURROGATE_BODIES)
def test_a_lone_surrogate_in_any_json_string_is_a_422(client, admin, path, body, pointer):
    response = client.post(f"{API}{path}", content=_raw(body), headers={**admin, **JSON})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "urn:ica:problem:validation"
    assert "surrogate" in problem["detail"]
    if pointer:
        assert any(error["pointer"] == pointer for error in problem["errors"]), problem


def test_a_proper_surrogate_pair_is_text_like_any_other(client, admin):
    body = (
        '{"provider": "ado", "project_id": "p1", "run_id": "3",'
        ' "pipeline_name": "ci \\ud83d\\ude80", "tenant": "to", "stage": "production"}'
    )
    response = client.post(f"{API}/run/start", content=body.encode(), headers={**admin, **JSON})
    assert response.status_code == 201, response.text
    assert response.json()["pipeline_name"] == "ci \U0001f680"


def test_the_report_of_a_month_past_the_calendar_is_a_422(client, admin):
    for month in ("9999-12", "9999-01", "0000-01", "2026-13"):
        response = client.get(f"{API}/report/monthly", params={"month": month}, headers=admin)
        assert response.status_code == 422, (month, response.text)
        assert response.headers["content-type"] == PROBLEM
    assert client.get(f"{API}/report/monthly?month=9998-12", headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "authorised"),
    [
        ("GET", "/api/v1/azdev/runs", True),
        ("GET", "/api/v1/azdev/runs", False),  # a 401 problem
        ("GET", "/api/v1/azdev/nowhere", True),  # a 404 problem
        ("POST", "/api/v1/azdev/run/start", True),  # a 422 problem
        ("GET", "/health", False),
        ("GET", "/login", False),
    ],
)
def test_every_answer_is_nosniff_and_data_is_never_stored(client, admin, method, path, authorised):
    headers = {**admin, **JSON} if authorised else JSON
    response = client.request(method, path, headers=headers, content=b"{}")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_a_body_over_the_limit_is_still_a_413_problem(client, admin):
    from azdev_ica.api.app import MAX_BODY_BYTES

    chunks = [b'{"pipeline_name": "', b"x" * MAX_BODY_BYTES, b'"}']
    response = client.post(f"{API}/run/start", content=iter(chunks), headers={**admin, **JSON})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM


def test_static_files_stay_cacheable_and_nosniff(client):
    response = client.get("/static/console.css")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in response.headers["cache-control"]
