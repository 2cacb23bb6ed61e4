"""The run ledger: start, event and finish (seed 000 §1.3)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, insert, literal_column, select, true, update
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.engine import CoreTransaction
from azdev_ica.db.rows import EVENT_FIELDS, RUN_FIELDS, EventRow, RunRow
from azdev_ica.db.tables import PipelineEvent, PipelineRun, RunAttempt, RunRequester
from azdev_ica.domain.runs import (
    TARGET_PHASES,
    AttemptState,
    EventRefusal,
    Phase,
    Provider,
    RunStatus,
    deploy_target,
    event_refusal,
    event_target,
    normalise_finish_status,
    run_key,
)
from azdev_ica.errors import (
    Conflict,
    IcaError,
    NotFound,
    OutOfScope,
    RunFinished,
    RunKeyTaken,
    TargetOutOfScope,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.services.alerts import check_failure_streak, check_scan
from azdev_ica.services.approvals import withdraw_for_finished_run
from azdev_ica.services.audit import (
    append_audit,
    appended,
    inbox_insert,
    inbox_values,
    insert_record,
    rfc3339,
)
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.idempotency import (
    PRIOR_COLUMNS,
    IdempotencyRequest,
    answered,
    find_prior,
    join_prior,
    prior_parameters,
    record_insert,
    record_values,
    remember,
    store,
)
from azdev_ica.services.locks import release_for_run
from azdev_ica.services.post_deploy import check_post_deploy, failure_of, rollback_for
from azdev_ica.services.unauthorised import check_deploy

T = TypeVar("T")

# A reported commit time may run this far ahead of ICA's clock (the agent's clock, or the
# committer's, may be a little fast); further ahead it is refused as impossible.
COMMIT_TIME_SKEW = timedelta(minutes=5)

# The person-link provider of a run's provider (run keys say `gh`, links say `github`).
LINK_PROVIDER = {"ado": "ado", "gh": "github"}


@dataclass(frozen=True)
class StartRun:
    provider: Provider
    project_id: str
    run_id: str
    pipeline_name: str
    attempt: int = 1
    project: str | None = None
    branch: str | None = None
    commit: str | None = None
    tenant: str | None = None
    stage: str | None = None
    artifact_digest: str | None = None
    requested_for: str | None = None
    requested_for_email: str | None = None
    start_time: datetime | None = None
    commit_at: datetime | None = None


@dataclass(frozen=True)
class RecordEvent:
    run_key: str
    phase: Phase
    attempt: int = 1
    event_id: str | None = None
    occurred_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishRun:
    run_key: str
    status: str
    attempt: int | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class RunOutcome:
    run: PipelineRun
    created: bool


@dataclass(frozen=True)
class EventOutcome:
    run: RunRow
    event: EventRow
    created: bool
    # When the event failed its target's deployment (a failed `verify`, a monitoring
    # trigger): the rollback to run (services/post_deploy.py).
    rollback: dict[str, Any] | None = None


def start_run(
    ctx: ServiceContext,
    *,
    principal: Principal,
    command: StartRun,
    idempotency: IdempotencyRequest | None = None,
) -> RunOutcome:
    """Record the start of a run, or answer with the run already recorded under its key.

    A start with a higher attempt than the run's current one is a re-run: it reopens the run.
    """
    key = run_key(command.provider, command.project_id, command.run_id)
    if not _token_reaches(principal, command.provider.value, command.project_id):
        raise OutOfScope(
            "a GitHub Actions token acts only on runs of its own repository "
            f"(gh:{principal.claim('repository_id')}:...)"
        )
    command = _requester_from_token(principal, command)
    if not principal.can_for(Permission.RUN_WRITE, command.tenant):
        if command.tenant is not None:
            # A tenant the policy does not know is a typo, not a permission problem.
            with ctx.read() as session:
                known = ctx.policies.active(session).tenants
            if command.tenant not in known:
                raise UnknownTenant(
                    f"tenant {command.tenant!r} is not in the active policy "
                    f"(known: {', '.join(sorted(known))})"
                )
        raise OutOfScope(
            "a tenant-scoped caller must name one of its tenants"
            if command.tenant is None
            else f"tenant {command.tenant!r} is outside the caller's scope"
        )
    if not principal.can_on_run(Permission.RUN_WRITE, command.tenant, command.stage):
        raise OutOfScope(f"stage {command.stage!r} is outside the caller's scope")

    def action(session: Session) -> RunOutcome:
        prior = find_prior(session, idempotency)
        if prior is not None:
            return RunOutcome(run=_run_by_key(session, prior.response["run_key"]), created=False)
        policy = ctx.policies.active(session)
        if command.tenant is not None and command.tenant not in policy.tenants:
            raise UnknownTenant(
                f"tenant {command.tenant!r} is not in the active policy "
                f"(known: {', '.join(sorted(policy.tenants))})"
            )
        if command.stage is not None and policy.stage(command.stage) is None:
            raise UnknownStage(
                f"stage {command.stage!r} is not in the active policy "
                f"(known: {', '.join(stage.name for stage in policy.stages)})"
            )
        now = ctx.clock.now()
        if command.commit_at is not None and command.commit_at > now + COMMIT_TIME_SKEW:
            raise ValidationProblem(
                f"commit_at {rfc3339(command.commit_at)} is in the future (ICA's time is "
                f"{rfc3339(now)}); report the commit's own time",
                code="commit_time_in_future",
            )
        run = _find_run(session, key)
        if run is not None and not _reaches(principal, run):
            # The key is another tenant's (or stage's) run. Absent means "create" here, so
            # the answer cannot look like absent: a 409 that tells nothing of that run, and
            # nothing reopened. Run keys are guessable; isolation never rests on them.
            raise _Refused(
                RunKeyTaken(
                    f"run key {key!r} is taken by a run outside the caller's scope; "
                    "a run key names one run of one provider project"
                ),
                audit=_refusal_audit(
                    principal,
                    action="run.start_refused",
                    run_key=key,
                    tenant=command.tenant,
                    data={"code": "run_key_taken", "attempt": command.attempt},
                    at=now,
                ),
            )
        if run is not None:
            if command.attempt > run.attempt:
                _reopen(
                    session,
                    run,
                    attempt=command.attempt,
                    at=now,
                    principal=principal,
                    requested_for=command.requested_for,
                )
            remember(session, idempotency, status_code=200, reference={"run_key": key}, at=now)
            return RunOutcome(run=run, created=False)
        started = command.start_time or now
        run = PipelineRun(
            run_key=key,
            provider=command.provider.value,
            project_id=command.project_id,
            project=command.project,
            run_id=command.run_id,
            pipeline_name=command.pipeline_name,
            branch=command.branch,
            commit=command.commit,
            status=RunStatus.RUNNING.value,
            flagged=False,
            attempt=command.attempt,
            start_time=started,
            tenant=command.tenant,
            stage=command.stage,
            artifact_digest=command.artifact_digest,
            requested_for=command.requested_for,
            requested_for_email=command.requested_for_email,
            created_at=now,
            updated_at=now,
            commit_at=command.commit_at,
        )
        session.add(run)
        session.flush()
        session.add(
            RunAttempt(run_pk=run.id, attempt=command.attempt, started_at=started, status="running")
        )
        _record_requester(session, run, command.attempt, command.requested_for, at=now)
        append_audit(
            session,
            actor=principal.actor,
            action="run.start",
            subject_type="run",
            subject_id=key,
            tenant=command.tenant,
            data={
                "provider": command.provider.value,
                "project_id": command.project_id,
                "project": command.project,
                "run_id": command.run_id,
                "attempt": command.attempt,
                "pipeline_name": command.pipeline_name,
                "branch": command.branch,
                "commit": command.commit,
                "commit_at": None if command.commit_at is None else rfc3339(command.commit_at),
                "stage": command.stage,
                "artifact_digest": command.artifact_digest,
                "start_time": rfc3339(started),
                "policy_sha256": policy.sha256,
            },
            personal={
                "requested_for": ("provider_user", command.requested_for),
                "requested_for_email": ("email", command.requested_for_email),
            },
            at=now,
        )
        remember(session, idempotency, status_code=201, reference={"run_key": key}, at=now)
        return RunOutcome(run=run, created=True)

    return _run_refusable(ctx, action)


def record_event(
    ctx: ServiceContext,
    *,
    principal: Principal,
    command: RecordEvent,
    idempotency: IdempotencyRequest | None = None,
) -> EventOutcome:
    """Append a phase event; a repeated event id is answered with the recorded event."""
    event_id = command.event_id or str(uuid.uuid4())
    parameters = {
        "run_key": command.run_key,
        "attempt": command.attempt,
        "event_id": event_id,
        **prior_parameters(idempotency),
    }
    if command.phase in _CORE_PHASES:
        try:
            return ctx.run_core(
                lambda transaction: _record_core_event(
                    ctx, transaction, principal, command, event_id, parameters, idempotency
                )
            )
        except _NeedsSession:
            pass  # rolled back: a retry or a re-run, recorded below as every other event

    def action(session: Session) -> EventOutcome:
        # One read: the answer already given under this Idempotency-Key, the run, its
        # attempt's state and an event already recorded under this id (a fresh server-made
        # id finds none). Always one row, NULLs for what is not there.
        facts = session.execute(_EVENT_FACTS, parameters).one()
        if answered(idempotency, fingerprint=facts[0], operation=facts[1]):
            return _event_answered(ctx, session, facts[2])
        run = _facts_run(facts, principal, command)
        attempt_finished, existing_pk = facts[_FACTS_ATTEMPT_FINISHED], facts[_FACTS_EXISTING]
        if existing_pk is not None:
            existing = EventRow(*session.execute(_EVENT_BY_PK, {"pk": existing_pk}).one())
            return EventOutcome(
                run=run,
                event=existing,
                created=False,
                rollback=_rollback(ctx, session, run, existing),
            )
        now = ctx.clock.now()
        _check_event_target(ctx, session, principal, run, command, event_id, now)
        _check_attempt(command, run, attempt_finished)
        if command.attempt > run.attempt:
            mapped = session.get_one(PipelineRun, run.id)
            _reopen(session, mapped, attempt=command.attempt, at=now, principal=principal)
            session.flush()
            run = RunRow.of(mapped)
        digest = _new_digest(command, run)
        if digest is not None:
            session.execute(
                _SET_RUN_DIGEST, {"pk": run.id, "artifact_digest": digest, "updated_at": now}
            )
            run = replace(run, artifact_digest=digest, updated_at=now)
        values, audit, answer = _event_rows(principal, command, event_id, run, idempotency, now)
        event = EventRow(id=_insert_event(session, values, audit, answer), **values)
        if command.phase is Phase.DEPLOY:
            # A deploy the gate never allowed is an unauthorised change (issue 5).
            check_deploy(ctx, session, run=run, event=event, actor=principal.actor)
        elif command.phase is Phase.SCAN:
            # Critical vulnerabilities alert (seed 000 §7.2), once per run.
            check_scan(ctx, session, run=run, event=event, actor=principal.actor)
        # A failed verification or a monitoring trigger fails the target's deployment: the
        # alert and the incident, once, and the rollback in the answer (seed 000 §5.2, §6.1).
        rollback = check_post_deploy(ctx, session, run=run, event=event, actor=principal.actor)
        return EventOutcome(run=run, event=event, created=True, rollback=rollback)

    return _run_refusable(ctx, action)


# The phases whose events name no target and call for no check after them (no deploy, scan,
# verify, monitor or rollback): the pipeline's most frequent steps, recorded with Core
# statements only (`ServiceContext.run_core`, straight through the driver on PostgreSQL).
_CORE_PHASES = frozenset({Phase.BUILD, Phase.TEST, Phase.APPROVAL})
assert not _CORE_PHASES & TARGET_PHASES


class _NeedsSession(Exception):
    """What the Core path leaves to the Session's: a retried request (its Idempotency-Key was
    answered, or its event id recorded) and the first event of a re-run (it reopens the run)."""


def _record_core_event(
    ctx: ServiceContext,
    transaction: CoreTransaction,
    principal: Principal,
    command: RecordEvent,
    event_id: str,
    parameters: dict[str, Any],
    idempotency: IdempotencyRequest | None,
) -> EventOutcome:
    """`record_event`'s action for a phase of `_CORE_PHASES`: the facts read and the event, its
    audit record and its stored answer written, in two statements on PostgreSQL."""
    [facts] = transaction.execute(_EVENT_FACTS, parameters)
    if answered(idempotency, fingerprint=facts[0], operation=facts[1]):
        raise _NeedsSession
    run = _facts_run(facts, principal, command)
    if facts[_FACTS_EXISTING] is not None:
        raise _NeedsSession
    _check_attempt(command, run, facts[_FACTS_ATTEMPT_FINISHED])
    if command.attempt > run.attempt:
        raise _NeedsSession
    now = ctx.clock.now()
    digest = _new_digest(command, run)
    if digest is not None:
        transaction.execute(
            _SET_RUN_DIGEST, {"pk": run.id, "artifact_digest": digest, "updated_at": now}
        )
        run = replace(run, artifact_digest=digest, updated_at=now)
    values, audit, answer = _event_rows(principal, command, event_id, run, idempotency, now)
    if transaction.dialect == "postgresql":
        [(event_pk, inbox_id)] = transaction.execute(
            _INSERT_EVENT_PG if answer is None else _INSERT_EVENT_REMEMBERED_PG,
            _insert_parameters(values, audit, answer),
        )
        appended(transaction, int(inbox_id))
    else:
        [(event_pk,)] = transaction.execute(_INSERT_EVENT, values)
        insert_record(transaction, audit)
        if answer is not None:
            store(transaction, answer)
    return EventOutcome(run=run, event=EventRow(id=int(event_pk), **values), created=True)


def _facts_run(facts: Any, principal: Principal, command: RecordEvent) -> RunRow:
    """The run the facts read, when the caller reaches it."""
    columns = facts[_FACTS_RUN]
    run = None if columns[0] is None else RunRow(*columns)
    if run is None or not _reaches(principal, run):
        # Out of scope answers exactly like absent.
        raise NotFound(f"no run {command.run_key!r}")
    return run


def _check_attempt(command: RecordEvent, run: RunRow, attempt_finished: Any) -> None:
    """Refuses an event of a finished attempt (but for the phases that come after one) or of
    an attempt the run never had."""
    state = (
        None
        if attempt_finished is None
        else AttemptState(attempt=command.attempt, finished=bool(attempt_finished))
    )
    refusal = event_refusal(
        phase=command.phase,
        attempt=command.attempt,
        current_attempt=run.attempt,
        attempt_state=state,
    )
    if refusal is EventRefusal.FINISHED:
        raise RunFinished(
            f"attempt {command.attempt} of {run.run_key} has finished; only verify, "
            "rollback_initiated, rollback_completed and monitor events are accepted now",
            attempt=command.attempt,
        )
    if refusal is EventRefusal.UNKNOWN_ATTEMPT:
        raise Conflict(f"{run.run_key} has no attempt {command.attempt} (current: {run.attempt})")


def _new_digest(command: RecordEvent, run: RunRow) -> str | None:
    """The artifact digest a build event gives a run that has none yet."""
    if command.phase is not Phase.BUILD or run.artifact_digest is not None:
        return None
    digest = command.data.get("artifact_digest")
    return digest if isinstance(digest, str) else None


def _event_rows(
    principal: Principal,
    command: RecordEvent,
    event_id: str,
    run: RunRow,
    idempotency: IdempotencyRequest | None,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The event's row, its audit record's (`inbox_values`) and its stored answer's
    (`record_values`, None without an Idempotency-Key)."""
    target_tenant, target_stage, target_digest = deploy_target(
        command.phase.value,
        command.data,
        run_tenant=run.tenant,
        run_stage=run.stage,
        run_digest=run.artifact_digest,
    )
    values: dict[str, Any] = {
        "run_pk": run.id,
        "event_id": event_id,
        "attempt": command.attempt,
        "phase": command.phase.value,
        "occurred_at": command.occurred_at or now,
        "recorded_at": now,
        "data": command.data,
        "target_tenant": target_tenant,
        "target_stage": target_stage,
        "target_digest": target_digest,
    }
    audit = inbox_values(
        actor=principal.actor,
        action="run.event",
        subject_type="run",
        subject_id=run.run_key,
        tenant=run.tenant,
        data={
            "event_id": event_id,
            "attempt": command.attempt,
            "phase": command.phase.value,
            "occurred_at": rfc3339(values["occurred_at"]),
            "data": command.data,
        },
        at=now,
    )
    answer = (
        None
        if idempotency is None
        else record_values(
            idempotency,
            status_code=201,
            reference={"run_key": run.run_key, "event_id": event_id},
            at=now,
        )
    )
    return values, audit, answer


