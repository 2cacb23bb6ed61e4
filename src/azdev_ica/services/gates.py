"""The deployment gate: allow, deny or pending for one run and one target (seed 000 §5.1).

One evaluation is one transaction in three parts:

1. gather the facts: one composed statement (built once per request shape, on the tables)
   reads the active policy's version, the run, its latest approval for the target, a signed
   emergency override of the same artifact, the data of its latest `test` and `scan` events
   and, as further rows of the same result, the recorded builds of the artifact (`_build`);
   one more reads the promotion history and sign-offs when the policy has promotion rules
   (the rollback history when the request is a rollback); then the target's lock row (locked
   for the transaction, so racing pipelines are serialised by the database) and its queue.
   On PostgreSQL the first statement also locks the lock row, reads its queue (used when no
   change of the lock committed between its snapshot and the lock: `locks.queue_of`), draws
   the decision's id and, once the policy has promotion rules, reads their rows (as JSON);
   the statements go straight through the driver (`db.engine.driver_rows`);
2. decide: `domain/gate_decision.py` (pure, standard library only) returns the status, the
   reasons in order, the codes an override lifted and the steps to take with the lock;
3. record: the lock's changes (`services/locks.py`), the decision row and its audit entry
   naming the policy version, written with SQLAlchemy Core; on PostgreSQL a renewal or an
   acquisition of the lock, the decision and their audit records in one statement. Nothing
   here waits for the ledger's sealer.

Reason codes are stable (docs/gates.md lists them; `domain/gates.py` and
`domain/gate_decision.py` define them).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.engine import driver_rows
from azdev_ica.db.tables import (
    Approval,
    GateEvaluation,
    Override,
    PipelineEvent,
    PipelineRun,
    PolicyVersion,
)
from azdev_ica.domain import gate_decision as decision_rules
from azdev_ica.domain import gates as rules
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.gate_decision import (
    CURRENCY_MISMATCH,
    DEPENDENCIES_MISSING,
    NOT_OVERRIDABLE,
    OVERRIDE,
    Decision,
    Reason,
)
from azdev_ica.domain.gates import GateStatus
from azdev_ica.domain.windows import Schedule
from azdev_ica.errors import (
    NotFound,
    OutOfScope,
    UnknownStage,
    UnknownTenant,
    ValidationProblem,
)
from azdev_ica.policy import Policy
from azdev_ica.policy.gates import normalise_dependency
from azdev_ica.queries.deployments import promotion_history_of, promotion_rows
from azdev_ica.services import alerts, locks, promotion_gate
from azdev_ica.services.audit import (
    AuditRecord,
    append_audits,
    appended,
    inbox_chain,
    inbox_chain_values,
)
from azdev_ica.services.context import ServiceContext

__all__ = [
    "CURRENCY_MISMATCH",
    "DEPENDENCIES_MISSING",
    "NOT_OVERRIDABLE",
    "OVERRIDE",
    "EvaluateGate",
    "GateAnswer",
    "Reason",
    "evaluate",
    "has_allow",
]


@dataclass(frozen=True)
class EvaluateGate:
    run_key: str
    tenant: str | None = None
    stage: str | None = None
    artifact_digest: str | None = None
    commit: str | None = None
    cost_impact_minor: int | None = None
    currency: str | None = None
    dependencies: tuple[str, ...] | None = None
    # The semantic version being deployed (default: what that artifact was deployed as before
    # in the tenant); a major bump over production needs the major-release approver.
    version: str | None = None
    # A rollback to the target's last good version (seed 000 §6.1).
    rollback: bool = False


@dataclass(frozen=True)
class GateAnswer:
    decision_id: int
    status: GateStatus
    reasons: tuple[Reason, ...]
    run_key: str
    tenant: str
    stage: str
    policy_hash: str
    approval_id: int | None = None
    override_id: int | None = None
    overridden: tuple[str, ...] = ()
    lock_holder: str | None = None
    queue_position: int | None = None
    lock_expires_at: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(ctx: ServiceContext, *, principal: Principal, command: EvaluateGate) -> GateAnswer:
    """Answer the gate for a run and a target; record the decision; take the lock on allow."""

    def action(session: Session) -> GateAnswer:
        now = ctx.clock.now()
        found = _read_facts(session, command)
        policy = _policy(ctx, session, found)
        if ctx.db.dialect == "postgresql":
            _guess_promotion(policy)
        run = found.run if found is not None else None
        if run is not None and not principal.can_on_run(
            Permission.GATE_EVALUATE, run.tenant, run.stage
        ):
            run = None  # out of scope answers exactly like absent
        if run is not None and run.tenant is not None and command.tenant not in (None, run.tenant):
            raise ValidationProblem(
                f"run {run.run_key} deploys for tenant {run.tenant!r}, not {command.tenant!r}"
            )
        tenant = command.tenant or (run.tenant if run else None)
        stage = command.stage or (run.stage if run else None)
        if tenant is None or stage is None:
            if run is None:
                raise NotFound(f"no run {command.run_key!r}")
            raise ValidationProblem("name the target: the tenant and the stage of the deployment")
        if not principal.can_for(Permission.GATE_EVALUATE, tenant):
            raise OutOfScope(f"tenant {tenant!r} is outside the caller's scope")
        if not principal.can_at(Permission.GATE_EVALUATE, tenant, stage):
            raise OutOfScope(f"stage {stage!r} is outside the caller's scope")
        _check_target(policy, tenant, stage)
        digest = command.artifact_digest or (run.artifact_digest if run else None)
        commit = command.commit or (run.commit if run else None)
        scope = rules.Scope(tenant=tenant, stage=stage, artifact_digest=digest or "", commit=commit)
        if run is None or found is None:
            decided = decision_rules.run_not_found(scope)
            return _record(session, now, principal, command.run_key, None, scope, policy, decided)

        approval = found.approval
        if approval is not None and command.currency in (None, approval.currency):
            # A cost near the approved budget warns (seed 000 §7.2), once per approval.
            cost = command.cost_impact_minor
            cost = cost if cost is not None else approval.cost_impact_minor
            if policy.budgets.reached(cost, approval.budget_minor):
                alerts.check_budget(ctx, session, policy=policy,
                                    approval=session.get_one(Approval, approval.id),
                                    cost_minor=cost, actor=principal.actor,
                                    source="gate.evaluate")  # fmt: skip
        gate_policy = policy.gates
        window = _schedule(policy, tenant, stage).evaluate(now)
        approval_stages = gate_policy.approval_stages
        if approval_stages is None:
            approval_stages = frozenset(s.name for s in policy.stages if s.production)
        dependencies = None
        if command.dependencies is not None:
            dependencies = frozenset(normalise_dependency(d) for d in command.dependencies)
        rollback = None
        if command.rollback:
            rollback = promotion_gate.rollback_facts(session, policy, tenant=tenant, stage=stage)
        promotion = None
        if policy.promotion is not None and not (
            rollback is not None and decision_rules.rollback_is_valid(rollback, scope)
        ):
            history = None
            if found.promotion is not None and found.promotion[0] == policy.sha256:
                history = promotion_history_of(found.promotion[1], tenant=tenant)
            promotion = promotion_gate.promotion_facts(
                session, policy, tenant=tenant, stage=stage, digest=digest, history=history
            )
        lock = locks.read_lock(session, tenant=tenant, stage=stage, locked=found.lock)
        facts = decision_rules.EvaluationFacts(
            now=now,
            scope=scope,
            run_pk=run.id,
            run_key=run.run_key,
            run_running=run.status == "running",
            rules=rules.GateRules(
                requires_approval=stage in approval_stages,
                min_coverage_percent=gate_policy.min_coverage_percent,
                requires_build=gate_policy.require_build,
                requires_tests=gate_policy.require_tests,
                requires_scan=gate_policy.require_scan,
                dependency_allow_list=gate_policy.dependency_allow_list,
            ),
            cost_impact_minor=command.cost_impact_minor,
            currency=command.currency,
            dependencies=dependencies,
            version=command.version,
            approval=approval,
            build=_build(found.builds, run, digest) if gate_policy.require_build else None,
            tests=found.tests,
            scan=found.scan,
            window=window.state,
            window_reason=window.reason,
            override_id=found.override_id,
            promotion=promotion,
            rollback=rollback,
            lock=lock,
            lease=gate_policy.lock_lease,
            stale=gate_policy.queue_stale,
        )
        decided = decision_rules.decide(facts)
        approval_id = approval.id if approval else None
        if found.decision_id is not None:
            foldable, change = locks.fold(lock, decided.lock_steps, tenant=tenant, stage=stage,
                                          actor=principal.actor, now=now)  # fmt: skip
            if foldable:
                # PostgreSQL, and the lock changes by one renewal or acquisition at most: the
                # change, the decision and their audit records in one statement.
                return _record(session, now, principal, run.run_key, run.id, scope, policy,
                               decided, approval_id=approval_id, override_id=found.override_id,
                               decision_id=found.decision_id, lock_write=change)  # fmt: skip
        # The lock's audit records are written with the decision's, in one INSERT.
        records: list[AuditRecord] = []
        locks.apply(session, tenant=tenant, stage=stage, lock=lock, steps=decided.lock_steps,
                    ensure=decided.turn is not None, actor=principal.actor, now=now,
                    records=records)  # fmt: skip
        return _record(session, now, principal, run.run_key, run.id, scope, policy, decided,
                       approval_id=approval_id, override_id=found.override_id, records=records,
                       decision_id=found.decision_id)  # fmt: skip

    return ctx.run_action(action)


# --- the facts of one evaluation, in one statement ------------------------------------------


@dataclass(frozen=True)
class _Run:
    id: int
    run_key: str
    tenant: str | None
    stage: str | None
    artifact_digest: str | None
    commit: str | None
    status: str


@dataclass(frozen=True)
class _Found:
    policy_sha256: str | None
    policy_id: int | None
    run: _Run
    approval: decision_rules.ApprovalRecord | None
    override_id: int | None
    tests: rules.UnitTestFacts | None
    scan: rules.ScanFacts | None
    # The recorded builds covering the digest for the tenant, newest first: (the event's
    # data, its run's id, key and digest).
    builds: tuple[tuple[Any, int, str, str | None], ...] = ()
    # PostgreSQL: the decision's id, drawn from its sequence by the same statement, and the
    # target's lock row, locked by it (a 1-tuple, None when there is no row: see
    # `locks.read_lock`).
    decision_id: int | None = None
    lock: tuple[locks.LockRow | None] | None = None
    # PostgreSQL: the promotion rules' rows as read for the policy version of that hash
    # (`_PROMOTION_GUESS`).
    promotion: tuple[str, Any] | None = None


_RUN = cast(Table, PipelineRun.__table__)
_EVENT = cast(Table, PipelineEvent.__table__)
_APPROVAL = cast(Table, Approval.__table__)
_OVERRIDE = cast(Table, Override.__table__)
_POLICY = cast(Table, PolicyVersion.__table__)

# Built once per shape (which of tenant, stage and digest the request names, on which
# database, with the promotion rules' rows or not), with bound parameters: SQLAlchemy then
# reuses the statement's compiled form and cache key.
_FACTS: dict[tuple[bool, bool, bool, bool, bool], Any] = {}
# PostgreSQL: the facts read the promotion rules' rows too when the policy that decided last
# has promotion rules: (its hash, its major-release stage). The rows are used only when the
# facts name that same policy version; otherwise they are read in a statement of their own.
_PROMOTION_GUESS: list[tuple[str, str] | None] = [None]
# PostgreSQL: the facts draw the decision's id too, so the decision row and its audit record
# (which names it) can be written in one statement with the lock's change (`_record_pg`).
_NEXT_DECISION_ID = literal_column(
    "nextval(pg_get_serial_sequence('azdev_gate_decision', 'id'))", BigInteger
)


def _facts_statement(
    tenant_given: bool,
    stage_given: bool,
    digest_given: bool,
    postgresql: bool = False,
    promotion: bool = False,
) -> Any:
    run = _RUN.c
    approvals, overrides, event = _APPROVAL, _OVERRIDE.c, _EVENT.c
    tenant: Any = bindparam("tenant", type_=String) if tenant_given else run.tenant
    stage: Any = bindparam("stage", type_=String) if stage_given else run.stage
    digest: Any = bindparam("digest", type_=String) if digest_given else run.artifact_digest
    latest = approvals.alias("latest").c
    approval_id = (
        select(latest.id)
        .where(latest.run_pk == run.id, latest.tenant == tenant, latest.stage == stage)
        .order_by(latest.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    override_id = (
        select(overrides.id)
        .where(
            overrides.run_pk == run.id,
            overrides.tenant == tenant,
            overrides.stage == stage,
            overrides.status == "signed",
            or_(overrides.artifact_digest.is_(None), overrides.artifact_digest == digest),
        )
        .order_by(overrides.id.desc())
        .limit(1)
        .scalar_subquery()
    )

    def latest_event(phase: str) -> Any:
        return (
            select(event.data)
            .where(event.run_pk == run.id, event.phase == phase, event.attempt == run.attempt)
            .order_by(event.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    # The run's own row again, by its key (a scalar subquery): for what is read beside it.
    this = _RUN.alias("this").c

    def this_run(column: Any) -> Any:
        key = bindparam("run_key", type_=String)
        return select(column).where(this.run_key == key).scalar_subquery()

    # PostgreSQL: the target's lock row, locked (FOR UPDATE) by this statement.
    lock_columns: list[Any] = []
    source: Any = _RUN.outerjoin(approvals, approvals.c.id == approval_id)
    if postgresql:
        target = (
            bindparam("tenant", type_=String) if tenant_given else this_run(this.tenant),
            bindparam("stage", type_=String) if stage_given else this_run(this.stage),
        )
        held = locks.locking(*target)
        lock_columns = [
            held.c.present.label("lock_present"),
            held.c.holder_run_pk.label("lock_holder_run_pk"),
            held.c.holder_run_key.label("lock_holder_run_key"),
            held.c.expires_at.label("lock_expires_at"),
            held.c.version.label("lock_version"),
            # The queue and the holder's run, used when no change committed between this
            # statement's snapshot and the lock (`locks.queue_of`).
            *locks.queue_columns(*target, held),
        ]
        source = source.outerjoin(held, true())
        if promotion:
            # The rows of queries/deployments.promotion_history for the target and the digest
            # (the run's own, looked up by its key: the history's statement has runs of its
            # own), as one JSON array; the major-release stage is a parameter.
            rows = promotion_rows(
                tenant=bindparam("tenant", type_=String) if tenant_given else this_run(this.tenant),
                digest=func.coalesce(
                    bindparam("digest", type_=String)
                    if digest_given
                    else this_run(this.artifact_digest),
                    "",
                ),
                signoff_stage=(
                    bindparam("stage", type_=String) if stage_given else this_run(this.stage)
                ),
            )
            lock_columns.append(rows.label("promotion_rows"))
    versions = _POLICY.c
    policy = select(versions.id).order_by(versions.id.desc()).limit(1).scalar_subquery()
    policy_sha = select(versions.sha256).where(versions.id == policy).scalar_subquery()
    approval = approvals.c
    facts = (
        select(
            literal_column("0").label("kind"),
            sql_cast(null(), BigInteger).label("sort"),
            policy.label("policy_id"),
            policy_sha.label("policy_sha256"),
            run.id,
            run.run_key,
            run.tenant,
            run.stage,
            run.artifact_digest,
            run.commit,
            run.status,
            override_id.label("override_id"),
            latest_event("test").label("test_data"),
            latest_event("scan").label("scan_data"),
            approval.id.label("approval_id"),
            approval.status.label("approval_status"),
            approval.expires_at.label("approval_expires_at"),
            approval.tenant.label("approval_tenant"),
            approval.stage.label("approval_stage"),
            approval.artifact_digest.label("approval_digest"),
            approval.commit.label("approval_commit"),
            approval.budget_minor,
            approval.currency,
            approval.cost_impact_minor,
            (_NEXT_DECISION_ID if postgresql else sql_cast(null(), BigInteger)).label(
                "decision_id"
            ),
            *lock_columns,
        )
        .select_from(source)
        .where(run.run_key == bindparam("run_key", type_=String))
    )
    # The recorded builds that cover deploying the digest for the tenant (see `_build`), one
    # row each, newest first: the build event's data (as test_data), its run's id, key and
    # digest. The run itself is looked up by its key again (a scalar subquery).
    built_runs = _RUN.alias("built")
    built = built_runs.c
    build_tenant: Any = bindparam("tenant", type_=String) if tenant_given else this_run(this.tenant)
    build_digest: Any = (
        bindparam("digest", type_=String) if digest_given else this_run(this.artifact_digest)
    )
    builds = (
        select(
            literal_column("1"),  # kind
            event.id,  # sort
            *[null()] * 2,  # the policy's id and hash
            built.id,
            built.run_key,
            *[null()] * 2,  # tenant, stage
            built.artifact_digest,
            *[null()] * 3,  # commit, status, override
            event.data,  # as test_data
            *[null()] * 12,  # scan_data, the approval's ten columns, the decision's id
            *[null()] * len(lock_columns),
        )
        .select_from(_EVENT.join(built_runs, built.id == event.run_pk))
        .where(
            event.phase == "build",
            or_(
                built.id == this_run(this.id),
                and_(
                    built.artifact_digest == build_digest,
                    or_(built.tenant == build_tenant, built.tenant.is_(None)),
                ),
            ),
        )
    )
    return union_all(facts, builds).order_by(literal_column("kind"), literal_column("sort").desc())


def _read_facts(session: Session, command: EvaluateGate) -> _Found | None:
    """The active policy's version, the run, its latest approval for the target, its signed
    override of the artifact and its latest `test` and `scan` events, in one round trip
    (None: no run has this key)."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    guess = _PROMOTION_GUESS[0] if postgresql else None
    given = (
        command.tenant is not None,
        command.stage is not None,
        bool(command.artifact_digest),
        postgresql,
        guess is not None,
    )
    query = _FACTS.get(given)
    if query is None:
        query = _FACTS.setdefault(given, _facts_statement(*given))
    values: dict[str, Any] = {"run_key": command.run_key}
    if given[0]:
        values["tenant"] = command.tenant
    if given[1]:
        values["stage"] = command.stage
    if given[2]:
        values["digest"] = command.artifact_digest
    if guess is not None:
        values["other_stage"] = guess[1]
    rows = driver_rows(session, query, values)
    if not rows or rows[0].kind != 0:
        return None
    row = rows[0]
    approval = None
    if row.approval_id is not None:
        approval = decision_rules.ApprovalRecord(
            id=row.approval_id,
            status=ApprovalStatus(row.approval_status),
            expires_at=row.approval_expires_at,
            scope=rules.Scope(
                tenant=row.approval_tenant,
                stage=row.approval_stage,
                artifact_digest=row.approval_digest or "",
                commit=row.approval_commit,
            ),
            budget_minor=row.budget_minor,
            currency=row.currency,
            cost_impact_minor=row.cost_impact_minor,
        )
    return _Found(
        policy_sha256=row.policy_sha256,
        policy_id=row.policy_id,
        run=_Run(
            id=row.id,
            run_key=row.run_key,
            tenant=row.tenant,
            stage=row.stage,
            artifact_digest=row.artifact_digest,
            commit=row.commit,
            status=row.status,
        ),
        approval=approval,
        override_id=row.override_id,
        tests=_tests(row.test_data),
        scan=_scan(row.scan_data),
        builds=tuple((b.test_data, b.id, b.run_key, b.artifact_digest) for b in rows[1:]),
        decision_id=row.decision_id,
        lock=_lock_row(row) if postgresql else None,
        promotion=(guess[0], row.promotion_rows) if guess is not None else None,
    )


