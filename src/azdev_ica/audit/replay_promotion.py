"""Replay projections of promotion (seed 002), used by `audit/replay.py`:

- `azdev_signoff`: signoff.give;
- `azdev_refresh_request`: refresh.request, refresh.decide, refresh.complete.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.db.engine import Database
from azdev_ica.db.tables import RefreshRequest, Signoff

MODELS = (Signoff, RefreshRequest)

NATURAL_KEYS = {
    "azdev_signoff": ("id",),
    "azdev_refresh_request": ("id",),
}


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


class PromotionProjector:
    def __init__(self) -> None:
        self.signoffs: list[dict[str, Any]] = []
        self.refreshes: dict[int, dict[str, Any]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], datetime], None]] = {
            "signoff.give": self.signoff_give,
            "refresh.request": self.refresh_request,
            "refresh.decide": self.refresh_decide,
            "refresh.complete": self.refresh_complete,
        }

    def signoff_give(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.signoffs.append(
            {
                "id": int(body["subject"]["id"]),
                "tenant": body["tenant"],
                "stage": data["stage"],
                "artifact_digest": data["artifact_digest"],
                "kind": data["kind"],
                "person_id": int(data["person_id"]),
                "role": data["role"],
                "comment": data["comment"],
                "signed_at": _time(data["signed_at"]),
            }
        )

    def refresh_request(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        number = int(body["subject"]["id"])
        self.refreshes[number] = {
            "id": number,
            "tenant": body["tenant"],
            "source_stage": data["source_stage"],
            "target_stage": data["target_stage"],
            "reason": data["reason"],
            "evidence_sha256": data["evidence"]["sha256"],
            "evidence_uri": data["evidence"]["uri"],
            "evidence_description": data["evidence"]["description"],
            "status": "requested",
            "requested_by": body["actor"]["id"],
            "requested_at": at,
            "decided_by": None,
            "decided_at": None,
            "decision_comment": None,
            "completed_by": None,
            "completed_at": None,
            "updated_at": at,
        }

    def refresh_decide(self, body: dict[str, Any], at: datetime) -> None:
        row = self.refreshes[int(body["subject"]["id"])]
        row.update(
            status=body["data"]["decision"],
            decided_by=body["actor"]["id"],
            decided_at=at,
            decision_comment=body["data"]["comment"],
            updated_at=at,
        )

    def refresh_complete(self, body: dict[str, Any], at: datetime) -> None:
        row = self.refreshes[int(body["subject"]["id"])]
        row.update(status="completed", completed_by=body["actor"]["id"], completed_at=at)
        row["updated_at"] = at


def rows(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The promotion projections, every column (their ids are the audit subjects)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for model in MODELS:
        out[model.__tablename__] = [
            {c.key: getattr(r, c.key) for c in model.__table__.columns}
            for r in session.scalars(select(model))
        ]
    return out


def write_scratch(scratch: Database, projector: PromotionProjector) -> None:
    """Write the rebuilt rows after the other projections (sign-offs refer to people)."""
    with scratch.write() as session:
        session.add_all(Signoff(**row) for row in projector.signoffs)
        session.add_all(RefreshRequest(**row) for row in projector.refreshes.values())
