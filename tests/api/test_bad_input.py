"""Hostile and careless input at the HTTP boundary: always a problem document, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azdev_ica.api.app import MAX_BODY_BYTES
from azdev_ica.domain.runs import Phase
from tests.conftest import bearer
from tests.support.cases import case

API = "/api/v1/azdev"
PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
RUN_KEY = "ado:p1:1"
START = {
    "provider": "ado",
    "project_id": "p1",
    "run_id": "1",
    "pipeline_name": "farmer-registry-ci",
    "tenant": "to",
    "stage": "production",
}
WRITES = ["/run/start", "/run/event", "/run/finish"]


@pytest.fixture
def devops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


@pytest.fixture
def started(client: Any, devops: dict[str, str]) -> str:
    response = client.post(f"{API}/run/start", json=START, headers=devops)
    assert response.status_code == 201
    return RUN_KEY


def problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:ica:problem:")
    if slug:
        assert body["type"] == f"urn:ica:problem:{slug}"
    return body


@pytest.mark.parametrize("path", WRITES)
class TestMalformedBodies:
    def test_not_json(self, client, devops, path):
        for raw in (b"{not json", b"", b"\xff\xfe", b'{"a": 1', b"NaN-ish"):
            response = client.post(f"{API}{path}", content=raw, headers={**devops, **JSON})
            problem(response, 400 if raw else 422)

    def test_json_that_is_not_an_object(self, client, devops, path):
        for raw in ("[]", "[1, 2]", "null", "42", '"run"', "true"):
            with case(raw):
                response = client.post(f"{API}{path}", content=raw, headers={**devops, **JSON})
                problem(response, 422, "validation")

    def test_a_body_that_is_not_sent_as_json(self, client, devops, path):
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "jsonish/json",
        ):
            with case(content_type):
                response = client.post(
                    f"{API}{path}",
                    content=json.dumps(START),
                    headers={**devops, "Content-Type": content_type},
                )
                body = problem(response, 415, "unsupported-media-type")
                assert "application/json" in body["detail"]

    def test_no_content_type(self, client, devops, path):
        response = client.post(f"{API}{path}", content=json.dumps(START), headers=devops)
        problem(response, 415, "unsupported-media-type")

    def test_json_with_a_charset_or_a_json_suffix_is_json(self, client, devops, path):
        for content_type in ("application/json; charset=utf-8", "application/vnd.ica+json"):
            response = client.post(
                f"{API}{path}", content="{}", headers={**devops, "Content-Type": content_type}
            )
            problem(response, 422, "validation")

    def test_a_body_over_the_limit_with_a_content_length(self, client, devops, path):
        raw = json.dumps({"pipeline_name": "x" * (MAX_BODY_BYTES + 1)})
        response = client.post(f"{API}{path}", content=raw, headers={**devops, **JSON})
        problem(response, 413, "payload-too-large")

    def test_a_body_over_the_limit_sent_in_chunks(self, client, devops, path):
        # No Content-Length: the limit must hold while the body is read.
        def chunks() -> Iterator[bytes]:
            yield b'{"pipeline_name": "'
            for _ in range(MAX_BODY_BYTES // 4096 + 2):
                yield b"x" * 4096
            yield b'"}'

        response = client.post(f"{API}{path}", content=chunks(), headers={**devops, **JSON})
        problem(response, 413, "payload-too-large")

    def test_a_body_just_under_the_limit_is_read(self, client, devops, path):
        raw = json.dumps({"notes": "x" * (MAX_BODY_BYTES - 100)})
        assert len(raw) < MAX_BODY_BYTES
        response = client.post(f"{API}{path}", content=raw, headers={**devops, **JSON})
        problem(response, 422, "validation")

    def test_deep_nesting(self, client, devops, path):
        for depth in (50, 900, 100_000):
            with case(depth):
                raw = '{"data": ' + "[" * depth + "]" * depth + "}"
                response = client.post(f"{API}{path}", content=raw, headers={**devops, **JSON})
                assert response.status_code in (400, 422)
                problem(response, response.status_code)


class TestValuesTheDatabaseCannotHold:
    @pytest.mark.parametrize(
        "data",
        [
            {"trigger": "alert", "value": float("nan")},
            {"trigger": "alert", "value": float("inf")},
            {"trigger": "alert", "threshold": float("-inf")},
        ],
    )
    def test_nan_and_infinity_are_refused(self, client, devops, started, data):
        raw = json.dumps({"run_key": started, "phase": "monitor", "data": data})
        assert "NaN" in raw or "Infinity" in raw  # Python writes them; JSON has no such thing
        response = client.post(f"{API}/run/event", content=raw, headers={**devops, **JSON})
        problem(response, 422, "validation")

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/run/start", {**START, "run_id": "2", "pipeline_name": "ci\u0000"}),
            ("/run/start", {**START, "run_id": "2", "branch": "refs/heads/\u0000"}),
            ("/run/event", {"run_key": RUN_KEY, "phase": "build", "data": {"notes": "\u0000"}}),
            (
                "/run/event",
                {
                    "run_key": RUN_KEY,
                    "phase": "verify",
                    "data": {"passed": True, "checks": [{"name": "a\u0000", "passed": True}]},
                },
            ),
        ],
    )
    def test_the_nul_character_is_refused_on_both_backends(
        self, client, devops, started, path, body
    ):
        # PostgreSQL cannot store U+0000 in text or jsonb; SQLite can. Both must refuse it.
        response = client.post(f"{API}{path}", json=body, headers=devops)
        problem(response, 422, "validation")

    @pytest.mark.parametrize(
        ("path", "field", "value"),
        [
            ("/run/start", "start_time", "9999-12-31T23:59:59-12:00"),
            ("/run/start", "start_time", "0001-01-01T00:00:00+12:00"),
            ("/run/event", "occurred_at", "9999-12-31T23:59:59-12:00"),
            ("/run/finish", "end_time", "0001-01-01T00:00:00+14:00"),
        ],
    )
    def test_times_that_leave_the_calendar_in_utc_are_refused(
        self, client, devops, started, path, field, value
    ):
        bodies: dict[str, dict[str, Any]] = {
            "/run/start": {**START, "run_id": "3"},
            "/run/event": {"run_key": started, "phase": "build"},
            "/run/finish": {"run_key": started, "status": "success"},
        }
        response = client.post(f"{API}{path}", json={**bodies[path], field: value}, headers=devops)
        problem(response, 422, "validation")

    def test_a_far_offset_is_stored_as_its_utc_instant(self, client, devops, started):
        response = client.post(
            f"{API}/run/event",
            json={"run_key": started, "phase": "build", "occurred_at": "2026-11-02T23:30:00+14:00"},
            headers=devops,
        )
        assert response.status_code == 201
        assert response.json()["event"]["occurred_at"].startswith("2026-11-02T09:30:00")


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


BAD_LISTING_QUERIES = [
    "cursor=%%%",
    "cursor=" + _cursor(["2026-11-02T09:00:00+00:00", 10**30]),
    "cursor=" + _cursor(["2026-11-02T09:00:00+00:00", -1]),
    "cursor=" + _cursor(["9999-12-31T23:59:59-12:00", 1]),
    "cursor=" + _cursor(["2026-11-02T09:00:00", 1]),
    "cursor=" + _cursor({"a": 1, "b": 2}),
    "cursor=" + _cursor(["2026-11-02T09:00:00+00:00", True]),
    "started_after=yesterday",
    "started_after=2026-11-02T09:00:00",
    "started_before=9999-12-31T23:59:59-12:00",
    "branch=main%00",
    "tenant=t%00",
    "limit=0",
    "limit=501",
    "limit=true",
    "status=done",
    "provider=svn",
]


class TestListingParameters:
    def test_bad_parameters_are_422(self, client, devops, started):
        for query in BAD_LISTING_QUERIES:
            with case(query):
                problem(client.get(f"{API}/runs?{query}", headers=devops), 422)

    def test_a_malformed_run_key_in_the_path_is_422(self, client, devops):
        for run_key in ("nope", "ado:p1:1%00", "ado:p1:" + "9" * 21, "x" * 300):
            with case(run_key):
                problem(client.get(f"{API}/run/{run_key}", headers=devops), 422)


# --- random JSON at run/event ------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=12,
)
# Bodies near the real shape reach deeper than arbitrary JSON does.
event_like = st.fixed_dictionaries(
    {},
    optional={
        "run_key": st.one_of(st.just(RUN_KEY), st.just("gh:1:2"), json_values),
        "run_id": st.one_of(st.just(RUN_KEY), json_values),
        "phase": st.one_of(st.sampled_from([phase.value for phase in Phase]), json_values),
        "event": st.one_of(st.sampled_from([phase.value for phase in Phase]), json_values),
        "attempt": st.one_of(st.integers(-2, 3), json_values),
        "event_id": st.one_of(st.text(max_size=12), json_values),
        "occurred_at": st.one_of(
            st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()), json_values
        ),
        "data": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "passed": st.one_of(st.booleans(), json_values),
                    "trigger": st.one_of(st.just("alert"), json_values),
                    "value": json_values,
                    "notes": json_values,
                    "artifact_digest": st.one_of(st.just("sha256:" + "a" * 64), json_values),
                    "checks": json_values,
                    "findings": json_values,
                },
            ),
            json_values,
        ),
        "extra": json_values,
    },
)


@settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(json_values, event_like))
def test_random_json_at_run_event_is_never_a_500(client, devops, started, body):
    raw = json.dumps(body, allow_nan=True)  # NaN and Infinity too: Python's parser takes them
    response = client.post(f"{API}/run/event", content=raw, headers={**devops, **JSON})
    assert response.status_code < 500, (raw, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM, raw
        document = response.json()
        assert document["status"] == response.status_code
        assert document["type"].startswith("urn:ica:problem:")
    else:
        assert response.json()["run"]["run_key"] == RUN_KEY