def _lock_row(row: Any) -> tuple[locks.LockRow | None]:
    if row.lock_present is None:
        return (None,)
    queue = locks.queue_of(
        holder_run_pk=row.lock_holder_run_pk,
        version=row.lock_version,
        seen_version=row.lock_seen_version,
        holder_status=row.lock_holder_status,
        waiters=row.lock_waiters,
    )
    return (
        locks.LockRow(row.lock_holder_run_pk, row.lock_holder_run_key, row.lock_expires_at, queue),
    )


def _policy(ctx: ServiceContext, session: Session, found: _Found | None) -> Policy:
    if found is None or found.policy_sha256 is None or found.policy_id is None:
        return ctx.policies.active(session)  # raises NoPolicy when none was applied
    return ctx.policies.version(session, found.policy_sha256, found.policy_id)


def _guess_promotion(policy: Policy) -> None:
    """Let the next evaluations read the promotion rules' rows with their facts when this
    policy has promotion rules (`_PROMOTION_GUESS`)."""
    guess = None
    if policy.promotion is not None:
        guess = (policy.sha256, policy.promotion.major_release_stage)
    if _PROMOTION_GUESS[0] != guess:
        _PROMOTION_GUESS[0] = guess


_SCHEDULES: dict[tuple[str, str, str], Schedule] = {}
_SCHEDULES_LOCK = threading.Lock()