def _insert_event(
    session: Session,
    event: dict[str, Any],
    audit: dict[str, Any],
    answer: dict[str, Any] | None,
) -> int:
    """Insert the event, its audit record (`inbox_values`) and the stored answer of its
    Idempotency-Key (`record_values`, None without a key); the event's id. On PostgreSQL one
    statement writes the three rows (one round trip, one execution in SQLAlchemy); on SQLite,
    inside the process, three do."""
    if session.get_bind().dialect.name != "postgresql":
        event_pk = session.execute(_INSERT_EVENT, event).scalar_one()
        insert_record(session, audit)
        if answer is not None:
            store(session, answer)
        return int(event_pk)
    # The run's own changes first (a reopened attempt): their row locks come before the
    # record's inbox id, as append_audit has it.
    session.flush()
    statement = _INSERT_EVENT_PG if answer is None else _INSERT_EVENT_REMEMBERED_PG
    event_pk, inbox_id = session.execute(statement, _insert_parameters(event, audit, answer)).one()
    appended(session, int(inbox_id))
    return int(event_pk)


def _insert_parameters(
    event: dict[str, Any], audit: dict[str, Any], answer: dict[str, Any] | None
) -> dict[str, Any]:
    """The parameters of PostgreSQL's one INSERT of an event, its record and its answer."""
    parameters = {
        **{"event_" + name: value for name, value in event.items()},
        **{"audit_" + name: value for name, value in audit.items()},
    }
    if answer is not None:
        parameters.update({"answer_" + name: value for name, value in answer.items()})
    return parameters


