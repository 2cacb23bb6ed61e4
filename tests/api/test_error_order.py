"""Which problem a bad request gets when it is wrong in several ways at once: the order the
API has always had, whatever the route does to save thread hand-offs (api/deps.py). A body
sent as another media type is a 415 and unreadable JSON a 400, before anything else; then the
caller: no valid credentials is a 401 and a role that does not grant the route's permission a
403, before anything about the body or the headers (422). Once authenticated with the right
permission, a bad body or Idempotency-Key is a 422."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import bearer

API = "/api/v1/azdev"
JSON = {"Content-Type": "application/json"}
GOOD_EVENT = b'{"run_key": "ado:p:1", "phase": "test"}'
BAD_EVENT = b'{"run_key": 7, "phase": "lunch"}'
BAD_START = b'{"provider": "svn"}'
UNREADABLE = b'{"run_key": '

ROUTES = [("/run/event", BAD_EVENT), ("/run/start", BAD_START), ("/run/finish", b"{}")]


@pytest.fixture
def callers(make_key: Any) -> dict[str, dict[str, str]]:
    return {
        "anonymous": {},
        "wrong key": bearer("ica_nope_" + "x" * 40),
        "auditor": bearer(make_key("azdev_auditor")),
        "devops": bearer(make_key("azdev_devops")),
    }


EXPECTED = {
    # caller: (bad body, bad Idempotency-Key, unreadable JSON, text/plain body)
    "anonymous": (401, 401, 400, 415),
    "wrong key": (401, 401, 400, 415),
    "auditor": (403, 403, 400, 415),
    "devops": (422, 422, 400, 415),
}


@pytest.mark.parametrize(("path", "bad_body"), ROUTES)
def test_the_caller_is_checked_before_the_body_and_after_its_media_type(
    client, callers, path, bad_body
):
    for name, headers in callers.items():
        answers = (
            client.post(f"{API}{path}", content=bad_body, headers={**headers, **JSON}),
            client.post(
                f"{API}{path}",
                content=GOOD_EVENT,
                headers={**headers, **JSON, "Idempotency-Key": "has space"},
            ),
            client.post(f"{API}{path}", content=UNREADABLE, headers={**headers, **JSON}),
            client.post(
                f"{API}{path}", content=bad_body, headers={**headers, "Content-Type": "text/plain"}
            ),
        )
        assert tuple(answer.status_code for answer in answers) == EXPECTED[name], (
            name,
            [answer.text for answer in answers],
        )
        for answer in answers:
            assert answer.headers["content-type"] == "application/problem+json"


def test_a_run_event_costs_one_hand_off_to_the_thread_pool(client, callers, monkeypatch):
    """Authentication, the permission check and the endpoint share one worker-thread call
    (FastAPI gives a plain dependency and a plain endpoint one each)."""
    import anyio.to_thread

    start = {"provider": "ado", "project_id": "p", "run_id": "1", "pipeline_name": "ci"}
    devops = {**callers["devops"], **JSON}
    assert client.post(f"{API}/run/start", json=start, headers=devops).status_code == 201
    original = anyio.to_thread.run_sync
    handed: list[str] = []

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(function, "__name__", repr(function)))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    body = {"run_key": "ado:p:1", "phase": "test", "data": {"passed": True}}
    event = client.post(f"{API}/run/event", json=body, headers=devops)
    assert event.status_code == 201, event.text
    assert len(handed) == 1, handed