def _schedule(policy: Policy, tenant: str, stage: str) -> Schedule:
    """The target's windows and freezes, parsed once per policy version."""
    key = (policy.sha256, tenant, stage)
    with _SCHEDULES_LOCK:
        cached = _SCHEDULES.get(key)
    if cached is not None:
        return cached
    timezone = policy.tenants[tenant].timezone
    schedule = policy.gates.schedule(tenant=tenant, stage=stage, timezone=timezone)
    with _SCHEDULES_LOCK:
        if len(_SCHEDULES) > 4096:
            _SCHEDULES.clear()
        _SCHEDULES[key] = schedule
    return schedule


def _check_target(policy: Policy, tenant: str, stage: str) -> None:
    if tenant not in policy.tenants:
        raise UnknownTenant(f"tenant {tenant!r} is not in the active policy")
    if policy.stage(stage) is None:
        raise UnknownStage(f"stage {stage!r} is not in the active policy")


def _build(
    rows: tuple[tuple[Any, int, str, str | None], ...], run: _Run, digest: str | None
) -> rules.BuildFacts:
    """The recorded builds that cover deploying `digest` for the target's tenant (read with
    the facts, newest first).

    The `build` events of this run (every attempt: a re-run of the deploy stage keeps the
    build of the first attempt) and, when a digest is named, those of other runs whose
    artifact is that digest and whose tenant is the target's or none (a shared build
    pipeline). Another tenant's run never counts, not even as an allow. A build event's
    digest is its own `artifact_digest`, else its run's.
    """
    failed_here = built_here = False
    latest_here: dict[str, Any] | None = None
    built_other: str | None = None
    built_by: str | None = None
    for data, run_pk, run_key, run_digest in rows:
        data = data if isinstance(data, dict) else {}
        built = data.get("artifact_digest") or run_digest
        passed = data.get("passed") is not False
        if run_pk == run.id:
            if latest_here is None:
                latest_here = data
                failed_here = not passed
                if passed and built != digest:
                    built_other = built
            built_here = built_here or (passed and bool(digest) and built == digest)
        elif built_by is None and passed and built == digest:
            built_by = run_key
    return rules.BuildFacts(
        failed_here=failed_here, built_here=built_here, built_by=built_by, built_other=built_other
    )


