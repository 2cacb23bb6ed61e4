"""Receipts over HTTP, on SQLite and PostgreSQL: a write names its audit records in the
`ICA-Audit-Ref` header, and `GET /audit/receipt/{ref}?wait=N` answers with the entry, its leaf
hash, inclusion proof and signed checkpoint once sealed, or `pending` when the bound passes.
Every receipt is checked with the ledger library, as the caller's own tool would."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from azdev_ica.jobs.sealer import seal_now
from azdev_ica.ledger.entry import parse_entry
from azdev_ica.ledger.keyfile import read_signers
from azdev_ica.ledger.merkle import leaf_hash, verify_inclusion
from azdev_ica.ledger.note import open_checkpoint
from tests.conftest import bearer

API = "/api/v1/azdev"
ORIGIN = "ica.localhost/audit/2026"
RUN_KEY = "ado:6c3f0e1a-1111-4c2b-9d1e-0123456789ab:4711"
START = {
    "provider": "ado",
    "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
    "run_id": "4711",
    "pipeline_name": "farmer-registry-ci",
    "tenant": "to",
    "stage": "production",
}


@pytest.fixture
def devops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops"))


def started(client: Any, headers: dict[str, str]) -> int:
    response = client.post(f"{API}/run/start", json=START, headers=headers)
    assert response.status_code in (200, 201), response.text
    refs = [int(r) for r in response.headers["ICA-Audit-Ref"].split(",")]
    assert len(refs) == 1
    return refs[0]


def receipt(client: Any, ref: int, headers: dict[str, str], wait: float = 0) -> dict[str, Any]:
    response = client.get(f"{API}/audit/receipt/{ref}", params={"wait": wait}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def check_included(ctx: Any, body: dict[str, Any], ref: int) -> None:
    assert body["status"] == "included"
    assert body["ref"] == ref
    entry = body["entry"].encode("utf-8")
    leaf = base64.b64decode(body["leaf_hash"])
    assert leaf == leaf_hash(entry)
    parsed = parse_entry(entry)
    assert (parsed.index, parsed.origin) == (body["index"], ORIGIN)
    assert (parsed.body["action"], parsed.body["subject"]["id"]) == ("run.start", RUN_KEY)
    verifiers = [s.verifier() for s in read_signers(ctx.ledger.key_file)]
    checkpoint, _ = open_checkpoint(body["checkpoint"], verifiers, ORIGIN)
    assert checkpoint.size == body["tree_size"] > body["index"]
    proof = [base64.b64decode(h) for h in body["inclusion_proof"]]
    verify_inclusion(leaf, body["index"], checkpoint.size, proof, checkpoint.root_hash)


def test_a_write_names_its_record_and_its_receipt_proves_it(client, ctx, devops):
    ref = started(client, devops)
    assert receipt(client, ref, devops) == {
        "ref": ref,
        "status": "pending",
        "origin": None,
        "year": None,
        "index": None,
        "entry": None,
        "leaf_hash": None,
        "tree_size": None,
        "inclusion_proof": [],
        "checkpoint": None,
    }
    seal_now(ctx, checkpoint=False)
    sealed = receipt(client, ref, devops)
    assert sealed["status"] == "sealed"
    assert sealed["index"] is not None
    assert sealed["checkpoint"] is None
    seal_now(ctx)
    check_included(ctx, receipt(client, ref, devops), ref)


def test_reads_and_replays_carry_no_reference(client, devops):
    assert "ICA-Audit-Ref" not in client.get(f"{API}/runs", headers=devops).headers
    headers = {**devops, "Idempotency-Key": "receipt-1"}
    first = client.post(f"{API}/run/start", json=START, headers=headers)
    again = client.post(f"{API}/run/start", json=START, headers=headers)
    assert "ICA-Audit-Ref" in first.headers
    assert again.status_code == 200  # the replayed answer
    assert "ICA-Audit-Ref" not in again.headers


def test_an_event_names_its_record_and_a_replay_or_a_refusal_none(client, ctx, devops):
    """A test event is written with Core statements (straight through the driver on
    PostgreSQL): its record still becomes the request's reference once committed."""
    started(client, devops)
    headers = {**devops, "Idempotency-Key": "receipt-event"}
    event = {"run_key": RUN_KEY, "phase": "test", "data": {"passed": True}}
    first = client.post(f"{API}/run/event", json=event, headers=headers)
    again = client.post(f"{API}/run/event", json=event, headers=headers)
    refused = client.post(f"{API}/run/event", json={**event, "run_key": "ado:p:0"}, headers=devops)
    assert (first.status_code, again.status_code, refused.status_code) == (201, 200, 404)
    [ref] = [int(r) for r in first.headers["ICA-Audit-Ref"].split(",")]
    assert "ICA-Audit-Ref" not in again.headers
    assert "ICA-Audit-Ref" not in refused.headers
    seal_now(ctx)
    body = receipt(client, ref, devops)
    parsed = parse_entry(body["entry"].encode("utf-8")).body
    assert (parsed["action"], parsed["subject"]["id"]) == ("run.event", RUN_KEY)
    assert parsed["data"]["event_id"] == first.json()["event"]["event_id"]


