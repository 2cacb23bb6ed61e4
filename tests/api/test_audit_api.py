"""The auditor's API, on SQLite and PostgreSQL: every answer is checked with the ledger
library, as an auditor's own tool would (signatures, inclusion and consistency proofs)."""

from __future__ import annotations

import base64
import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditCheckpoint, AuditEntry, WitnessCosignature
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.ledger.merkle import (
    MemoryTree,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from azdev_ica.ledger.note import Verifier, open_checkpoint
from azdev_ica.services.audit import rfc3339
from tests.audit.ledgerdb import activity, start
from tests.conftest import bearer

API = "/api/v1/azdev/audit"
ORIGIN = "ica.localhost/audit/2026"


@pytest.fixture
def auditor(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_auditor"))


@pytest.fixture
def sealed(ctx: Any, auditor: dict[str, str], clock: Any) -> list[str]:
    """Runs in Samoa, then one in Tonga an hour later, sealed with several checkpoints."""
    keys = activity(ctx, 3, seal_every=1)
    clock.advance(timedelta(hours=1))
    keys += activity(ctx, 1, tenant="to", first=5000)
    return keys


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def all_entries(client: Any, headers: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = {**query, "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.post(f"{API}/query", json=body, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


class TestQuery:
    def test_pages_walk_the_whole_log_in_order(self, client, auditor, sealed):
        items = all_entries(client, auditor)
        assert [i["index"] for i in items] == list(range(len(items)))
        assert items[0]["action"] == "ledger.open"
        assert {i["origin"] for i in items} == {ORIGIN}
        assert sum(i["action"] == "run.start" for i in items) == 4

    def test_filters(self, client, auditor, sealed):
        for query, expected in [
            ({"action": "run.finish"}, 4),
            ({"tenant": "to"}, 3),
            ({"subject_type": "run", "subject_id": "ado:proj:1001"}, 3),
            ({"actor": "apikey:ica_testtestte", "action": "run.event"}, 4),
            ({"time_from": "2026-11-02T09:30:00Z"}, 3),
            ({"time_to": "2026-11-02T09:30:00Z", "tenant": "to"}, 0),
            ({"year": 2025}, 0),
        ]:
            assert len(all_entries(client, auditor, **query)) == expected, query

    def test_the_entry_is_the_exact_bytes_that_were_hashed(self, client, auditor, sealed):
        item = all_entries(client, auditor, action="run.start")[0]
        proof = client.get(f"{API}/entry/{item['index']}", headers=auditor).json()
        assert b64(proof["leaf_hash"]) == leaf_hash(item["entry"].encode("utf-8"))

    def test_bad_queries_are_422(self, client, auditor):
        for body in [{"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": "5"}, {"unknown": 1}]:
            response = client.post(f"{API}/query", json=body, headers=auditor)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"

    def test_a_tenant_scoped_auditor_sees_only_its_tenant(self, client, make_key, sealed):
        tonga = bearer(make_key("tenant_admin", ["to"]))
        items = all_entries(client, tonga)
        assert items
        assert {i["tenant"] for i in items} == {"to"}
        samoa_entry = all_entries(client, bearer(make_key("azdev_auditor")), tenant="ws")[0]
        hidden = client.get(f"{API}/entry/{samoa_entry['index']}", headers=tonga)
        absent = client.get(f"{API}/entry/999999", headers=tonga)
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["detail"] == absent.json()["detail"].replace(
            "999999", str(samoa_entry["index"])
        )
        no_shard = client.get(f"{API}/entry/0?year=2001", headers=tonga)
        assert no_shard.status_code == 404
        assert no_shard.json()["detail"] == "no audit shard 2001"


class TestProofs:
    def keys(self, client: Any, headers: dict[str, str]) -> list[Verifier]:
        listed = client.get(f"{API}/keys", headers=headers).json()
        assert listed[0]["valid_until"] is None
        return [Verifier.from_key_string(k["vkey"]) for k in listed]

    def test_the_checkpoint_is_a_signed_note_of_the_whole_tree(self, client, auditor, sealed):
        response = client.get(f"{API}/checkpoint", headers=auditor)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        checkpoint, _ = open_checkpoint(response.text, self.keys(client, auditor), ORIGIN)
        assert checkpoint.size == len(all_entries(client, auditor))

    def test_every_entry_proves_its_inclusion(self, client, auditor, sealed):
        verifiers = self.keys(client, auditor)
        for item in all_entries(client, auditor):
            proof = client.get(f"{API}/entry/{item['index']}?year=2026", headers=auditor).json()
            assert proof["status"] == "included"
            checkpoint, _ = open_checkpoint(proof["checkpoint"], verifiers, ORIGIN)
            assert checkpoint.size == proof["tree_size"]
            verify_inclusion(
                leaf_hash(proof["entry"].encode("utf-8")),
                proof["index"],
                checkpoint.size,
                [b64(h) for h in proof["inclusion_proof"]],
                checkpoint.root_hash,
            )

    def test_an_entry_sealed_but_not_signed_yet_is_pending(self, client, auditor, sealed, ctx):
        start(ctx, 7777)
        seal_now(ctx, checkpoint=False)
        last = all_entries(client, auditor)[-1]
        proof = client.get(f"{API}/entry/{last['index']}", headers=auditor).json()
        assert proof["status"] == "pending"
        assert (proof["checkpoint"], proof["inclusion_proof"]) == (None, [])

    def test_an_entrys_answer_is_exactly_what_the_ledger_holds(self, client, auditor, sealed, ctx):
        """Every field of GET audit/entry, in order, against the stored rows read here: the
        entry, the shard's latest checkpoint when it covers the entry, with the witnesses'
        cosignature lines in their order, and the audit path of a tree built here."""
        with ctx.read() as session:
            latest = session.scalars(
                select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
            ).one()
            for witness in ("witness-b", "witness-a"):
                session.add(
                    WitnessCosignature(
                        year=2026,
                        size=latest.size,
                        witness=witness,
                        key_id="0000abcd",
                        timestamp=1,
                        line=f"\u2014 {witness} c2lnbmF0dXJl\n",
                        received_at=ctx.clock.now(),
                    )
                )
            session.commit()
        start(ctx, 7777)  # one entry more, sealed but not signed yet
        seal_now(ctx, checkpoint=False)
        with ctx.read() as session:
            rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.idx)))
            note = latest.note + "".join(
                session.scalars(
                    select(WitnessCosignature.line)
                    .where(WitnessCosignature.size == latest.size)
                    .order_by(WitnessCosignature.witness)
                )
            )
        assert note.endswith("\u2014 witness-a c2lnbmF0dXJl\n\u2014 witness-b c2lnbmF0dXJl\n")
        tree = MemoryTree()
        for row in rows:
            tree.append(row.entry)
        for row in rows:
            covered = row.idx < latest.size
            expected = {
                "origin": ORIGIN,
                "year": 2026,
                "index": row.idx,
                "time": rfc3339(row.time),
                "action": row.action,
                "actor_kind": row.actor_kind,
                "actor_id": row.actor_id,
                "subject_type": row.subject_type,
                "subject_id": row.subject_id,
                "tenant": row.tenant,
                "entry": row.entry.decode("utf-8"),
                "status": "included" if covered else "pending",
                "leaf_hash": base64.b64encode(leaf_hash(row.entry)).decode(),
                "tree_size": latest.size if covered else None,
                "inclusion_proof": [
                    base64.b64encode(h).decode()
                    for h in (
                        inclusion_proof(row.idx, latest.size, tree.get_nodes) if covered else []
                    )
                ],
                "checkpoint": note if covered else None,
            }
            for year in ("", "?year=2026"):
                answer = client.get(f"{API}/entry/{row.idx}{year}", headers=auditor)
                assert answer.status_code == 200
                assert list(answer.json().items()) == list(expected.items())
        assert rows[-1].idx >= latest.size  # the pending one was asked too
        assert client.get(f"{API}/entry/0?year=2025", headers=auditor).status_code == 404

    def test_consistency_between_every_pair_of_checkpoints(self, client, auditor, sealed, ctx):
        verifiers = self.keys(client, auditor)
        with ctx.read() as session:
            sizes = list(session.scalars(select(AuditCheckpoint.size).order_by("size")))
        assert len(sizes) >= 3
        for small, big in itertools.pairwise(sizes):
            response = client.get(f"{API}/consistency?from={small}&to={big}", headers=auditor)
            assert response.status_code == 200, response.text
            body = response.json()
            old, _ = open_checkpoint(body["from_checkpoint"], verifiers, ORIGIN)
            new, _ = open_checkpoint(body["to_checkpoint"], verifiers, ORIGIN)
            verify_consistency(
                small, big, [b64(h) for h in body["proof"]], old.root_hash, new.root_hash
            )

    def test_bad_consistency_requests_are_422(self, client, auditor, sealed):
        for query in ["from=0&to=3", "from=5&to=3", "from=1&to=99999", "to=3"]:
            response = client.get(f"{API}/consistency?{query}", headers=auditor)
            assert response.status_code == 422, query


def test_before_anything_is_sealed_there_is_no_checkpoint(client, auditor):
    response = client.get(f"{API}/checkpoint", headers=auditor)
    assert response.status_code == 404
    assert response.json()["type"] == "urn:ica:problem:not-found"
    assert client.get(f"{API}/keys", headers=auditor).json() == []
