"""`ica audit replay`: the audit log is the truth (DESIGN.md rule 2). Rebuild the projections
from the ledger alone into a scratch SQLite database, then compare them with the live tables;
any difference is a state change without its audit record (a gap), or the reverse.

Projections rebuilt (each from the actions listed):

- `azdev_pipeline_run`, `azdev_pipeline_run_attempt`: run.start, run.reopen, run.event (a
  build's artifact digest), run.finish; `azdev_pipeline_run_requester`: run.start, run.reopen
  (who triggered each attempt);
- `azdev_pipeline_event`: run.event;
- `azdev_policy_version`: policy.apply, policy.activate; `azdev_policy_proposal`,
  `azdev_policy_signature`: see audit/replay_policy.py;
- `azdev_api_key` (all but the secret's digest and the last-use time, which are not actions):
  apikey.create, apikey.revoke;
- `azdev_person`: person.create, person.disable, personal.erase; `azdev_role_grant`: grant.create,
  grant.revoke; `azdev_person_link`: person.link; `azdev_person_token` (all but the digest
  and the last-use time): token.create, token.revoke, person.disable;
- `azdev_incident`, `azdev_incident_note`, `azdev_incident_task`: incident.open,
  incident.note, incident.status, incident.rca, incident.task, incident.task_done;
- `azdev_backup`: backup.record; `azdev_dr_drill`: dr.drill;
- `azdev_signoff`, `azdev_refresh_request`: see `audit/replay_promotion.py`;
- `azdev_approval`: approval.request, approval.sign, approval.withdraw, approval.expire,
  approval.sla_warning, approval.sla_escalate (its open key is compared as open or not, since
  it holds a surrogate id); `azdev_approval_signature`: approval.sign; a delegated approver
  grant (`azdev_role_grant`): grant.delegate.

Personal values are in the ledger only as salted hashes; replay opens them with the erasable
openings table, so an erased person is absent from the rebuilt rows, as from the live ones
(a `personal.erase` record names the people and approvals whose fields it cleared).
Entries not sealed yet (still in the inbox) are replayed after the sealed ones. Actions of
other kinds are counted and listed; they do not feed these projections.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, insert, select

from azdev_ica.audit import replay_gates, replay_policy, replay_promotion
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import (
    ApiKey,
    Approval,
    ApprovalSignature,
    AuditEntry,
    AuditInbox,
    AuditShard,
    BackupRecord,
    Base,
    DrDrill,
    Incident,
    IncidentNote,
    IncidentTask,
    Person,
    PersonalDataOpening,
    PersonLink,
    PersonToken,
    PipelineEvent,
    PipelineRun,
    PolicyVersion,
    RoleGrant,
    RunAttempt,
    RunRequester,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.domain.incidents import Severity, restore_due
from azdev_ica.domain.runs import deploy_target
from azdev_ica.ledger.entry import EntryError, parse_entry
from azdev_ica.services.ledger import ERASED, erased_login

__all__ = ["Difference", "ReplayReport", "replay_ledger"]

PROJECTIONS = (
    Approval,
    ApprovalSignature,
    PipelineRun,
    RunAttempt,
    RunRequester,
    PipelineEvent,
    PolicyVersion,
    ApiKey,
    Person,
    RoleGrant,
    PersonLink,
    PersonToken,
    Incident,
    IncidentNote,
    IncidentTask,
    BackupRecord,
    DrDrill,
    *replay_gates.MODELS,
    *replay_policy.MODELS,
    *replay_promotion.MODELS,
)
_LISTED = 50


@dataclass
class Difference:
    table: str
    key: str
    column: str
    live: Any
    replayed: Any

    def __str__(self) -> str:
        return (
            f"{self.table} {self.key}: {self.column}: live {self.live!r}, ledger {self.replayed!r}"
        )


@dataclass
class ReplayReport:
    entries: int = 0
    pending: int = 0
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # live, replayed
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    other_actions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "pending": self.pending,
            "rows": {t: {"live": a, "ledger": b} for t, (a, b) in self.rows.items()},
            "differences": [d.__dict__ for d in self.differences],
            "problems": self.problems,
            "other_actions": self.other_actions,
        }

    def text(self) -> str:
        out = [f"replayed {self.entries} entries ({self.pending} not sealed yet)"]
        for table, (live, replayed) in self.rows.items():
            out.append(f"  {table}: {live} live rows, {replayed} rebuilt from the ledger")
        if self.other_actions:
            listed = ", ".join(f"{a} ({n})" for a, n in sorted(self.other_actions.items()))
            out.append(f"  other actions (no projection here): {listed}")
        out.extend(f"  - {p}" for p in self.problems)
        out.extend(f"  - {d}" for d in self.differences[:_LISTED])
        if len(self.differences) > _LISTED:
            out.append(f"  ... and {len(self.differences) - _LISTED} more (see --json)")
        if self.ok:
            out.append("RESULT: OK: the live tables are exactly what the ledger records")
        else:
            count = len(self.differences) + len(self.problems)
            out.append(f"RESULT: FAILED: {count} difference(s) between the ledger and the tables")
        return "\n".join(out)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


class _Projector:
    """Applies each action as the service did; the rows are keyed by natural keys."""

    def __init__(self, openings: dict[str, str]) -> None:
        self.openings = openings
        self.runs: dict[str, dict[str, Any]] = {}
        self.attempts: dict[tuple[str, int], dict[str, Any]] = {}
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: list[dict[str, Any]] = []
        self.keys: dict[str, dict[str, Any]] = {}
        self.people: dict[int, dict[str, Any]] = {}
        self.grants: dict[int, dict[str, Any]] = {}
        self.links: list[dict[str, Any]] = []
        self.tokens: dict[str, dict[str, Any]] = {}
        self.incidents: dict[int, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any]] = {}
        self.backups: list[dict[str, Any]] = []
        self.drills: list[dict[str, Any]] = []
        self.approvals: dict[int, dict[str, Any]] = {}
        self.requesters: dict[tuple[str, int], dict[str, Any]] = {}
        self.signatures: dict[tuple[int, str], dict[str, Any]] = {}
        self.other: Counter[str] = Counter()
        self.problems: list[str] = []
        self.handlers: dict[str, Callable[[dict[str, Any], datetime], None]] = {
            "run.start": self.run_start,
            "run.reopen": self.run_reopen,
            "run.event": self.run_event,
            "run.finish": self.run_finish,
            "policy.apply": self.policy_apply,
            "apikey.create": self.apikey_create,
            "apikey.revoke": self.apikey_revoke,
            "person.create": self.person_create,
            "personal.erase": self.personal_erase,
            "person.disable": self.person_disable,
            "grant.create": self.grant_create,
            "grant.revoke": self.grant_revoke,
            "person.link": self.person_link,
            "token.create": self.token_create,
            "token.revoke": self.token_revoke,
            "incident.open": self.incident_open,
            "incident.note": self.incident_note,
            "incident.status": self.incident_status,
            "incident.rca": self.incident_rca,
            "incident.task": self.incident_task,
            "incident.task_done": self.incident_task_done,
            "backup.record": self.backup_record,
            "dr.drill": self.dr_drill,
            "grant.delegate": self.grant_create,
            "approval.request": self.approval_request,
            "approval.sign": self.approval_sign,
            "approval.withdraw": self.approval_close,
            "approval.expire": self.approval_close,
            "approval.sla_warning": self.approval_sla_warning,
            "approval.sla_escalate": self.approval_sla_escalate,
        }
        # The gate, locks and overrides (issue 5): see audit/replay_gates.py.
        self.gates = replay_gates.GateProjector()
        self.handlers.update(self.gates.handlers)
        # Governed policy changes: proposals, signatures, activated versions.
        self.governance = replay_policy.PolicyProjector(self.policies)
        self.handlers.update(self.governance.handlers)
        # Sign-offs and data refresh requests (seed 002): see audit/replay_promotion.py.
        self.promotion = replay_promotion.PromotionProjector()
        self.handlers.update(self.promotion.handlers)

    def apply(self, where: str, body: dict[str, Any]) -> None:
        action = str(body.get("action"))
        handler = self.handlers.get(action)
        if handler is None:
            self.other[action] += 1
            return
        try:
            at = _time(body["time"])
            assert at is not None
            handler(body, at)
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            self.problems.append(f"{where}: {action} cannot be replayed ({exc!r})")

    def _open(self, value: str | None) -> str | None:
        return None if value is None else self.openings.get(value)

    def run_start(self, body: dict[str, Any], at: datetime) -> None:
        data, key = body["data"], body["subject"]["id"]
        started = _time(data["start_time"])
        self.runs[key] = {
            "run_key": key,
            "provider": data["provider"],
            "project_id": data["project_id"],
            "project": data.get("project"),
            "run_id": data["run_id"],
            "pipeline_name": data["pipeline_name"],
            "branch": data.get("branch"),
            "commit": data.get("commit"),
            "status": "running",
            "flagged": False,
            "attempt": data["attempt"],
            "start_time": started,
            "end_time": None,
            "tenant": body["tenant"],
            "stage": data.get("stage"),
            "artifact_digest": data.get("artifact_digest"),
            "requested_for": self._open(data.get("requested_for")),
            "requested_for_email": self._open(data.get("requested_for_email")),
            "created_at": at,
            "updated_at": at,
            "commit_at": _time(data.get("commit_at")),
        }
        self.attempts[(key, data["attempt"])] = {
            "started_at": started,
            "finished_at": None,
            "status": "running",
            "provider_status": None,
        }
        self._requester(key, data["attempt"], data.get("requested_for"), at)

    def _requester(self, key: str, attempt: int, requested_for: str | None, at: datetime) -> None:
        provider = {"ado": "ado", "gh": "github"}.get(self.runs[key]["provider"])
        if requested_for is None or provider is None:
            return
        self.requesters[(key, attempt)] = {
            "provider": provider,
            "provider_user_id": self._open(requested_for),
            "recorded_at": at,
        }

    def run_reopen(self, body: dict[str, Any], at: datetime) -> None:
        key, attempt = body["subject"]["id"], body["data"]["attempt"]
        run = self.runs[key]
        self.attempts[(key, attempt)] = {
            "started_at": at,
            "finished_at": None,
            "status": "running",
            "provider_status": None,
        }
        run.update(attempt=attempt, status="running", flagged=False, end_time=None, updated_at=at)
        self._requester(key, attempt, body["data"].get("requested_for"), at)

    def run_event(self, body: dict[str, Any], at: datetime) -> None:
        data, key = body["data"], body["subject"]["id"]
        run = self.runs[key]
        payload = data["data"]
        if data["phase"] == "build" and run["artifact_digest"] is None:
            digest = payload.get("artifact_digest")
            if isinstance(digest, str):
                run.update(artifact_digest=digest, updated_at=at)
        target_tenant, target_stage, target_digest = deploy_target(
            data["phase"],
            payload,
            run_tenant=run["tenant"],
            run_stage=run["stage"],
            run_digest=run["artifact_digest"],
        )
        self.events[(key, data["event_id"])] = {
            "attempt": data["attempt"],
            "phase": data["phase"],
            "occurred_at": _time(data["occurred_at"]),
            "recorded_at": at,
            "data": payload,
            "target_tenant": target_tenant,
            "target_stage": target_stage,
            "target_digest": target_digest,
        }

    def run_finish(self, body: dict[str, Any], at: datetime) -> None:
        data, key = body["data"], body["subject"]["id"]
        run = self.runs[key]
        ended = _time(data["end_time"])
        self.attempts[(key, data["attempt"])].update(
            status=data["status"], provider_status=data["provider_status"], finished_at=ended
        )
        if data["attempt"] == run["attempt"]:
            run.update(
                status=data["status"], flagged=data["flagged"], end_time=ended, updated_at=at
            )

    def policy_apply(self, body: dict[str, Any], at: datetime) -> None:
        self.policies.append(
            {
                "sha256": body["subject"]["id"],
                "document": body["data"].get("document"),
                "applied_at": at,
                "applied_by": body["actor"]["id"],
            }
        )

    def apikey_create(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.keys[body["subject"]["id"]] = {
            "prefix": body["subject"]["id"],
            "name": data["name"],
            "role": data["role"],
            "tenants": data["tenants"],
            "stages": data.get("stages"),
            "created_at": at,
            "created_by": body["actor"]["id"],
            "expires_at": _time(data.get("expires_at")),
            "revoked_at": None,
        }

    def apikey_revoke(self, body: dict[str, Any], at: datetime) -> None:
        self.keys[body["subject"]["id"]]["revoked_at"] = at

    def person_create(self, body: dict[str, Any], at: datetime) -> None:
        data, person_id = body["data"], int(body["subject"]["id"])
        self.people[person_id] = {
            "id": person_id,
            "login": self._open(data["login"]),
            "display_name": self._open(data["display_name"]),
            "email": self._open(data.get("email")),
            "created_at": at,
            "created_by": body["actor"]["id"],
            "disabled_at": None,
            "disabled_reason": None,
        }

    def personal_erase(self, body: dict[str, Any], at: datetime) -> None:
        """The erasure cleared these people's e-mail and display name (and login, when it was
        the e-mail) and these approvals' requester provider id, as `erase_personal_data` did
        in the live tables; the values it erased elsewhere no longer open (their openings are
        gone), so they rebuild as NULL on their own."""
        data = body["data"]
        for cleared in data.get("people", []):
            person = self.people[int(cleared["id"])]
            person.update(email=None, display_name=ERASED)
            if cleared["login"]:
                person["login"] = erased_login(int(cleared["id"]))
        for approval_id in data.get("approvals", []):
            self.approvals[int(approval_id)]["requester_provider_id"] = None

    def person_disable(self, body: dict[str, Any], at: datetime) -> None:
        person_id = int(body["subject"]["id"])
        self.people[person_id].update(disabled_at=at, disabled_reason=body["data"]["reason"])
        for token in self.tokens.values():  # disabling revokes every live token
            if token["person_id"] == person_id and token["revoked_at"] is None:
                token["revoked_at"] = at

    def grant_create(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.grants[int(data["grant"])] = {
            "id": int(data["grant"]),
            "person_id": int(body["subject"]["id"]),
            "role": data["role"],
            "tenant": data["tenant"],
            "granted_at": at,
            "granted_by": body["actor"]["id"],
            "expires_at": _time(data.get("expires_at")),
            "delegated_from": data.get("delegated_from"),
            "reason": data.get("reason"),
            "revoked_at": None,
            "revoked_by": None,
            "stages": data.get("stages"),
        }

    def approval_request(self, body: dict[str, Any], at: datetime) -> None:
        data, approval_id = body["data"], int(body["subject"]["id"])
        self.approvals[approval_id] = {
            "id": approval_id,
            "run_key": data["run_key"],
            "tenant": body["tenant"],
            "stage": data["stage"],
            "artifact_digest": data["artifact_digest"],
            "commit": data["commit"],
            "cost_impact_minor": data["cost_impact_minor"],
            "budget_minor": data["budget_minor"],
            "currency": data["currency"],
            "status": "pending",
            "open": True,
            "requested_by": body["actor"]["id"],
            "requester_person_id": data["requester_person_id"],
            "requester_provider": data["requester_provider"],
            "requester_provider_id": self._open(data["requester_provider_id"]),
            "policy_hash": data["policy_sha256"],
            "business_first": data["business_first"],
            "requested_at": at,
            "expires_at": _time(data["expires_at"]),
            "sla_warning_due_at": _time(data["sla_warning_due_at"]),
            "sla_due_at": _time(data["sla_due_at"]),
            "sla_warned_at": None,
            "escalated_at": None,
            "decided_at": None,
            "closed_reason": None,
            "updated_at": at,
        }

    def approval_sign(self, body: dict[str, Any], at: datetime) -> None:
        data, approval_id = body["data"], int(body["subject"]["id"])
        self.signatures[(approval_id, data["half"])] = {
            "approval_id": approval_id,
            "half": data["half"],
            "person_id": data["person_id"],
            "role": data["role"],
            "decision": data["decision"],
            "comment": data["comment"],
            "signed_at": at,
        }
        approval = self.approvals[approval_id]
        approval.update(status=data["status"], updated_at=at)
        if data["status"] in ("approved", "rejected"):
            approval.update(decided_at=at, open=False)

    def approval_close(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.approvals[int(body["subject"]["id"])].update(
            status=data["status"],
            updated_at=at,
            decided_at=at,
            open=False,
            closed_reason=data.get("reason", "expired"),
        )

    def approval_sla_warning(self, body: dict[str, Any], at: datetime) -> None:
        self.approvals[int(body["subject"]["id"])]["sla_warned_at"] = at

    def approval_sla_escalate(self, body: dict[str, Any], at: datetime) -> None:
        self.approvals[int(body["subject"]["id"])]["escalated_at"] = at

    def grant_revoke(self, body: dict[str, Any], at: datetime) -> None:
        self.grants[int(body["data"]["grant"])].update(
            revoked_at=at, revoked_by=body["actor"]["id"]
        )

    def person_link(self, body: dict[str, Any], at: datetime) -> None:
        self.links.append(
            {
                "person_id": int(body["subject"]["id"]),
                "provider": body["data"]["provider"],
                "provider_user_id": self._open(body["data"]["provider_user_id"]),
                "created_at": at,
                "created_by": body["actor"]["id"],
            }
        )

    def token_create(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.tokens[data["token"]] = {
            "prefix": data["token"],
            "person_id": int(body["subject"]["id"]),
            "name": data["name"],
            "created_at": at,
            "expires_at": _time(data["expires_at"]),
            "revoked_at": None,
        }

    def token_revoke(self, body: dict[str, Any], at: datetime) -> None:
        self.tokens[body["data"]["token"]]["revoked_at"] = at

    def _incident_note(self, body: dict[str, Any], at: datetime, kind: str, text: str) -> None:
        self.notes.append(
            {
                "incident_id": int(body["subject"]["id"]),
                "at": at,
                "actor": body["actor"]["id"],
                "kind": kind,
                "text": text,
            }
        )

    def incident_open(self, body: dict[str, Any], at: datetime) -> None:
        data, number = body["data"], int(body["subject"]["id"])
        detected = _time(data["detected_at"])
        assert detected is not None
        self.incidents[number] = {
            "id": number,
            "tenant": body["tenant"],
            "stage": data["stage"],
            "run_key": data["run_key"],
            "title": data["title"],
            "severity": data["severity"],
            "status": "open",
            "opened_at": at,
            "opened_by": body["actor"]["id"],
            "detected_at": detected,
            "restore_due_at": restore_due(Severity(data["severity"]), detected),
            "mitigated_at": None,
            "resolved_at": None,
            "closed_at": None,
            "rca": None,
            "rca_by": None,
            "updated_at": at,
        }
        if data.get("summary"):
            self._incident_note(body, at, "note", data["summary"])

    def incident_note(self, body: dict[str, Any], at: datetime) -> None:
        self.incidents[int(body["subject"]["id"])]["updated_at"] = at
        self._incident_note(body, at, "note", body["data"]["text"])

    def incident_status(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        incident = self.incidents[int(body["subject"]["id"])]
        incident.update(status=data["to"], updated_at=at)
        moment = {"mitigated": "mitigated_at", "resolved": "resolved_at", "closed": "closed_at"}
        if data["to"] in moment:
            incident[moment[data["to"]]] = at
        elif data["to"] == "open":
            incident["resolved_at"] = None
        comment = data.get("comment")
        text = f"{data['from']} -> {data['to']}" + (f": {comment.strip()}" if comment else "")
        self._incident_note(body, at, "status", text)

    def incident_rca(self, body: dict[str, Any], at: datetime) -> None:
        incident = self.incidents[int(body["subject"]["id"])]
        incident.update(rca=body["data"]["rca"], rca_by=body["actor"]["id"], updated_at=at)
        self._incident_note(body, at, "rca", body["data"]["rca"])

    def incident_task(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.tasks[int(data["task"])] = {
            "id": int(data["task"]),
            "incident_id": int(body["subject"]["id"]),
            "title": data["title"],
            "owner": data["owner"],
            "due_at": _time(data["due_at"]),
            "created_at": at,
            "created_by": body["actor"]["id"],
            "done_at": None,
            "done_by": None,
        }
        self._incident_note(body, at, "task", f"task {data['task']}: {data['title']}")

    def backup_record(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.backups.append(
            {
                "id": int(body["subject"]["id"]),
                "tenant": body["tenant"],
                "stage": data["stage"],
                "kind": data["kind"],
                "taken_at": _time(data["taken_at"]),
                "size_bytes": data["size_bytes"],
                "sha256": data["sha256"],
                "encrypted": data["encrypted"],
                "location": data["location"],
                "recorded_at": at,
                "recorded_by": body["actor"]["id"],
            }
        )

    def dr_drill(self, body: dict[str, Any], at: datetime) -> None:
        data = body["data"]
        self.drills.append(
            {
                "id": int(body["subject"]["id"]),
                "tenant": body["tenant"],
                "stage": data["stage"],
                "backup_id": data["backup"],
                "started_at": _time(data["started_at"]),
                "finished_at": _time(data["finished_at"]),
                "succeeded": data["succeeded"],
                "rto_seconds": data["rto_seconds"],
                "rpo_seconds": data["rpo_seconds"],
                "rto_target_seconds": data["rto_target_seconds"],
                "rpo_target_seconds": data["rpo_target_seconds"],
                "notes": data["notes"],
                "recorded_at": at,
                "recorded_by": body["actor"]["id"],
            }
        )

    def incident_task_done(self, body: dict[str, Any], at: datetime) -> None:
        task = self.tasks[int(body["data"]["task"])]
        task.update(done_at=at, done_by=body["actor"]["id"])
        self._incident_note(body, at, "task", f"task {task['id']} done")


def _bodies(db: Database, report: ReplayReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every audit record in log order: sealed entries shard by shard, then the inbox tail."""
    with db.engine.connect() as conn, conn.begin():
        years = list(conn.scalars(select(AuditShard.year).order_by(AuditShard.year)))
        for year in years:
            rows = conn.execution_options(yield_per=2000).execute(
                select(AuditEntry.idx, AuditEntry.entry)
                .where(AuditEntry.year == year)
                .order_by(AuditEntry.idx)
            )
            for index, raw in rows:
                report.entries += 1
                try:
                    yield f"entry {index} of {year}", parse_entry(stored_bytes(raw)).body
                except EntryError as exc:
                    report.problems.append(f"entry {index} of {year}: {exc}")
    with db.read() as session:
        newest = session.scalar(select(func.max(AuditEntry.inbox_id))) or 0
        sealed = exists().where(AuditEntry.inbox_id == AuditInbox.id)
        for row in session.scalars(select(AuditInbox).where(~sealed).order_by(AuditInbox.id)):
            if row.id < newest:
                # Later records are sealed, so this one should be too: its entry was removed
                # (which `ica audit verify` reports), or it committed a moment ago.
                report.problems.append(
                    f"inbox record {row.id} ({row.action} {row.subject_id}) is not in the "
                    f"ledger, though later records are: its entry was removed, or it is being "
                    "sealed right now (run the replay again)"
                )
                continue
            report.entries += 1
            report.pending += 1
            yield f"inbox record {row.id}", json.loads(stored_bytes(row.body))