def _tests(data: Any) -> rules.UnitTestFacts | None:
    if not isinstance(data, dict):
        return None
    coverage = data.get("coverage_percent")
    return rules.UnitTestFacts(
        passed=data.get("passed") is True,
        coverage_percent=float(coverage) if isinstance(coverage, int | float) else None,
    )


def _scan(data: Any) -> rules.ScanFacts | None:
    if not isinstance(data, dict):
        return None
    findings = data.get("findings") or {}
    return rules.ScanFacts(
        passed=data.get("passed") is True,
        critical=int(findings.get("critical", 0)),
        high=int(findings.get("high", 0)),
    )


# --- the record ------------------------------------------------------------------------------

_DECISION = cast(Table, GateEvaluation.__table__)
_INSERT_DECISION = insert(_DECISION).returning(_DECISION.c.id)
_INSERT_DECISION_WITH_ID = insert(_DECISION)
# PostgreSQL: the decision row (its id drawn with the facts), the lock's change (an UPDATE
# from `locks.fold`, or none) and the audit records, the lock's before the decision's, as
# data-modifying CTEs of one statement returning the records' inbox ids. Built once per shape
# (which UPDATE, how many records).
_WRITES: dict[tuple[Update | None, int], Select[Any]] = {}


def _write_statement(lock_update: Update | None, count: int) -> Select[Any]:
    decision = insert(_DECISION).values(
        {c.name: bindparam("decision_" + c.name, type_=c.type) for c in _DECISION.columns}
    )
    chain = inbox_chain(count, "record")
    joined: Any = chain[0]
    for record in chain[1:]:
        joined = joined.join(record, true())
    statement = select(*(record.c.id for record in chain)).select_from(joined)
    statement = statement.add_cte(decision.cte("new_decision"))
    if lock_update is not None:
        statement = statement.add_cte(lock_update.cte("lock_change"))
    return statement


