"""Replay projections of governed policy changes (seed 000 §8.1), used by `audit/replay.py`:

- `azdev_policy_proposal`: policy.propose, policy.sign, policy.activate, policy.withdraw;
- `azdev_policy_signature`: policy.sign;
- `azdev_policy_version` (the list the main projector keeps): policy.activate, which holds
  the whole document as policy.apply does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.db.engine import Database
from azdev_ica.db.tables import PolicyProposal, PolicySignature

MODELS = (PolicyProposal, PolicySignature)

NATURAL_KEYS = {
    "azdev_policy_proposal": ("id",),
    "azdev_policy_signature": ("proposal_id", "person_id"),
}


class PolicyProjector:
    def __init__(self, versions: list[dict[str, Any]]) -> None:
        self.versions = versions  # the main projector's policy versions, in order
        self.proposals: dict[int, dict[str, Any]] = {}
        self.signatures: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any], datetime], None]] = {
            "policy.propose": self.propose,
            "policy.sign": self.sign,
            "policy.activate": self.activate,
            "policy.withdraw": self.withdraw,
        }

    def propose(self, body: dict[str, Any], at: datetime) -> None:
        data, proposal_id = body["data"], int(body["subject"]["id"])
        self.proposals[proposal_id] = {
            "id": proposal_id,
            "sha256": data["sha256"],
            "document": data["document"],
            "reason": data["reason"],
            "base_version_id": data["base_version_id"],
            "base_sha256": data["base_sha256"],
            "status": "pending",
            "signatures_required": data["signatures_required"],
            "proposed_by": body["actor"]["id"],
            "proposed_at": at,
            "version_id": None,
            "closed_at": None,
            "closed_by": None,
            "close_reason": None,
            "updated_at": at,
        }

    def sign(self, body: dict[str, Any], at: datetime) -> None:
        data, proposal_id = body["data"], int(body["subject"]["id"])
        self.signatures.append(
            {
                "proposal_id": proposal_id,
                "person_id": data["person_id"],
                "decision": data["decision"],
                "comment": data["comment"],
                "signed_at": at,
            }
        )
        row = self.proposals[proposal_id]
        row.update(status=data["status"], updated_at=at)
        if data["status"] != "pending":
            row.update(closed_at=at, closed_by=body["actor"]["id"])
        if data["status"] == "rejected":
            row.update(close_reason=data["comment"])

    def activate(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.versions.append(
            {
                "sha256": body["subject"]["id"],
                "document": data["document"],
                "applied_at": at,
                "applied_by": body["actor"]["id"],
            }
        )
        self.proposals[int(data["proposal_id"])].update(version_id=data["version_id"])

    def withdraw(self, body: dict[str, Any], at: datetime) -> None:
        self.proposals[int(body["subject"]["id"])].update(
            status="withdrawn",
            closed_at=at,
            closed_by=body["actor"]["id"],
            close_reason=body["data"]["reason"],
            updated_at=at,
        )


def rows(session: Session) -> dict[str, list[dict[str, Any]]]:
    def columns(model: Any, skip: tuple[str, ...]) -> list[str]:
        return [c.key for c in model.__table__.columns if c.key not in skip]

    proposals = columns(PolicyProposal, ())
    signatures = columns(PolicySignature, ("id",))
    return {
        "azdev_policy_proposal": [
            {c: getattr(r, c) for c in proposals} for r in session.scalars(select(PolicyProposal))
        ],
        "azdev_policy_signature": [
            {c: getattr(r, c) for c in signatures} for r in session.scalars(select(PolicySignature))
        ],
    }


def write_scratch(scratch: Database, projector: PolicyProjector) -> None:
    """Write the rebuilt proposals and signatures after the other projections (people)."""
    with scratch.write() as session:
        session.add_all(PolicyProposal(**row) for row in projector.proposals.values())
        session.flush()
        session.add_all(PolicySignature(**row) for row in projector.signatures)