def _live(db: Database) -> dict[str, list[dict[str, Any]]]:
    with db.read() as session:
        return _rows(session)


def _rows(session: Any) -> dict[str, list[dict[str, Any]]]:
    """The projections by natural keys, without surrogate ids (the same for live and scratch)."""
    # A comprehension, not dict(): a Result has .keys() and dict() would take it for a mapping.
    keys = {pk: key for pk, key in session.execute(select(PipelineRun.id, PipelineRun.run_key))}  # noqa: C416
    out: dict[str, list[dict[str, Any]]] = {}
    out["azdev_pipeline_run"] = [
        {c.key: getattr(r, c.key) for c in PipelineRun.__table__.columns if c.key != "id"}
        for r in session.scalars(select(PipelineRun))
    ]
    out["azdev_pipeline_run_attempt"] = [
        {
            "run_key": keys[r.run_pk],
            "attempt": r.attempt,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "status": r.status,
            "provider_status": r.provider_status,
        }
        for r in session.scalars(select(RunAttempt))
    ]
    out["azdev_pipeline_run_requester"] = [
        {
            "run_key": keys[r.run_pk],
            "attempt": r.attempt,
            "provider": r.provider,
            "provider_user_id": r.provider_user_id,
            "recorded_at": r.recorded_at,
        }
        for r in session.scalars(select(RunRequester))
    ]
    out["azdev_pipeline_event"] = [
        {
            "run_key": keys[r.run_pk],
            "event_id": r.event_id,
            "attempt": r.attempt,
            "phase": r.phase,
            "occurred_at": r.occurred_at,
            "recorded_at": r.recorded_at,
            "data": r.data,
            "target_tenant": r.target_tenant,
            "target_stage": r.target_stage,
            "target_digest": r.target_digest,
        }
        for r in session.scalars(select(PipelineEvent))
    ]
    out["azdev_policy_version"] = [
        {
            "order": i,
            "sha256": r.sha256,
            "document": r.document,
            "applied_at": r.applied_at,
            "applied_by": r.applied_by,
        }
        for i, r in enumerate(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id)))
    ]
    out["azdev_api_key"] = [
        {
            "prefix": r.prefix,
            "name": r.name,
            "role": r.role,
            "tenants": r.tenants,
            "stages": r.stages,
            "created_at": r.created_at,
            "created_by": r.created_by,
            "expires_at": r.expires_at,
            "revoked_at": r.revoked_at,
        }
        for r in session.scalars(select(ApiKey))
    ]
    out["azdev_person"] = [
        {c.key: getattr(r, c.key) for c in Person.__table__.columns}
        for r in session.scalars(select(Person))
    ]
    out["azdev_role_grant"] = [
        {c.key: getattr(r, c.key) for c in RoleGrant.__table__.columns}
        for r in session.scalars(select(RoleGrant))
    ]
    out["azdev_person_link"] = [
        {c.key: getattr(r, c.key) for c in PersonLink.__table__.columns if c.key != "id"}
        for r in session.scalars(select(PersonLink))
    ]
    out["azdev_person_token"] = [
        {
            c.key: getattr(r, c.key)
            for c in PersonToken.__table__.columns
            if c.key not in ("id", "digest", "last_used_at")
        }
        for r in session.scalars(select(PersonToken))
    ]
    out["azdev_incident"] = [
        {c.key: getattr(r, c.key) for c in Incident.__table__.columns if c.key != "run_pk"}
        for r in session.scalars(select(Incident))
    ]
    seq: Counter[int] = Counter()
    notes = []
    for r in session.scalars(select(IncidentNote).order_by(IncidentNote.id)):
        seq[r.incident_id] += 1
        notes.append(
            {
                "incident_id": r.incident_id,
                "seq": seq[r.incident_id],
                "at": r.at,
                "actor": r.actor,
                "kind": r.kind,
                "text": r.text,
            }
        )
    out["azdev_incident_note"] = notes
    for model in (BackupRecord, DrDrill):
        out[model.__tablename__] = [
            {c.key: getattr(r, c.key) for c in model.__table__.columns}
            for r in session.scalars(select(model))
        ]
    out["azdev_incident_task"] = [
        {c.key: getattr(r, c.key) for c in IncidentTask.__table__.columns}
        for r in session.scalars(select(IncidentTask))
    ]
    out["azdev_approval"] = [
        {
            **{
                c.key: getattr(r, c.key)
                for c in Approval.__table__.columns
                if c.key not in ("run_pk", "open_key")
            },
            "open": r.open_key is not None,
        }
        for r in session.scalars(select(Approval))
    ]
    out["azdev_approval_signature"] = [
        {c.key: getattr(r, c.key) for c in ApprovalSignature.__table__.columns if c.key != "id"}
        for r in session.scalars(select(ApprovalSignature))
    ]
    out.update(replay_gates.rows(session))
    out.update(replay_policy.rows(session))
    out.update(replay_promotion.rows(session))
    return out