def _event_answered(
    ctx: ServiceContext, session: Session, reference: dict[str, Any]
) -> EventOutcome:
    """The answer to a retried request (its Idempotency-Key was answered): the event it
    recorded, as the first time (with the rollback when it failed its target's deployment)."""
    run = RunRow.of(_run_by_key(session, reference["run_key"]))
    event = EventRow.of(_event(session, run, reference["event_id"]))
    return EventOutcome(
        run=run, event=event, created=False, rollback=_rollback(ctx, session, run, event)
    )


def finish_run(
    ctx: ServiceContext,
    *,
    principal: Principal,
    command: FinishRun,
    idempotency: IdempotencyRequest | None = None,
) -> RunOutcome:
    """Close an attempt: final for it; the same status again is a no-op, another one a 409."""
    try:
        finish = normalise_finish_status(command.status)
    except ValueError as exc:
        raise ValidationProblem(str(exc)) from None

    def action(session: Session) -> RunOutcome:
        prior = find_prior(session, idempotency)
        if prior is not None:
            return RunOutcome(run=_run_by_key(session, prior.response["run_key"]), created=False)
        run = _scoped_run(session, command.run_key, principal)
        now = ctx.clock.now()
        attempt_no = command.attempt or run.attempt
        if attempt_no > run.attempt:
            _reopen(session, run, attempt=attempt_no, at=now, principal=principal)
        attempt = _attempt_row(session, run, attempt_no)
        if attempt is None:
            raise Conflict(f"{run.run_key} has no attempt {attempt_no} (current: {run.attempt})")
        if attempt.finished_at is not None:
            if attempt.status == finish.status.value:
                remember(
                    session,
                    idempotency,
                    status_code=200,
                    reference={"run_key": run.run_key},
                    at=now,
                )
                return RunOutcome(run=run, created=False)
            raise Conflict(
                f"attempt {attempt_no} of {run.run_key} already finished as {attempt.status}; "
                f"it cannot finish again as {finish.status.value}",
                recorded_status=attempt.status,
            )
        ended = command.end_time or now
        attempt.status = finish.status.value
        attempt.provider_status = finish.provider_status
        attempt.finished_at = ended
        if attempt_no == run.attempt:
            run.status = finish.status.value
            run.flagged = finish.flagged
            run.end_time = ended
            run.updated_at = now
            # The run's deployment locks and places in lock queues end with it (issue 5).
            release_for_run(session, run=run, actor=principal.actor, now=now)
            # What it still waits for ends with it too: its open approval requests.
            withdraw_for_finished_run(
                ctx, session, run=run, run_status=run.status, actor=principal.actor, now=now
            )
        append_audit(
            session,
            actor=principal.actor,
            action="run.finish",
            subject_type="run",
            subject_id=run.run_key,
            tenant=run.tenant,
            data={
                "attempt": attempt_no,
                "status": finish.status.value,
                "provider_status": finish.provider_status,
                "flagged": finish.flagged,
                "end_time": rfc3339(ended),
            },
            at=now,
        )
        if attempt_no == run.attempt:
            # A third failure in a row of the pipeline alerts (seed 000 §7.2), once per streak.
            check_failure_streak(ctx, session, run=run, actor=principal.actor)
        remember(session, idempotency, status_code=200, reference={"run_key": run.run_key}, at=now)
        return RunOutcome(run=run, created=True)

    return ctx.run_action(action)