def test_only_the_writer_and_auditors_of_its_tenant_see_a_receipt(client, ctx, make_key, devops):
    ref = started(client, devops)
    seal_now(ctx)
    for allowed in (
        devops,
        bearer(make_key("azdev_auditor", ["to"])),
        bearer(make_key("azdev_auditor")),
        bearer(make_key("admin")),
    ):
        check_included(ctx, receipt(client, ref, allowed), ref)
    for refused in (
        bearer(make_key("azdev_devops")),  # another pipeline
        bearer(make_key("azdev_auditor", ["ws"])),  # another tenant's auditor
        bearer(make_key("azdev_approver_tech")),
    ):
        response = client.get(f"{API}/audit/receipt/{ref}", headers=refused)
        assert response.status_code == 404, response.text
        assert response.json()["status"] == 404
    # An unknown reference answers like one out of scope.
    assert client.get(f"{API}/audit/receipt/{ref + 1000}", headers=devops).status_code == 404
    assert client.get(f"{API}/audit/receipt/{ref}").status_code == 401


@pytest.mark.parametrize(
    "query",
    ["wait=31", "wait=-1", "wait=soon", "wait=nan"],
)
def test_the_wait_is_bounded(client, devops, query):
    ref = started(client, devops)
    response = client.get(f"{API}/audit/receipt/{ref}?{query}", headers=devops)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("ref", ["0", "abc", str(2**63)])
def test_a_malformed_reference_is_refused(client, devops, ref):
    assert client.get(f"{API}/audit/receipt/{ref}", headers=devops).status_code == 422


@pytest.fixture
def sealing(ctx: Any) -> Iterator[None]:
    """A sealer at work beside the server (as the app's background sealer would be)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.02):
            seal_now(ctx)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def test_a_caller_may_wait_for_its_receipt(client, ctx, devops, sealing):
    ref = started(client, devops)
    check_included(ctx, receipt(client, ref, devops, wait=20), ref)


def test_only_committed_records_become_references(ctx):
    """A record whose transaction rolls back (a failed or retried action) is never named."""
    from azdev_ica.auth.principal import Actor
    from azdev_ica.services.audit import append_audit, collect_audit_refs

    def act(session: Any, fail: bool) -> int:
        inbox_id = append_audit(
            session,
            actor=Actor(kind="operator", id="refs"),
            action="test.refs",
            subject_type="test",
            subject_id="x",
            tenant=None,
            data={},
            at=ctx.clock.now(),
        )
        if fail:
            raise RuntimeError("the action fails after writing its record")
        return inbox_id

    with collect_audit_refs() as refs:
        with pytest.raises(RuntimeError):
            ctx.run_action(lambda session: act(session, True))
        assert refs == []
        first = ctx.run_action(lambda session: act(session, False))
        second = ctx.run_action(lambda session: act(session, False))
    assert refs == [first, second]
    assert ctx.run_action(lambda session: act(session, False)) not in refs  # outside: none