_NATURAL_KEYS = {
    **replay_gates.NATURAL_KEYS,
    **replay_policy.NATURAL_KEYS,
    **replay_promotion.NATURAL_KEYS,
    "azdev_pipeline_run": ("run_key",),
    "azdev_pipeline_run_attempt": ("run_key", "attempt"),
    "azdev_pipeline_run_requester": ("run_key", "attempt"),
    "azdev_pipeline_event": ("run_key", "event_id"),
    "azdev_policy_version": ("order",),
    "azdev_api_key": ("prefix",),
    "azdev_person": ("id",),
    "azdev_role_grant": ("id",),
    "azdev_person_link": ("provider", "provider_user_id"),
    "azdev_person_token": ("prefix",),
    "azdev_incident": ("id",),
    "azdev_incident_note": ("incident_id", "seq"),
    "azdev_incident_task": ("id",),
    "azdev_backup": ("id",),
    "azdev_dr_drill": ("id",),
    "azdev_approval": ("id",),
    "azdev_approval_signature": ("approval_id", "half"),
}


def _write_scratch(scratch: Database, projector: _Projector) -> None:
    """The rebuilt projections as real rows, in the same tables as the live database."""
    with scratch.write() as session:
        for run in projector.runs.values():
            session.add(PipelineRun(**run))
        session.flush()
        ids = {k: pk for k, pk in session.execute(select(PipelineRun.run_key, PipelineRun.id))}  # noqa: C416
        attempts = [
            {"run_pk": ids[key], "attempt": attempt, **row}
            for (key, attempt), row in projector.attempts.items()
        ]
        events = [
            {"run_pk": ids[key], "event_id": event_id, **row}
            for (key, event_id), row in projector.events.items()
        ]
        if attempts:
            session.execute(insert(RunAttempt), attempts)
        if events:
            session.execute(insert(PipelineEvent), events)
        requesters = [
            {"run_pk": ids[key], "attempt": attempt, **row}
            for (key, attempt), row in projector.requesters.items()
        ]
        if requesters:
            session.execute(insert(RunRequester), requesters)
        for policy in projector.policies:
            session.add(PolicyVersion(**policy))
        for key in projector.keys.values():
            session.add(ApiKey(digest="", last_used_at=None, **key))
        session.add_all(Person(**person) for person in projector.people.values())
        session.flush()
        session.add_all(RoleGrant(**grant) for grant in projector.grants.values())
        session.add_all(PersonLink(**link) for link in projector.links)
        session.add_all(
            PersonToken(digest="", last_used_at=None, **token)
            for token in projector.tokens.values()
        )
        session.add_all(
            Incident(run_pk=ids.get(incident["run_key"]), **incident)
            for incident in projector.incidents.values()
        )
        session.flush()
        session.add_all(IncidentNote(**note) for note in projector.notes)
        session.add_all(IncidentTask(**task) for task in projector.tasks.values())
        session.add_all(BackupRecord(**row) for row in projector.backups)
        session.flush()
        session.add_all(DrDrill(**row) for row in projector.drills)
        for row in projector.approvals.values():
            approval = {key: value for key, value in row.items() if key != "open"}
            run_pk = ids[row["run_key"]]
            open_key = f"{run_pk}:{row['tenant']}:{row['stage']}" if row["open"] else None
            session.add(Approval(run_pk=run_pk, open_key=open_key, **approval))
        session.flush()
        session.add_all(ApprovalSignature(**row) for row in projector.signatures.values())


