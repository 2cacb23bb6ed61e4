"""Two `ica serve` processes on one PostgreSQL (seed 000 §3.1): every job acts once on each due
item, a target's deployment lock holds across processes, and a process killed with SIGKILL
loses no work: the other takes its leases over once they run out.

The tests of this module share one cluster and run in order; each checks the whole
database once the cluster has settled (nothing due, everything sealed, signed, cosigned)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from azdev_ica.adapters.notify import message_text
from azdev_ica.clock import FrozenClock
from azdev_ica.db.tables import (
    Approval,
    AuditCheckpoint,
    AuditEntry,
    AuditInbox,
    AuditTree,
    JobLease,
    OutboxMessage,
    WitnessCosignature,
)
from tests.gates.conftest import PIPELINE, new_run
from tests.replicas.conftest import Cluster, Server, context, wait_for

RUN_IDS = itertools.count(1000)


def overdue_approvals(cluster: Cluster, tenants: list[str]) -> list[int]:
    """Production approval requests asked five hours ago: the SLA's warning (2 h) and its
    escalation (4 h) are both due at once."""
    from azdev_ica.services.approvals import RequestApproval, request_approval

    earlier = context(
        cluster.database_url,
        cluster.root,
        FrozenClock(cluster.ctx.clock.now() - timedelta(hours=5)),
    )
    try:
        ids = []
        for tenant in tenants:
            run_key = new_run(earlier, tenant=tenant, stage="production")
            outcome = request_approval(
                earlier, principal=PIPELINE, command=RequestApproval(run_key=run_key)
            )
            ids.append(outcome.approval.id)
        return ids
    finally:
        earlier.db.dispose()


def settled(cluster: Cluster) -> bool:
    """Nothing left to do: no notification pending, every audit record sealed, the latest
    tree signed and cosigned by the witness, no open request overdue."""
    with cluster.ctx.read() as session:
        pending = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "pending")
        )
        unsealed = session.scalar(
            select(func.count())
            .select_from(AuditInbox)
            .where(
                ~select(AuditEntry.inbox_id).where(AuditEntry.inbox_id == AuditInbox.id).exists()
            )
        )
        tree = session.scalar(select(func.max(AuditTree.size)))
        signed = session.scalar(select(func.max(AuditCheckpoint.size)))
        cosigned = session.scalar(select(func.max(WitnessCosignature.size)))
        overdue = session.scalar(
            select(func.count())
            .select_from(Approval)
            .where(Approval.open_key.is_not(None), Approval.escalated_at.is_(None))
            .where(Approval.sla_due_at <= cluster.ctx.clock.now())
        )
    return (
        pending == 0
        and unsealed == 0
        and tree is not None
        and tree == signed == cosigned
        and (overdue == 0)
    )


def assert_each_item_once(cluster: Cluster, approvals: list[int]) -> None:
    """What the jobs did, counted at their boundaries: the chat webhook, the audit ledger, the
    witness."""
    with cluster.ctx.read() as session:
        webhook_rows = session.scalars(
            select(OutboxMessage).where(OutboxMessage.channel == "webhook")
        ).all()
        assert {row.state for row in webhook_rows} == {"delivered"}
        sent = Counter(message_text(row.payload) for row in webhook_rows)
        steps = Counter(
            session.execute(
                select(AuditEntry.subject_id, AuditEntry.action).where(
                    AuditEntry.action.in_(["approval.sla_warning", "approval.sla_escalate"])
                )
            ).all()
        )
        notified = Counter(
            session.execute(
                select(OutboxMessage.subject_id, OutboxMessage.topic).where(
                    OutboxMessage.channel == "notify", OutboxMessage.topic.like("approval.sla_%")
                )
            ).all()
        )
        cosigned = sorted(session.scalars(select(WitnessCosignature.size)))
        sealed = session.scalar(
            select(func.count(func.distinct(AuditEntry.inbox_id))).where(
                AuditEntry.inbox_id.is_not(None)
            )
        )
        entries = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.inbox_id.is_not(None))
        )
        inbox = session.scalar(select(func.count()).select_from(AuditInbox))
        trees = list(session.scalars(select(AuditTree.size).order_by(AuditTree.size)))
    # Every notification went out once: the webhook got exactly the delivered rows' messages.
    assert cluster.webhook.received() == sent
    for approval_id in map(str, approvals):
        assert steps[(approval_id, "approval.sla_warning")] == 1
        assert steps[(approval_id, "approval.sla_escalate")] == 1
        assert notified[(approval_id, "approval.sla_warning")] == 1
        assert notified[(approval_id, "approval.sla_escalation")] == 1
    # One ledger: each audit record sealed once, one chain of trees, each cosigned checkpoint
    # submitted once and accepted (no witness ever saw a stale or doubled submission).
    assert sealed == entries == inbox
    assert trees == sorted(set(trees))
    accepted = Counter(size for size, status in cluster.witness.added() if status == 200)
    assert sorted(accepted) == cosigned
    assert set(accepted.values()) == {1}
    assert all(status == 200 for _, status in cluster.witness.added())
    cluster.audit_verify()


def holders(cluster: Cluster) -> dict[str, str]:
    with cluster.ctx.read() as session:
        return dict(session.execute(select(JobLease.name, JobLease.holder)).all())


def pid_of(holder: str) -> int:
    return int(holder.split(":")[2])


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def record_events(cluster: Cluster, servers: list[Server], count: int) -> list[str]:
    """Runs started and reported over HTTP, alternating between the servers, concurrently."""
    keys: list[str] = []
    errors: list[Any] = []

    def one(n: int) -> None:
        server = servers[n % len(servers)]
        body = {"provider": "gh", "project_id": "77", "run_id": f"{n}", "pipeline_name": "ci"}
        status, run = cluster.call(server, "POST", "/run/start", body)
        if status != 201:
            errors.append((status, run))
            return
        event = {"run_key": run["run_key"], "phase": "test", "data": {"passed": True}}
        status, answer = cluster.call(server, "POST", "/run/event", event)
        if status != 201:
            errors.append((status, answer))
        keys.append(run["run_key"])

    threads = [threading.Thread(target=one, args=(next(RUN_IDS),)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    return keys


def test_two_processes_run_each_job_once_per_due_item(cluster: Cluster) -> None:
    a, b = cluster.replicas(2)
    approvals = overdue_approvals(cluster, ["ck", "ws", "sb"])
    record_events(cluster, [a, b], 8)
    wait_for(lambda: settled(cluster), "the cluster to settle")
    assert a.alive
    assert b.alive
    # Both processes were serving and standing by for each other's jobs.
    assert {pid_of(holder) for holder in holders(cluster).values()} <= {
        a.process.pid,
        b.process.pid,
    }
    assert_each_item_once(cluster, approvals)


def test_a_targets_lock_holds_across_processes(cluster: Cluster) -> None:
    a, b = cluster.replicas(2)
    first = new_run(cluster.ctx, tenant="vu", stage="staging")
    second = new_run(cluster.ctx, tenant="vu", stage="staging")
    status, answer = cluster.call(a, "POST", "/gate/evaluate", {"run_key": first})
    assert (status, answer["status"]) == (200, "allow")
    status, answer = cluster.call(b, "POST", "/gate/evaluate", {"run_key": second})
    assert (status, answer["status"]) == (200, "pending")
    assert "lock_held" in {reason["code"] for reason in answer["reasons"]}
    status, lock = cluster.call(b, "GET", "/lock/vu/staging")
    assert status == 200
    assert lock["holder_run_key"] == first
    assert lock["queue"] == [second]
    # The holder finishes through the other process; the queued run takes the lock there.
    status, _ = cluster.call(b, "POST", "/run/finish", {"run_key": first, "status": "success"})
    assert status == 200
    status, answer = cluster.call(a, "POST", "/gate/evaluate", {"run_key": second})
    assert (status, answer["status"]) == (200, "allow")


def test_a_killed_process_loses_no_work(cluster: Cluster) -> None:
    a, b = cluster.replicas(2)
    wait_for(lambda: settled(cluster), "the cluster to settle")  # nothing is half done
    leases = holders(cluster)
    # Kill the process that holds the sealer's lease (and most likely every job's).
    victim, survivor = (a, b) if pid_of(leases["ledger.sealer"]) == a.process.pid else (b, a)
    held = {name for name, holder in leases.items() if pid_of(holder) == victim.process.pid}
    victim.kill()
    approvals = overdue_approvals(cluster, ["to", "vu"])
    record_events(cluster, [survivor], 6)
    # Settled work is not enough: a job whose work is done may still be under the dead
    # process's lease until the survivor next runs it and finds that lease expired.
    wait_for(
        lambda: (
            settled(cluster)
            and {pid_of(holders(cluster)[name]) for name in held} == {survivor.process.pid}
        ),
        "the survivor to take over",
    )
    taken = holders(cluster)
    assert {pid_of(taken[name]) for name in held} == {survivor.process.pid}
    assert_each_item_once(cluster, approvals)


def test_one_process_with_several_workers_runs_each_job_once(cluster: Cluster) -> None:
    """`ica serve --workers 2`: each worker runs the sealer and the scheduler beside its
    requests, under the same leases as separate replicas; a worker killed with SIGKILL loses
    no work (the other takes its leases over; the supervisor starts a new worker)."""
    cluster.stop_all()
    (served,) = cluster.serve(workers=2)
    approvals = overdue_approvals(cluster, ["ck"])
    record_events(cluster, [served], 6)
    wait_for(lambda: settled(cluster), "the workers to settle")
    assert served.alive
    # Every lease is held by a worker (the supervisor process runs no jobs).
    leases = holders(cluster)
    workers = {pid_of(holder) for holder in leases.values()}
    assert {parent_of(pid) for pid in workers} == {served.process.pid}
    assert_each_item_once(cluster, approvals)

    victim = pid_of(leases["ledger.sealer"])
    os.kill(victim, signal.SIGKILL)
    approvals += overdue_approvals(cluster, ["ws"])
    record_events(cluster, [served], 4)
    wait_for(lambda: settled(cluster), "the other worker to take over")
    taken = {pid_of(holder) for holder in holders(cluster).values()}
    assert victim not in taken
    assert {parent_of(pid) for pid in taken} == {served.process.pid}
    assert_each_item_once(cluster, approvals)