def _record(
    session: Session,
    now: datetime,
    principal: Principal,
    run_key: str,
    run_pk: int | None,
    scope: rules.Scope,
    policy: Policy,
    decided: Decision,
    *,
    approval_id: int | None = None,
    override_id: int | None = None,
    records: list[AuditRecord] | None = None,
    decision_id: int | None = None,
    lock_write: locks.LockWrite | None = None,
) -> GateAnswer:
    """The decision row and its audit entry, written after `records` (the lock's, stamped
    with `now` too) in one INSERT; `decision_id`: the row's id, drawn already.

    With `lock_write` (PostgreSQL, `decision_id` drawn), or with neither records nor a lock
    change: the lock's change, the decision row and the audit records in one statement."""
    digest = scope.artifact_digest or None
    row = {
        "run_pk": run_pk,
        "run_key": run_key,
        "tenant": scope.tenant,
        "stage": scope.stage,
        "artifact_digest": digest,
        "commit": scope.commit,
        "status": decided.status.value,
        "codes": decided.codes,
        "approval_id": approval_id,
        "override_id": override_id,
        "policy_hash": policy.sha256,
        "decided_at": now,
        "decided_by": principal.id,
    }
    one_statement = decision_id is not None and (lock_write is not None or not records)
    if decision_id is None:
        decision_id = session.execute(_INSERT_DECISION, row).scalar_one()
    elif not one_statement:
        session.execute(_INSERT_DECISION_WITH_ID, {"id": decision_id, **row})
    turn = decided.turn
    rollback = decided.rollback
    decision = AuditRecord(
        actor=principal.actor,
        action="gate.decide",
        subject_type="run",
        subject_id=run_key,
        tenant=scope.tenant,
        data={
            "decision": decision_id,
            "stage": scope.stage,
            "artifact_digest": digest,
            "commit": scope.commit,
            "status": decided.status.value,
            "reasons": [r.as_dict() for r in decided.reasons],
            "approval_id": approval_id,
            "override_id": override_id,
            "overridden": list(decided.overridden),
            "policy_sha256": policy.sha256,
            "queue_position": turn.position if turn else None,
            # A rollback request is always recorded as one (seed 000 §6.1).
            "rollback": rollback.as_record() if rollback is not None else None,
        },
        at=now,
    )
    if one_statement:
        _write(session, decision_id, row, lock_write, decision)
    else:
        append_audits(session, [*(records or ()), decision])
    return GateAnswer(
        decision_id=decision_id,
        status=decided.status,
        reasons=decided.reasons,
        run_key=run_key,
        tenant=scope.tenant,
        stage=scope.stage,
        policy_hash=policy.sha256,
        approval_id=approval_id,
        override_id=override_id,
        overridden=decided.overridden,
        lock_holder=turn.blocked_by if turn else None,
        queue_position=turn.position if turn else None,
        lock_expires_at=decided.lock_expires_at,
    )