def _compare(
    live: dict[str, list[dict[str, Any]]],
    rebuilt: dict[str, list[dict[str, Any]]],
    report: ReplayReport,
) -> None:
    for table, names in _NATURAL_KEYS.items():
        left = {tuple(r[n] for n in names): r for r in live[table]}
        right = {tuple(r[n] for n in names): r for r in rebuilt[table]}
        report.rows[table] = (len(left), len(right))
        for key in sorted(set(left) | set(right), key=repr):
            label = "/".join(str(k) for k in key)
            if key not in right:
                report.differences.append(
                    Difference(table, label, "(row)", "present", "absent: no audit record")
                )
                continue
            if key not in left:
                report.differences.append(
                    Difference(table, label, "(row)", "absent", "recorded in the ledger")
                )
                continue
            for column, value in left[key].items():
                if value != right[key].get(column):
                    report.differences.append(
                        Difference(table, label, column, value, right[key].get(column))
                    )


def replay_ledger(db: Database) -> ReplayReport:
    """Rebuild the projections from ``db``'s ledger in a scratch SQLite database; compare."""
    report = ReplayReport()
    with db.read() as session:
        openings = {
            str(commitment): str(value)
            for commitment, value in session.execute(
                select(PersonalDataOpening.commitment, PersonalDataOpening.value)
            )
        }
    projector = _Projector(openings)
    for where, body in _bodies(db, report):
        projector.apply(where, body)
    report.problems.extend(projector.problems)
    report.other_actions = dict(projector.other)
    with tempfile.TemporaryDirectory(prefix="ica-replay-") as folder:
        scratch = Database.from_url(f"sqlite:///{Path(folder) / 'replay.db'}")
        try:
            tables = [model.__table__ for model in PROJECTIONS]
            Base.metadata.create_all(scratch.engine, tables=tables)  # type: ignore[arg-type]
            try:
                _write_scratch(scratch, projector)
                replay_gates.write_scratch(scratch, projector.gates)
                replay_policy.write_scratch(scratch, projector.governance)
                replay_promotion.write_scratch(scratch, projector.promotion)
            except Exception as exc:  # a ledger that cannot be rebuilt is a finding
                report.problems.append(f"the rebuilt rows do not fit the tables: {exc}")
                return report
            with scratch.read() as session:
                rebuilt = _rows(session)
        finally:
            scratch.dispose()
    _compare(_live(db), rebuilt, report)
    return report