@dataclass(frozen=True)
class _RefusalAudit:
    actor: Any
    action: str
    run_key: str
    tenant: str | None
    data: dict[str, Any]
    at: datetime


class _Refused(Exception):
    """A refusal that leaves a trace: the action rolls back, then its audit entry is written
    in a transaction of its own and the problem is answered."""

    def __init__(self, problem: IcaError, *, audit: _RefusalAudit) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.audit = audit


def _refusal_audit(
    principal: Principal,
    *,
    action: str,
    run_key: str,
    tenant: str | None,
    data: dict[str, Any],
    at: datetime,
) -> _RefusalAudit:
    return _RefusalAudit(principal.actor, action, run_key, tenant, data, at)


def _run_refusable(ctx: ServiceContext, action: Callable[[Session], T]) -> T:
    try:
        return ctx.run_action(action)
    except _Refused as refused:
        trace = refused.audit

        def record(session: Session) -> None:
            append_audit(
                session,
                actor=trace.actor,
                action=trace.action,
                subject_type="run",
                subject_id=trace.run_key,
                tenant=trace.tenant,
                data=trace.data,
                at=trace.at,
            )

        ctx.run_action(record)
        raise refused.problem from None


def _check_event_target(
    ctx: ServiceContext,
    session: Session,
    principal: Principal,
    run: RunRow,
    command: RecordEvent,
    event_id: str,
    now: datetime,
) -> None:
    """The gate's target check for an event that names a target (deploy, verify, monitor,
    rollback_*): the run's tenant when the run has one, otherwise a tenant in the caller's
    scope; a stage in the caller's scope; both known to the active policy. One run may
    deploy several stages, so the stage is checked, not compared with the run's."""
    for name in ("tenant", "stage"):
        value = command.data.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationProblem(f"data.{name} must be a string naming the target's {name}")
    target = event_target(command.phase, command.data, run_tenant=run.tenant, run_stage=run.stage)
    if target is None:
        return
    tenant, stage = target
    problem: IcaError | None = None
    code = "out_of_scope"
    if run.tenant is not None and tenant != run.tenant:
        code = "other_tenant"
        problem = TargetOutOfScope(
            f"{run.run_key} is a run of tenant {run.tenant!r}; its {command.phase.value} "
            f"events cannot name tenant {tenant!r}"
        )
    elif not principal.can_at(Permission.RUN_WRITE, tenant, stage):
        problem = TargetOutOfScope(
            f"the target {tenant or '-'}/{stage or '-'} is outside the caller's scope"
        )
    else:
        policy = ctx.policies.active(session)
        if tenant is not None and tenant not in policy.tenants:
            code, problem = (
                "unknown_tenant",
                UnknownTenant(f"tenant {tenant!r} is not in the active policy"),
            )
        elif stage is not None and policy.stage(stage) is None:
            code, problem = (
                "unknown_stage",
                UnknownStage(f"stage {stage!r} is not in the active policy"),
            )
    if problem is None:
        return
    raise _Refused(
        problem,
        audit=_refusal_audit(
            principal,
            action="run.event_refused",
            run_key=run.run_key,
            tenant=run.tenant,
            data={
                "code": code,
                "event_id": event_id,
                "attempt": command.attempt,
                "phase": command.phase.value,
                "target_tenant": tenant,
                "target_stage": stage,
            },
            at=now,
        ),
    )