def _write(
    session: Session,
    decision_id: int,
    row: dict[str, Any],
    lock_write: locks.LockWrite | None,
    decision: AuditRecord,
) -> None:
    """PostgreSQL: the lock's change, the decision row and the audit records (the lock's,
    then the decision's) in one statement."""
    session.flush()  # as in append_audits: the action's row locks before the inbox ids
    records = [decision] if lock_write is None else [lock_write.record, decision]
    update = lock_write.update if lock_write is not None else None
    shape = (update, len(records))
    statement = _WRITES.get(shape)
    if statement is None:
        statement = _WRITES.setdefault(shape, _write_statement(*shape))
    values = inbox_chain_values(records, "record")
    values.update(("decision_" + name, value) for name, value in row.items())
    values["decision_id"] = decision_id
    if lock_write is not None:
        values.update(lock_write.values)
    (inserted,) = driver_rows(session, statement, values)
    for inbox_id in inserted:
        appended(session, int(inbox_id))


def has_allow(session: Session, *, run_pk: int, tenant: str | None, stage: str | None) -> bool:
    """Whether the gate ever allowed this run to deploy to this target."""
    if tenant is None or stage is None:
        return False
    found = session.scalar(
        select(GateEvaluation.id)
        .where(
            GateEvaluation.run_pk == run_pk,
            GateEvaluation.tenant == tenant,
            GateEvaluation.stage == stage,
            GateEvaluation.status == GateStatus.ALLOW.value,
        )
        .limit(1)
    )
    return found is not None
