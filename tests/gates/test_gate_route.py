"""The gate's routes take one hand-off to the thread pool per request (api/deps.OneHandOffRoute)
and keep the order of their answers: a body of another media type is a 415 and unreadable JSON
a 400, then the caller (401 without valid credentials, 403 without the permission), then the
body and the parameters (422)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import bearer
from tests.gates.conftest import API, approve, new_run

JSON = {"Content-Type": "application/json"}
UNREADABLE = b'{"run_key": '
# The route, a body that fails validation, a role granted the route's permission.
ROUTES = [
    ("/gate/evaluate", b'{"run_key": 7}', "azdev_devops"),
    ("/lock/release", b'{"tenant": "TO"}', "admin"),
]
EXPECTED = {
    # caller: (bad body, unreadable JSON, text/plain body)
    "anonymous": (401, 400, 415),
    "wrong key": (401, 400, 415),
    "auditor": (403, 400, 415),
    "granted": (422, 400, 415),
}


def _callers(make_key: Any, granted: str) -> dict[str, dict[str, str]]:
    return {
        "anonymous": {},
        "wrong key": bearer("ica_nope_" + "x" * 40),
        "auditor": bearer(make_key("azdev_auditor")),
        "granted": bearer(make_key(granted)),
    }


@pytest.mark.parametrize(("path", "bad_body", "granted"), ROUTES)
def test_the_caller_is_checked_before_the_body_and_after_its_media_type(
    client, make_key, path, bad_body, granted
):
    for name, headers in _callers(make_key, granted).items():
        answers = (
            client.post(f"{API}{path}", content=bad_body, headers={**headers, **JSON}),
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


def test_a_bad_lock_path_is_checked_after_the_caller(client, make_key):
    answers = {
        name: client.get(f"{API}/lock/TO/production", headers=headers).status_code
        for name, headers in _callers(make_key, "admin").items()
    }
    assert answers == {"anonymous": 401, "wrong key": 401, "auditor": 422, "granted": 422}


def test_an_evaluation_costs_one_hand_off_to_the_thread_pool(
    client, ctx, approvers, make_key, monkeypatch
):
    import anyio.to_thread

    run_key = new_run(ctx)
    approve(ctx, approvers, run_key)
    headers = {**bearer(make_key("azdev_devops")), **JSON}
    original = anyio.to_thread.run_sync
    handed: list[str] = []

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(function, "__name__", repr(function)))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    answer = client.post(f"{API}/gate/evaluate", json={"run_key": run_key}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "allow", answer.text
    assert len(handed) == 1, handed
