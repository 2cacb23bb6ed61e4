"""Deployment locks: one run per target, first come first served, released by the run's
finish, by its lease running out, or by an administrator with a reason."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox
from azdev_ica.services.locks import expire_leases
from azdev_ica.services.runs import FinishRun, finish_run
from tests.gates.conftest import API, PIPELINE, codes, gate, new_run


@pytest.fixture
def devops(make_key: Any) -> str:
    return str(make_key("azdev_devops"))


def finish(ctx: Any, run_key: str) -> None:
    finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, "success"))


def lock_entries(ctx: Any) -> list[tuple[str, dict[str, Any]]]:
    with ctx.read() as session:
        rows = session.execute(
            select(AuditInbox.action, AuditInbox.body)
            .where(AuditInbox.action.like("lock.%"))
            .order_by(AuditInbox.id)
        )
        return [(action, json.loads(bytes(body))["data"]) for action, body in rows]


def holder(client: Any, key: str, stage: str = "staging") -> Any:
    response = client.get(f"{API}/lock/to/{stage}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    return response.json()


class TestQueue:
    def test_a_second_run_waits_until_the_first_finishes(self, ctx, client, devops):
        first, second = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
        assert gate(client, devops, first)["status"] == "allow"
        waiting = gate(client, devops, second)
        assert (waiting["status"], codes(waiting)) == ("pending", ["lock_held"])
        assert (waiting["lock_holder"], waiting["queue_position"]) == (first, 1)
        assert holder(client, devops)["queue"] == [second]
        finish(ctx, first)
        assert gate(client, devops, second)["status"] == "allow"
        state = holder(client, devops)
        assert (state["status"], state["holder_run_key"], state["queue"]) == ("held", second, [])

    def test_first_come_first_served(self, ctx, client, devops):
        a, b, c = (new_run(ctx, stage="staging") for _ in range(3))
        assert gate(client, devops, a)["status"] == "allow"
        assert gate(client, devops, b)["queue_position"] == 1
        assert gate(client, devops, c)["queue_position"] == 2
        finish(ctx, a)
        # c asks first once the lock is free, but b asked earlier: b's turn.
        late = gate(client, devops, c)
        assert (late["status"], late["lock_holder"], late["queue_position"]) == ("pending", b, 2)
        assert gate(client, devops, b)["status"] == "allow"
        assert gate(client, devops, c)["queue_position"] == 1

    def test_the_holder_asking_again_keeps_and_renews_the_lock(self, ctx, client, devops, clock):
        a = new_run(ctx, stage="staging")
        first = gate(client, devops, a)
        clock.advance(timedelta(minutes=30))
        again = gate(client, devops, a)
        assert again["status"] == "allow"
        assert again["lock_expires_at"] > first["lock_expires_at"]

    def test_a_run_that_is_not_ready_does_not_queue(self, ctx, client, devops):
        a, b = new_run(ctx, stage="staging"), new_run(ctx, stage="staging", coverage=10)
        gate(client, devops, a)
        denied = gate(client, devops, b)
        assert denied["status"] == "deny"
        assert holder(client, devops)["queue"] == []

    def test_a_denied_waiter_leaves_the_queue(self, ctx, client, devops):
        a, b, c = (new_run(ctx, stage="staging") for _ in range(3))
        gate(client, devops, a)
        gate(client, devops, b)
        gate(client, devops, c)
        # b is now denied (its own finish makes the run finished): it loses its place.
        finish(ctx, b)
        assert holder(client, devops)["queue"] == [c]

    def test_a_waiter_that_stops_asking_loses_its_place(self, ctx, client, devops, clock):
        a, b, c = (new_run(ctx, stage="staging") for _ in range(3))
        gate(client, devops, a)
        gate(client, devops, b)
        clock.advance(timedelta(minutes=20))
        gate(client, devops, c)
        clock.advance(timedelta(minutes=15))  # b last asked 35 min ago, c 15 min ago
        finish(ctx, a)
        assert gate(client, devops, c)["status"] == "allow"
        dropped = [d for action, d in lock_entries(ctx) if action == "lock.dequeue"]
        assert [(d["run_key"], d["reason"]) for d in dropped] == [
            (b, "did not ask again in time"),
            (c, "acquired"),
        ]


class TestLease:
    def test_an_expired_lease_frees_the_lock(self, ctx, client, devops, clock):
        a, b = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
        gate(client, devops, a)
        assert gate(client, devops, b)["status"] == "pending"
        clock.advance(timedelta(minutes=61))
        assert gate(client, devops, b)["status"] == "allow"
        actions = [(action, d.get("reason")) for action, d in lock_entries(ctx)]
        assert ("lock.expire", "lease expired") in actions

    def test_the_scheduler_tick_frees_expired_leases(self, ctx, client, devops, clock):
        gate(client, devops, new_run(ctx, stage="staging"))
        assert expire_leases(ctx) == []
        clock.advance(timedelta(hours=2))
        assert expire_leases(ctx) == ["to/staging"]
        assert holder(client, devops)["status"] == "free"

    def test_the_lease_comes_from_the_policy(self, ctx, client, devops, clock):
        from tests.gates.conftest import use_policy

        use_policy(ctx, "locks:\n  lease_minutes: 5\n")
        a, b = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
        gate(client, devops, a)
        clock.advance(timedelta(minutes=6))
        assert gate(client, devops, b)["status"] == "allow"


class TestRelease:
    def release(self, client: Any, key: str, **body: Any) -> Any:
        payload = {"tenant": "to", "stage": "staging", "reason": "agent died", **body}
        return client.post(
            f"{API}/lock/release", json=payload, headers={"Authorization": f"Bearer {key}"}
        )

    def test_an_administrator_releases_a_stuck_lock_with_a_reason(
        self, ctx, client, devops, make_key
    ):
        a, b = new_run(ctx, stage="staging"), new_run(ctx, stage="staging")
        gate(client, devops, a)
        gate(client, devops, b)
        response = self.release(client, make_key("tenant_admin", ["to"]))
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["released"]) == ("free", True)
        assert response.json()["queue"] == [b]
        assert gate(client, devops, b)["status"] == "allow"
        [release] = [d for action, d in lock_entries(ctx) if action == "lock.release"]
        assert (release["run_key"], release["reason"]) == (a, "agent died")

    def test_releasing_a_free_lock_changes_nothing(self, ctx, client, devops, make_key):
        a = new_run(ctx, stage="staging")
        gate(client, devops, a)
        finish(ctx, a)
        response = self.release(client, make_key("admin"))
        assert (response.status_code, response.json()["released"]) == (200, False)

    def test_a_tenant_administrator_of_another_tenant_cannot(self, ctx, client, devops, make_key):
        gate(client, devops, new_run(ctx, stage="staging"))
        response = self.release(client, make_key("tenant_admin", ["ws"]))
        assert response.status_code == 403
        assert holder(client, devops)["status"] == "held"

    def test_a_pipeline_cannot(self, ctx, client, devops):
        gate(client, devops, new_run(ctx, stage="staging"))
        assert self.release(client, devops).status_code == 403

    def test_a_reason_is_required_and_an_unknown_lock_is_404(self, client, make_key):
        admin = make_key("admin")
        assert self.release(client, admin, reason="").status_code == 422
        assert self.release(client, admin, stage="dr").status_code == 404
