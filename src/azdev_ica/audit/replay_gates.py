"""Replay projections of the gate (issue 5), used by `audit/replay.py`:

- `azdev_gate_decision`: gate.decide;
- `azdev_deploy_lock` (holder by run key): gate.decide (a target's lock row exists from its
  first evaluation that was not a deny), lock.acquire, lock.release, lock.expire;
- `azdev_lock_waiter` (all but the last time the run asked, which is a touch): lock.queue,
  lock.dequeue;
- `azdev_override`, `azdev_override_signature`: override.request, override.sign,
  override.review, override.review_escalate;
- `azdev_unauthorised_change`: gate.unauthorised_deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from azdev_ica.db.engine import Database
from azdev_ica.db.tables import (
    DeployLock,
    GateEvaluation,
    LockWaiter,
    Override,
    OverrideSignature,
    PipelineRun,
    UnauthorisedChange,
)

MODELS = (DeployLock, LockWaiter, GateEvaluation, Override, OverrideSignature, UnauthorisedChange)

NATURAL_KEYS = {
    "azdev_deploy_lock": ("tenant", "stage"),
    "azdev_lock_waiter": ("tenant", "stage", "run_key"),
    "azdev_gate_decision": ("id",),
    "azdev_override": ("id",),
    "azdev_override_signature": ("override_id", "person_id"),
    "azdev_unauthorised_change": ("run_key", "event_id"),
}


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


class GateProjector:
    def __init__(self) -> None:
        self.locks: dict[tuple[str, str], dict[str, Any]] = {}
        self.waiters: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.decisions: dict[int, dict[str, Any]] = {}
        self.overrides: dict[int, dict[str, Any]] = {}
        self.signatures: list[dict[str, Any]] = []
        self.unauthorised: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any], datetime], None]] = {
            "gate.decide": self.gate_decide,
            "lock.acquire": self.lock_acquire,
            "lock.release": self.lock_free,
            "lock.expire": self.lock_free,
            "lock.queue": self.lock_queue,
            "lock.dequeue": self.lock_dequeue,
            "override.request": self.override_request,
            "override.sign": self.override_sign,
            "override.review": self.override_review,
            "override.review_escalate": self.override_escalate,
            "gate.unauthorised_deploy": self.unauthorised_deploy,
        }

    def _lock(self, body: dict[str, Any], at: datetime) -> dict[str, Any]:
        tenant, stage = body["tenant"], body["data"]["stage"]
        return self.locks.setdefault(
            (tenant, stage),
            {
                "tenant": tenant,
                "stage": stage,
                "holder_run_key": None,
                "acquired_at": None,
                "expires_at": None,
                "updated_at": at,
            },
        )

    def gate_decide(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        if data["status"] != "deny":
            self._lock(body, at)
        self.decisions[int(data["decision"])] = {
            "id": int(data["decision"]),
            "run_key": body["subject"]["id"],
            "tenant": body["tenant"],
            "stage": data["stage"],
            "artifact_digest": data["artifact_digest"],
            "commit": data["commit"],
            "status": data["status"],
            "codes": [reason["code"] for reason in data["reasons"]],
            "approval_id": data["approval_id"],
            "override_id": data["override_id"],
            "policy_hash": data["policy_sha256"],
            "decided_at": at,
            "decided_by": body["actor"]["id"],
        }

    def lock_acquire(self, body: dict[str, Any], at: datetime) -> None:
        lock, data = self._lock(body, at), body["data"]
        if not data["renewed"]:
            lock.update(holder_run_key=data["run_key"], acquired_at=at)
        lock.update(expires_at=_time(data["expires_at"]), updated_at=at)

    def lock_free(self, body: dict[str, Any], at: datetime) -> None:
        self._lock(body, at).update(
            holder_run_key=None, acquired_at=None, expires_at=None, updated_at=at
        )

    def lock_queue(self, body: dict[str, Any], at: datetime) -> None:
        key = (body["tenant"], body["data"]["stage"], body["data"]["run_key"])
        self.waiters[key] = {
            "tenant": key[0],
            "stage": key[1],
            "run_key": key[2],
            "queued_at": at,
            "last_seen_at": at,
        }

    def lock_dequeue(self, body: dict[str, Any], at: datetime) -> None:
        del self.waiters[(body["tenant"], body["data"]["stage"], body["data"]["run_key"])]

    def override_request(self, body: dict[str, Any], at: datetime) -> None:
        data, override_id = body["data"], int(body["subject"]["id"])
        self.overrides[override_id] = {
            "id": override_id,
            "run_key": data["run_key"],
            "tenant": body["tenant"],
            "stage": data["stage"],
            "artifact_digest": data["artifact_digest"],
            "reason": data["reason"],
            "status": "pending",
            "signatures_required": data["signatures_required"],
            "requested_by": body["actor"]["id"],
            "requested_at": at,
            "signed_at": None,
            "policy_hash": data["policy_sha256"],
            "review_due_at": None,
            "review_escalated_at": None,
            "reviewed_at": None,
            "reviewed_by": None,
            "review_findings": None,
            "updated_at": at,
        }

    def override_sign(self, body: dict[str, Any], at: datetime) -> None:
        data, override_id = body["data"], int(body["subject"]["id"])
        self.signatures.append(
            {
                "override_id": override_id,
                "person_id": data["person_id"],
                "decision": data["decision"],
                "comment": data["comment"],
                "signed_at": at,
            }
        )
        row = self.overrides[override_id]
        row.update(status=data["status"], updated_at=at)
        if data["status"] == "signed":
            row.update(signed_at=at, review_due_at=_time(data["review_due_at"]))

    def override_review(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.overrides[int(body["subject"]["id"])].update(
            reviewed_at=at,
            reviewed_by=data["person_id"],
            review_findings=data["findings"],
            updated_at=at,
        )

    def override_escalate(self, body: dict[str, Any], at: datetime) -> None:
        self.overrides[int(body["subject"]["id"])].update(review_escalated_at=at, updated_at=at)

    def unauthorised_deploy(self, body: dict[str, Any], at: datetime) -> None:
        self.unauthorised.append(
            {
                "run_key": body["subject"]["id"],
                "event_id": body["data"]["event_id"],
                "tenant": body["tenant"],
                "stage": body["data"]["stage"],
                "detected_at": at,
            }
        )

    def write(self, session: Session, run_ids: dict[str, int]) -> None:
        """The rebuilt rows, in the scratch session (runs and people are there already)."""

        def pk(key: str | None) -> int | None:
            return None if key is None else run_ids.get(key)

        for lock in self.locks.values():
            session.add(DeployLock(holder_run_pk=pk(lock["holder_run_key"]), **lock))
        for waiter in self.waiters.values():
            session.add(LockWaiter(run_pk=pk(waiter["run_key"]), **waiter))
        if self.decisions:
            rows = [{"run_pk": pk(d["run_key"]), **d} for d in self.decisions.values()]
            session.execute(insert(GateEvaluation), rows)
        session.add_all(Override(run_pk=pk(o["run_key"]), **o) for o in self.overrides.values())
        session.flush()
        session.add_all(OverrideSignature(**s) for s in self.signatures)
        session.add_all(UnauthorisedChange(run_pk=pk(u["run_key"]), **u) for u in self.unauthorised)


def rows(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The gate's projections by natural keys, without surrogate run ids."""
    keys = dict(session.execute(select(PipelineRun.id, PipelineRun.run_key)).all())

    def columns(model: Any, skip: tuple[str, ...]) -> list[str]:
        return [c.key for c in model.__table__.columns if c.key not in skip]

    out: dict[str, list[dict[str, Any]]] = {}
    # The version counts the row's changes for concurrent evaluations (services/locks.py):
    # not recorded, as a waiter's last_seen_at is not.
    locks = columns(DeployLock, ("id", "holder_run_pk", "version"))
    out["azdev_deploy_lock"] = [
        {c: getattr(r, c) for c in locks} for r in session.scalars(select(DeployLock))
    ]
    waiters = columns(LockWaiter, ("id", "run_pk", "last_seen_at"))
    out["azdev_lock_waiter"] = [
        {c: getattr(r, c) for c in waiters} for r in session.scalars(select(LockWaiter))
    ]
    decisions = columns(GateEvaluation, ("run_pk",))
    out["azdev_gate_decision"] = [
        {c: getattr(r, c) for c in decisions} for r in session.scalars(select(GateEvaluation))
    ]
    overrides = columns(Override, ("run_pk",))
    out["azdev_override"] = [
        {c: getattr(r, c) for c in overrides} for r in session.scalars(select(Override))
    ]
    signatures = columns(OverrideSignature, ("id",))
    out["azdev_override_signature"] = [
        {c: getattr(r, c) for c in signatures} for r in session.scalars(select(OverrideSignature))
    ]
    changes = columns(UnauthorisedChange, ("id", "run_pk"))
    out["azdev_unauthorised_change"] = [
        {**{c: getattr(r, c) for c in changes}, "run_key": keys.get(r.run_pk, r.run_key)}
        for r in session.scalars(select(UnauthorisedChange))
    ]
    return out


def write_scratch(scratch: Database, projector: GateProjector) -> None:
    """Write the gate's rebuilt rows after the other projections (they refer to runs)."""
    with scratch.write() as session:
        run_ids = {
            key: pk for pk, key in session.execute(select(PipelineRun.id, PipelineRun.run_key))
        }
        projector.write(session, run_ids)
