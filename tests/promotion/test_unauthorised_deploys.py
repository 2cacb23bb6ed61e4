"""A deploy the gate never allowed is an unauthorised change, never a deployment that counts
(issue 13): it does not pass a stage for promotion, is never the rollback's last good version,
and the inventory marks it. Over HTTP, on both databases."""

from __future__ import annotations

from typing import Any

from tests.promotion.conftest import API, V1, V2, V3, Pipeline, use_promotion_policy


def deploy_without_the_gate(pipeline: Pipeline, tenant: str, stage: str, digest: str) -> str:
    run_key = pipeline.start(tenant, stage, digest)
    pipeline.deploy(run_key, digest, "9.9.9")
    pipeline.finish(run_key)
    return run_key


def inventory(client: Any, pipeline: Pipeline, stage: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/inventory?tenant=to&stage={stage}", headers=pipeline.headers)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()
    return items


def test_an_unauthorised_deploy_does_not_pass_the_stage(ctx, client, pipeline):
    use_promotion_policy(ctx)
    run_key = deploy_without_the_gate(pipeline, "to", "development", V1)
    # The inventory shows what runs there, as what it is.
    [item] = inventory(client, pipeline, "development")
    assert (item["run_key"], item["artifact_digest"], item["authorised"]) == (run_key, V1, False)
    # It never satisfies "the previous stage passed".
    skipped = pipeline.release("to", "test", V1, "1.0.0")
    assert (skipped.status, skipped.codes) == ("deny", ["previous_stage_not_passed"])
    # Through the gate, the same version passes development, and then test.
    assert pipeline.release("to", "development", V1, "1.0.0").status == "allow"
    [item] = inventory(client, pipeline, "development")
    assert item["authorised"] is True
    assert pipeline.release("to", "test", V1, "1.0.0").status == "allow"


def test_an_unauthorised_deploy_is_never_the_last_good_version(ctx, client, pipeline):
    use_promotion_policy(ctx)
    assert pipeline.release("to", "development", V1, "1.0.0").status == "allow"
    deploy_without_the_gate(pipeline, "to", "development", V2)
    assert pipeline.release("to", "development", V3, "1.2.0").status == "allow"
    # Rolling development back: V2 ran there, but only V1 went through the gate.
    to_v2 = pipeline.release("to", "development", V2, "1.1.0", rollback=True)
    assert to_v2.status == "deny"
    [refusal] = [r for r in to_v2.gate["reasons"] if r["code"] == "rollback_not_last_good"]
    assert V1 in refusal["message"]
    to_v1 = pipeline.release("to", "development", V1, "1.0.0", rollback=True)
    assert "rollback_not_last_good" not in to_v1.codes
