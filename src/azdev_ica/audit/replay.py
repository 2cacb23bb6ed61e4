"""`ica audit replay`: the audit log is the truth (DESIGN.md rule 2). Rebuild the projections
from the ledger alone into a scratch SQLite database, then compare them with the live tables;
any difference is a state change without its audit record (a gap), or the reverse.

Projections rebuilt (each from the actions listed):

- `azdev_pipeline_run`, `azdev_pipeline_run_attempt`: run.start, run.reopen, run.event (a
  build's artifact digest), run.finish;
- `azdev_pipeline_event`: run.event;
- `azdev_policy_version`: policy.apply;
- `azdev_api_key` (all but the secret's digest and the last-use time, which are not actions):
  apikey.create, apikey.revoke;
- `azdev_person`: person.create, person.disable; `azdev_role_grant`: grant.create,
  grant.revoke; `azdev_person_link`: person.link; `azdev_person_token` (all but the digest
  and the last-use time): token.create, token.revoke, person.disable.

Personal values are in the ledger only as salted hashes; replay opens them with the erasable
openings table, so an erased person is absent from the rebuilt rows, as from the live ones.
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

from azdev_ica.db.engine import Database
from azdev_ica.db.tables import (
    ApiKey,
    AuditEntry,
    AuditInbox,
    AuditShard,
    Base,
    Person,
    PersonalDataOpening,
    PersonLink,
    PersonToken,
    PipelineEvent,
    PipelineRun,
    PolicyVersion,
    RoleGrant,
    RunAttempt,
)
from azdev_ica.db.types import stored_bytes
from azdev_ica.ledger.entry import EntryError, parse_entry

__all__ = ["Difference", "ReplayReport", "replay_ledger"]

PROJECTIONS = (
    PipelineRun,
    RunAttempt,
    PipelineEvent,
    PolicyVersion,
    ApiKey,
    Person,
    RoleGrant,
    PersonLink,
    PersonToken,
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
            "person.disable": self.person_disable,
            "grant.create": self.grant_create,
            "grant.revoke": self.grant_revoke,
            "person.link": self.person_link,
            "token.create": self.token_create,
            "token.revoke": self.token_revoke,
        }

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
        }
        self.attempts[(key, data["attempt"])] = {
            "started_at": started,
            "finished_at": None,
            "status": "running",
            "provider_status": None,
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

    def run_event(self, body: dict[str, Any], at: datetime) -> None:
        data, key = body["data"], body["subject"]["id"]
        run = self.runs[key]
        payload = data["data"]
        if data["phase"] == "build" and run["artifact_digest"] is None:
            digest = payload.get("artifact_digest")
            if isinstance(digest, str):
                run.update(artifact_digest=digest, updated_at=at)
        self.events[(key, data["event_id"])] = {
            "attempt": data["attempt"],
            "phase": data["phase"],
            "occurred_at": _time(data["occurred_at"]),
            "recorded_at": at,
            "data": payload,
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
        }

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
    out["azdev_pipeline_event"] = [
        {
            "run_key": keys[r.run_pk],
            "event_id": r.event_id,
            "attempt": r.attempt,
            "phase": r.phase,
            "occurred_at": r.occurred_at,
            "recorded_at": r.recorded_at,
            "data": r.data,
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
    return out


_NATURAL_KEYS = {
    "azdev_pipeline_run": ("run_key",),
    "azdev_pipeline_run_attempt": ("run_key", "attempt"),
    "azdev_pipeline_event": ("run_key", "event_id"),
    "azdev_policy_version": ("order",),
    "azdev_api_key": ("prefix",),
    "azdev_person": ("id",),
    "azdev_role_grant": ("id",),
    "azdev_person_link": ("provider", "provider_user_id"),
    "azdev_person_token": ("prefix",),
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
            except Exception as exc:  # a ledger that cannot be rebuilt is a finding
                report.problems.append(f"the rebuilt rows do not fit the tables: {exc}")
                return report
            with scratch.read() as session:
                rebuilt = _rows(session)
        finally:
            scratch.dispose()
    _compare(_live(db), rebuilt, report)
    return report