def _reaches(principal: Principal, run: PipelineRun | RunRow) -> bool:
    """Whether the caller may write to `run`: its tenant and stage scope, and a GitHub token's
    own repository."""
    return principal.can_on_run(Permission.RUN_WRITE, run.tenant, run.stage) and _token_reaches(
        principal, run.provider, run.project_id
    )


def _reopen(
    session: Session,
    run: PipelineRun,
    *,
    attempt: int,
    at: datetime,
    principal: Principal,
    requested_for: str | None = None,
) -> None:
    """A re-run: the run is open again under `attempt`, triggered by `requested_for` when the
    start said (an event or a finish of a new attempt reopens it without saying)."""
    previous = run.attempt
    session.add(RunAttempt(run_pk=run.id, attempt=attempt, started_at=at, status="running"))
    run.attempt = attempt
    run.status = RunStatus.RUNNING.value
    run.flagged = False
    run.end_time = None
    run.updated_at = at
    append_audit(
        session,
        actor=principal.actor,
        action="run.reopen",
        subject_type="run",
        subject_id=run.run_key,
        tenant=run.tenant,
        data={"attempt": attempt, "previous_attempt": previous},
        personal={"requested_for": ("provider_user", requested_for)},
        at=at,
    )
    _record_requester(session, run, attempt, requested_for, at=at)


