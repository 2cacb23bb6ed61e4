"""GET /api/v1/azdev/approval/sla: the compliance figure, within the caller's tenants."""

from __future__ import annotations

from datetime import timedelta

from tests.conftest import bearer

URL = "/api/v1/azdev/approval/sla"


def test_the_figure_over_http(ctx, clock, client, make_key, ask):
    ask("1", "ws")
    ask("2", "ck")
    clock.advance(timedelta(hours=5))  # both still open past their SLA: breached
    everyone = client.get(URL, headers=bearer(make_key("azdev_auditor")))
    assert everyone.status_code == 200
    body = everyone.json()
    assert body["tenants"] is None
    assert (body["within"], body["breached"], body["total"]) == (0, 2, 2)
    assert body["compliance"] == 0.0
    samoa = bearer(make_key("azdev_auditor", ["ws"]))
    scoped = client.get(URL, headers=samoa).json()
    assert scoped["tenants"] == ["ws"]
    assert scoped["total"] == 1
    refused = client.get(URL, params={"tenant": "ck"}, headers=samoa)
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
    later = client.get(URL, params={"since": "2030-01-01T00:00:00Z"}, headers=samoa).json()
    assert later["total"] == 0
    assert later["compliance"] is None


def test_bad_query_is_a_problem_not_a_500(client, make_key):
    headers = bearer(make_key("admin"))
    for params in (
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"tenant": "NOT A TENANT"},
    ):
        response = client.get(URL, params=params, headers=headers)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
