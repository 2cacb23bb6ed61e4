"""The inventory over HTTP: the newest successful deployment per tenant x stage, from what
pipelines reported; failed deployments do not change it; scoped readers see their tenants."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import bearer

API = "/api/v1/azdev"
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64


def deploy(
    client: Any,
    headers: dict[str, str],
    run_id: str,
    *,
    tenant: str,
    stage: str,
    digest: str,
    version: str,
    status: str = "succeeded",
) -> str:
    start = {
        "provider": "ado",
        "project_id": "proj",
        "run_id": run_id,
        "pipeline_name": "farmer-registry-cd",
        "tenant": tenant,
        "stage": stage,
        "commit": run_id * 7,
    }
    run_key = str(client.post(f"{API}/run/start", json=start, headers=headers).json()["run_key"])
    event = {
        "run_key": run_key,
        "phase": "deploy",
        "data": {"status": status, "artifact_digest": digest, "version": version},
    }
    assert client.post(f"{API}/run/event", json=event, headers=headers).status_code == 201
    return run_key


def test_the_newest_successful_deployment_per_target(client, make_key, clock):
    ci = bearer(make_key("azdev_devops"))
    deploy(client, ci, "1", tenant="to", stage="production", digest=DIGEST_1, version="1.4.0")
    clock.advance(timedelta(hours=1))
    second = deploy(
        client, ci, "2", tenant="to", stage="production", digest=DIGEST_2, version="1.5.0"
    )
    clock.advance(timedelta(hours=1))
    deploy(
        client,
        ci,
        "3",
        tenant="to",
        stage="production",
        digest=DIGEST_1,
        version="1.6.0",
        status="failed",
    )
    deploy(client, ci, "4", tenant="ws", stage="staging", digest=DIGEST_1, version="1.4.0")
    items = client.get(f"{API}/inventory", headers=ci).json()
    assert [(i["tenant"], i["stage"], i["version"]) for i in items] == [
        ("to", "production", "1.5.0"),
        ("ws", "staging", "1.4.0"),
    ]
    tonga = items[0]
    assert tonga["run_key"] == second
    assert tonga["artifact_digest"] == DIGEST_2
    assert tonga["commit"] == "2222222"
    assert tonga["deployed_at"] == "2026-11-02T10:00:00.000000Z"
    assert tonga["approved_by"] == []
    only = client.get(f"{API}/inventory?tenant=ws&stage=staging", headers=ci).json()
    assert [(i["tenant"], i["stage"]) for i in only] == [("ws", "staging")]
    samoa = bearer(make_key("azdev_auditor", ["ws"]))
    assert [i["tenant"] for i in client.get(f"{API}/inventory", headers=samoa).json()] == ["ws"]