def _record_requester(
    session: Session, run: PipelineRun, attempt: int, requested_for: str | None, *, at: datetime
) -> None:
    """Who triggered `attempt`: one of the run's requesters from now on (none of them signs
    its approval: services/approvals.py)."""
    provider = LINK_PROVIDER.get(run.provider)
    if requested_for is None or provider is None:
        return
    session.add(
        RunRequester(
            run_pk=run.id,
            attempt=attempt,
            provider=provider,
            provider_user_id=requested_for,
            recorded_at=at,
        )
    )


def _rollback(
    ctx: ServiceContext, session: Session, run: RunRow, event: EventRow
) -> dict[str, Any] | None:
    """A repeated event is answered as the first time: with the rollback when it failed its
    target's deployment."""
    if failure_of(event) is None:
        return None
    target = event_target(Phase(event.phase), event.data, run_tenant=run.tenant,
                          run_stage=run.stage)  # fmt: skip
    if target is None or target[0] is None or target[1] is None:
        return None
    return rollback_for(ctx, session, tenant=target[0], stage=target[1])


# Hot statements, built once (building and hashing a statement costs more than running it),
# on the tables (Core: no ORM compilation, no identity map).
_RUNS = cast(Table, PipelineRun.__table__)
_ATTEMPTS = cast(Table, RunAttempt.__table__)
_EVENTS = cast(Table, PipelineEvent.__table__)
_RUN_BY_KEY = select(PipelineRun).where(PipelineRun.run_key == bindparam("run_key"))
_EVENT_FACTS = select(
    *PRIOR_COLUMNS,
    *_RUNS.c,
    select(_ATTEMPTS.c.finished_at.is_not(None))
    .where(_ATTEMPTS.c.run_pk == _RUNS.c.id, _ATTEMPTS.c.attempt == bindparam("attempt"))
    .scalar_subquery(),
    select(_EVENTS.c.id)
    .where(_EVENTS.c.run_pk == _RUNS.c.id, _EVENTS.c.event_id == bindparam("event_id"))
    .scalar_subquery(),
).select_from(
    # One row whatever is found: the run and the stored answer are each joined to it.
    join_prior(
        select(literal_column("1").label("one"))
        .subquery("one")
        .outerjoin(_RUNS, _RUNS.c.run_key == bindparam("run_key"))
    )
)
_FACTS_RUN = slice(len(PRIOR_COLUMNS), len(PRIOR_COLUMNS) + len(RUN_FIELDS))
_FACTS_ATTEMPT_FINISHED = _FACTS_RUN.stop
_FACTS_EXISTING = _FACTS_RUN.stop + 1
_EVENT_BY_PK = select(*_EVENTS.c).where(_EVENTS.c.id == bindparam("pk"))
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_EVENT_VALUES = tuple(name for name in EVENT_FIELDS if name != "id")


