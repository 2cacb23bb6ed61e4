"""Data refresh requests over HTTP, on both databases (seed 002 cross-environment policy):
production data into a lower stage only with masking evidence and an approval by someone
else holding the approver role for that tenant; nothing crosses tenants; replayed."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.services.policies import apply_policy
from tests.conftest import bearer, example_policy
from tests.promotion.conftest import API, OPERATOR

EVIDENCE = {
    "sha256": "ef" * 32,
    "uri": "https://evidence.example/ws/masking/2026-11-02.json",
    "description": "names, phone numbers and national ids replaced by the masking job",
}


@pytest.fixture
def ops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops", ["ws"]))


@pytest.fixture
def people(make_person: Any) -> dict[str, Any]:
    return {
        "tech": make_person("lani", [("azdev_approver_tech", "ws")]),
        "tonga": make_person("sione", [("azdev_approver_tech", "to")]),
        "biz": make_person("malia", [("azdev_approver_biz", "ws")]),
        "admin": make_person("admin-ws", [("tenant_admin", "ws"), ("azdev_approver_tech", "ws")]),
    }


def ask(client: Any, headers: dict[str, str], **extra: Any) -> Any:
    body = {
        "tenant": "ws",
        "target_stage": "staging",
        "reason": "reproduce a defect reported by the Samoa registry office",
        "evidence": EVIDENCE,
        **extra,
    }
    return client.post(f"{API}/refresh", json=body, headers=headers)


def decide(client: Any, person: Any, request_id: int, decision: str = "approve") -> Any:
    return client.post(
        f"{API}/refresh/{request_id}/decide", json={"decision": decision}, headers=person.headers
    )


def test_requested_approved_completed(client, ops, people, ctx):
    asked = ask(client, ops)
    assert asked.status_code == 201, asked.text
    request = asked.json()
    assert (request["status"], request["source_stage"], request["evidence"]) == (
        "requested",
        "production",
        EVIDENCE,
    )
    early = client.post(f"{API}/refresh/{request['id']}/complete", headers=ops)
    assert early.status_code == 409
    # Tonga's approver does not even see Samoa's request.
    assert decide(client, people["tonga"], request["id"]).status_code == 404
    # The business approver holds no refresh-approving role by default.
    refused = decide(client, people["biz"], request["id"])
    assert (refused.status_code, refused.json()["code"]) == (403, "role_not_held")
    approved = decide(client, people["tech"], request["id"])
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == (
        "approved",
        f"person:{people['tech'].person_id}",
    )
    assert decide(client, people["tech"], request["id"]).status_code == 200  # retried call
    assert decide(client, people["tech"], request["id"], "reject").status_code == 409
    done = client.post(f"{API}/refresh/{request['id']}/complete", headers=ops)
    assert (done.status_code, done.json()["status"]) == (200, "completed")
    listed = client.get(f"{API}/refresh?tenant=ws", headers=ops).json()
    assert [(r["id"], r["status"]) for r in listed] == [(request["id"], "completed")]
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_refresh_request"] == (1, 1)


def test_the_requester_never_approves(client, people):
    admin = people["admin"]
    asked = ask(client, admin.headers)
    assert asked.status_code == 201, asked.text
    refused = decide(client, admin, asked.json()["id"])
    assert (refused.status_code, refused.json()["code"]) == (403, "requester_cannot_approve")
    rejected = decide(client, people["tech"], asked.json()["id"], "reject")
    assert rejected.json()["status"] == "rejected"


def test_the_policy_names_the_approver_role(client, ops, people, ctx):
    document_role = "refresh_approver_role: azdev_approver_tech"
    text = example_policy(promotion=True)
    assert document_role in text
    apply_policy(
        ctx,
        actor=OPERATOR,
        document=text.replace(document_role, "refresh_approver_role: azdev_approver_biz"),
        source="test",
    )
    request_id = ask(client, ops).json()["id"]
    assert decide(client, people["tech"], request_id).status_code == 403
    assert decide(client, people["biz"], request_id).json()["status"] == "approved"


def test_bad_requests_are_refused_without_a_500(client, ops, make_key):
    assert ask(client, ops, target_stage="production").status_code == 422
    assert ask(client, ops, target_stage="moon").status_code == 422
    assert ask(client, ops, tenant="to").status_code == 403
    assert ask(client, ops, evidence={**EVIDENCE, "sha256": "xyz"}).status_code == 422
    assert ask(client, ops, evidence=None).status_code == 422
    assert client.post(f"{API}/refresh/999/complete", headers=ops).status_code == 404
    assert client.post(f"{API}/refresh/0/complete", headers=ops).status_code == 422
    key = bearer(make_key("azdev_approver_tech"))
    refused = client.post(f"{API}/refresh/1/decide", json={"decision": "approve"}, headers=key)
    assert refused.json()["type"] == "urn:ica:problem:person-required"
