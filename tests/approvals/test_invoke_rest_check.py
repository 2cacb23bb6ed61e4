"""The Invoke REST API check as Azure DevOps sends it: a service connection URL that ends in
`/` (the check joins it with the URL suffix as is: `//api/...`), a headers template the check
sends in polling mode too (values ICA does not use there, some unexpanded), and a success
criterion that must not pass on one signature."""

from __future__ import annotations

import base64
from typing import Any

API = "/api/v1/azdev"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f":{key}".encode()).decode()}


def test_a_service_connection_url_ending_in_a_slash_is_not_a_404(client, make_key, run_key):
    key = make_key("azdev_devops", ["to"])
    response = client.post(
        "http://testserver//api/v1/azdev/approval", json={"run_key": run_key}, headers=basic(key)
    )
    assert response.status_code == 201, response.text
    again = client.get(f"http://testserver//api//v1/azdev/approval/{response.json()['id']}",
                       headers=basic(key))  # fmt: skip
    assert again.status_code == 200, again.text


def test_polling_ignores_the_callback_headers_it_does_not_use(client, make_key, run_key):
    headers = {
        **basic(make_key("azdev_devops", ["to"])),
        # The same headers template as a callback check, some variables unexpanded.
        "PlanUrl": "$(system.CollectionUri)",
        "ProjectId": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
        "HubName": "$(system.HostType)",
        "PlanId": "$(system.PlanId)",
        "JobId": "not a (valid) id",
        "TimelineId": "",
        "TaskInstanceId": "$(system.TaskInstanceId)",
        "AuthToken": "$(system.AccessToken)",
    }
    response = client.post(f"{API}/approval", json={"run_key": run_key}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"


def test_approved_is_true_only_when_both_halves_signed(client, make_key, run_key, people):
    key = make_key("azdev_devops", ["to"])
    created = client.post(f"{API}/approval", json={"run_key": run_key}, headers=basic(key))
    assert created.json()["approved"] is False
    approval_id = created.json()["id"]
    signed = client.post(
        f"{API}/approval/{approval_id}/sign",
        json={"decision": "approve"},
        headers=people["alice"].headers,
    )
    one: Any = signed.json()
    assert one["status"].endswith("approved")  # why `endsWith(status, 'approved')` is wrong
    assert one["approved"] is False
    polled = client.post(f"{API}/approval", json={"run_key": run_key}, headers=basic(key))
    assert polled.json()["approved"] is False
    client.post(
        f"{API}/approval/{approval_id}/sign",
        json={"decision": "approve"},
        headers=people["bob"].headers,
    )
    polled = client.post(f"{API}/approval", json={"run_key": run_key}, headers=basic(key))
    assert (polled.json()["status"], polled.json()["approved"]) == ("approved", True)