def _insert_event_pg(*, remembered: bool) -> Select[int, int]:
    """PostgreSQL: the event, its audit record and (`remembered`) the stored answer in one
    statement, returning the event's id and the record's inbox id."""
    event = (
        insert(_EVENTS)
        .values({name: bindparam("event_" + name, type_=_EVENTS.c[name].type)
                 for name in _EVENT_VALUES})
        .returning(_EVENTS.c.id)
        .cte("new_event")
    )  # fmt: skip
    record = inbox_insert("audit_").cte("new_record")
    statement = select(event.c.id, record.c.id).select_from(event.join(record, true()))
    if remembered:
        statement = statement.add_cte(record_insert("answer_").cte("new_answer"))
    return statement


_INSERT_EVENT_PG = _insert_event_pg(remembered=False)
_INSERT_EVENT_REMEMBERED_PG = _insert_event_pg(remembered=True)
_SET_RUN_DIGEST = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("pk"))
    .values(artifact_digest=bindparam("artifact_digest"), updated_at=bindparam("updated_at"))
)
_ATTEMPT_ROW = select(RunAttempt).where(
    RunAttempt.run_pk == bindparam("run_pk"), RunAttempt.attempt == bindparam("attempt")
)


def _find_run(session: Session, key: str) -> PipelineRun | None:
    return session.scalars(_RUN_BY_KEY, {"run_key": key}).one_or_none()


