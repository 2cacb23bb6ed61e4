"""Properties of the gate's whole decision (`domain/gate_decision.py`) and of its lock plan
(`domain/locks.py`), over generated facts: the rules hold for every combination, not only
for the cases the service tests drive through HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.domain import gate_decision as gd
from azdev_ica.domain import gates, locks
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.domain.gates import GateStatus, ReasonCode
from azdev_ica.domain.promotion import SignoffKind, StageRule
from azdev_ica.domain.windows import WindowState

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=30)
STALE = timedelta(minutes=5)
RUN_PK = 7
RUN_KEY = "azure:p:7"
DIGESTS = ("sha256:aa", "sha256:bb", "")
PENDING_KINDS = {ReasonCode.APPROVAL_PENDING.value, ReasonCode.LOCK_HELD.value}
STAGES = (
    StageRule("development"),
    StageRule("test", requires=frozenset({SignoffKind.CI})),
    StageRule("production", requires=frozenset({SignoffKind.QA})),
)

scopes = st.builds(
    gates.Scope,
    tenant=st.sampled_from(("to", "ws")),
    stage=st.sampled_from(("development", "test", "production")),
    artifact_digest=st.sampled_from(DIGESTS),
    commit=st.sampled_from((None, "abc")),
)
deployments = st.builds(
    gd.DeploymentFact,
    tenant=st.sampled_from(("to", "ws")),
    stage=st.sampled_from(("development", "test", "production")),
    artifact_digest=st.sampled_from((*DIGESTS, None)),
    version=st.sampled_from((None, "1.2.0", "2.0.0")),
    run_key=st.sampled_from(("azure:p:1", "azure:p:2")),
    good=st.booleans(),
)


@st.composite
def waiters(draw: st.DrawFn) -> tuple[locks.Waiter, ...]:
    pks = draw(st.lists(st.sampled_from((RUN_PK, 8, 9, 10)), max_size=4, unique=True))
    return tuple(
        locks.Waiter(
            id=index + 1,
            run_pk=pk,
            run_key=RUN_KEY if pk == RUN_PK else f"azure:p:{pk}",
            running=draw(st.booleans()),
            last_seen_at=NOW - draw(st.sampled_from((timedelta(0), STALE, 2 * STALE))),
        )
        for index, pk in enumerate(pks)
    )


@st.composite
def lock_facts(draw: st.DrawFn) -> locks.LockFacts:
    if not draw(st.booleans()):
        return locks.LockFacts()
    holder = draw(st.sampled_from((None, RUN_PK, 11)))
    return locks.LockFacts(
        exists=True,
        holder_run_pk=holder,
        holder_run_key=None if holder is None else f"azure:p:{holder}",
        expires_at=None if holder is None else NOW + draw(st.sampled_from((-LEASE, LEASE))),
        holder_running=draw(st.booleans()),
        queue=draw(waiters()),
    )


@st.composite
def facts(draw: st.DrawFn) -> gd.EvaluationFacts:
    scope = draw(scopes)
    approval = None
    if draw(st.booleans()):
        approval = gd.ApprovalRecord(
            id=3,
            status=draw(st.sampled_from(list(ApprovalStatus))),
            expires_at=NOW + draw(st.sampled_from((-LEASE, LEASE))),
            scope=draw(st.one_of(st.just(scope), scopes)),
            budget_minor=draw(st.sampled_from((None, 0, 100, 10_000))),
            currency=draw(st.sampled_from((None, "EUR", "USD"))),
            cost_impact_minor=draw(st.sampled_from((None, 50, 500))),
        )
    promotion = None
    if draw(st.booleans()):
        promotion = gd.PromotionFacts(
            stages=STAGES,
            production_stage="production",
            deployments=tuple(draw(st.lists(deployments, max_size=4))),
            signoffs=tuple(draw(st.lists(st.sampled_from(list(SignoffKind)), max_size=2))),
        )
    rollback = None
    if draw(st.booleans()):
        rollback = gd.RollbackFacts(
            history=tuple(draw(st.lists(deployments, max_size=5))),
            without_approval_allowed=draw(st.booleans()),
        )
    allow_list = draw(st.sampled_from((None, frozenset({"npm:left-pad"}))))
    return gd.EvaluationFacts(
        now=NOW,
        scope=scope,
        run_pk=RUN_PK,
        run_key=RUN_KEY,
        run_running=draw(st.booleans()),
        rules=gates.GateRules(
            requires_approval=draw(st.booleans()),
            requires_build=draw(st.booleans()),
            requires_tests=draw(st.booleans()),
            requires_scan=draw(st.booleans()),
            dependency_allow_list=allow_list,
        ),
        cost_impact_minor=draw(st.sampled_from((None, 10, 1_000))),
        currency=draw(st.sampled_from((None, "EUR", "USD"))),
        dependencies=draw(st.sampled_from((None, frozenset(), frozenset({"npm:evil"})))),
        version=draw(st.sampled_from((None, "1.3.0", "2.0.0"))),
        approval=approval,
        build=draw(
            st.one_of(
                st.none(),
                st.builds(gates.BuildFacts, failed_here=st.booleans(), built_here=st.booleans()),
            )
        ),
        tests=draw(
            st.one_of(
                st.none(),
                st.builds(
                    gates.UnitTestFacts,
                    passed=st.booleans(),
                    coverage_percent=st.sampled_from((None, 50.0, 95.0)),
                ),
            )
        ),
        scan=draw(st.one_of(st.none(), st.builds(gates.ScanFacts, passed=st.booleans()))),
        window=draw(st.sampled_from(list(WindowState))),
        override_id=draw(st.sampled_from((None, 42))),
        promotion=promotion,
        rollback=rollback,
        lock=draw(lock_facts()),
        lease=LEASE,
        stale=STALE,
    )


def _holds_after(lock: locks.LockFacts, steps: tuple[locks.Step, ...]) -> bool:
    holder = lock.holder_run_pk
    for step in steps:
        if isinstance(step, locks.Expire):
            holder = None
        elif isinstance(step, locks.Acquire):
            holder = step.run_pk
    return holder == RUN_PK


@settings(max_examples=120, deadline=None)
@given(facts())
def test_the_status_follows_the_reasons(f: gd.EvaluationFacts) -> None:
    decided = gd.decide(f)
    outcomes = {reason.outcome for reason in decided.reasons}
    # A deny reason always yields deny, and deny always has one.
    assert (GateStatus.DENY in outcomes) == (decided.status is GateStatus.DENY)
    if decided.status is GateStatus.PENDING:
        # Pending only when every reason is of a pending kind (and there is one).
        assert decided.reasons
        assert {r.code for r in decided.reasons} <= PENDING_KINDS
        assert outcomes == {GateStatus.PENDING}
    if decided.status is GateStatus.ALLOW:
        # What an allow says is only what lifted a rule or what the rollback deploys.
        assert outcomes <= {GateStatus.ALLOW}
        assert {r.code for r in decided.reasons} <= {gd.OVERRIDE, gd.ROLLBACK}
    assert decided.codes == [reason.code for reason in decided.reasons]


@settings(max_examples=120, deadline=None)
@given(facts())
def test_an_override_never_lifts_a_finished_run(f: gd.EvaluationFacts) -> None:
    decided = gd.decide(f)
    assert not set(decided.overridden) & gd.NOT_OVERRIDABLE
    if not f.run_running:
        assert ReasonCode.RUN_FINISHED.value in decided.codes
        assert decided.status is GateStatus.DENY
    if f.override_id is None:
        assert decided.overridden == ()
    else:
        # Every deny reason left is one an override cannot lift.
        denials = {r.code for r in decided.reasons if r.outcome is GateStatus.DENY}
        assert denials <= gd.NOT_OVERRIDABLE
        assert (gd.OVERRIDE in decided.codes) == (decided.status is GateStatus.ALLOW)


@settings(max_examples=120, deadline=None)
@given(facts())
def test_the_lock_is_taken_only_on_allow(f: gd.EvaluationFacts) -> None:
    decided = gd.decide(f)
    steps = decided.lock_steps
    acquired = [s for s in steps if isinstance(s, locks.Acquire)]
    if decided.status is GateStatus.ALLOW:
        assert len(acquired) == 1
        assert acquired[0].expires_at == NOW + LEASE == decided.lock_expires_at
        assert _holds_after(f.lock, steps)
        assert decided.turn is not None
        assert decided.turn.holds
    else:
        assert acquired == []
        assert decided.lock_expires_at is None
    if decided.status is GateStatus.DENY:
        # A denied run only leaves the queue; it frees, expires and joins nothing.
        assert decided.turn is None
        assert all(
            isinstance(s, locks.Dequeue) and s.reason == locks.DENIED and s.run_key == RUN_KEY
            for s in steps
        )
    if ReasonCode.LOCK_HELD.value in decided.codes:
        assert decided.turn is not None
        assert decided.turn.blocked_by is not None
        assert decided.turn.blocked_by != RUN_KEY
        assert decided.codes[-1] == ReasonCode.LOCK_HELD.value


@settings(max_examples=120, deadline=None)
@given(
    lock_facts(),
    st.booleans(),
)
def test_the_queue_is_first_come_first_served(lock: locks.LockFacts, ready: bool) -> None:
    plan = locks.take_turn(
        lock, run_pk=RUN_PK, run_key=RUN_KEY, now=NOW, lease=LEASE, stale=STALE, ready=ready
    )
    dropped = {s.waiter_id for s in plan.steps if isinstance(s, locks.Dequeue)}
    live = [w for w in lock.queue if w.id not in dropped]
    # Only finished or silent waiters are dropped by the system, and every one of them is.
    for waiter in lock.queue:
        lost = not waiter.running or waiter.last_seen_at + STALE <= NOW
        by_system = any(
            isinstance(s, locks.Dequeue) and s.by_system and s.waiter_id == waiter.id
            for s in plan.steps
        )
        assert lost == by_system
    expired = [s for s in plan.steps if isinstance(s, locks.Expire)]
    if expired:
        # Freed first, before anything else happens to the lock.
        assert plan.steps[0] == expired[0]
        assert len(expired) == 1
    joins = [s for s in plan.steps if isinstance(s, locks.Join)]
    if joins:
        assert ready
        assert RUN_PK not in {w.run_pk for w in live}
        assert joins[0].position == len(live) + 1 == plan.turn.position
        assert joins[0].queue[-1] == RUN_KEY
    if plan.turn.holds:
        # Nobody live waited ahead of a run that takes a free lock.
        mine = [w.run_pk for w in live].index(RUN_PK) if RUN_PK in [w.run_pk for w in live] else 0
        assert lock.holder_run_pk == RUN_PK or mine == 0
    if plan.turn.blocked_by is None:
        assert plan.turn.position is None


@given(scopes)
def test_an_unknown_run_is_denied_alone(scope: gates.Scope) -> None:
    decided = gd.run_not_found(scope)
    assert decided.status is GateStatus.DENY
    assert decided.codes == [ReasonCode.RUN_NOT_FOUND.value]
    assert decided.lock_steps == ()