def _run_by_key(session: Session, key: str) -> PipelineRun:
    run = _find_run(session, key)
    if run is None:
        raise NotFound(f"no run {key!r}")
    return run


def _scoped_run(session: Session, key: str, principal: Principal) -> PipelineRun:
    run = _find_run(session, key)
    # Out of scope answers exactly like absent: a scoped caller learns nothing of other tenants.
    if run is None or not _reaches(principal, run):
        raise NotFound(f"no run {key!r}")
    return run


def _token_reaches(principal: Principal, provider: str, project_id: str) -> bool:
    """A GitHub Actions OIDC token names its repository: it reaches that repository's runs
    (`gh:<repository_id>:...`) and no other, whatever role its identity maps to."""
    repository_id = principal.claim("repository_id")
    if repository_id is None:
        return True
    return provider == Provider.GITHUB.value and project_id == repository_id


def _requester_from_token(principal: Principal, command: StartRun) -> StartRun:
    """Who triggered the run comes from the signed token when it says (GitHub `actor_id`),
    not from the body (DESIGN.md "Identity and roles"); a body that contradicts it is refused."""
    actor_id = principal.claim("actor_id")
    if actor_id is None:
        return command
    if command.requested_for is not None and command.requested_for != actor_id:
        raise ValidationProblem(
            "requested_for contradicts the token: GitHub's actor_id names who triggered the run"
        )
    return replace(command, requested_for=actor_id)


def _attempt_row(session: Session, run: PipelineRun, attempt: int) -> RunAttempt | None:
    return session.scalars(_ATTEMPT_ROW, {"run_pk": run.id, "attempt": attempt}).one_or_none()


def _event(session: Session, run: RunRow, event_id: str) -> PipelineEvent:
    return session.scalars(
        select(PipelineEvent).where(
            PipelineEvent.run_pk == run.id, PipelineEvent.event_id == event_id
        )
    ).one()
