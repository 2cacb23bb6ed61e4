"""Governed policy changes (seed 000 §8.1): a new policy version takes effect only after two
approvers sign it.

A proposal holds the validated document, its sha256 and the version it was based on (the
active one when proposed). People holding `policy:sign` for every tenant sign it (approve or
reject); the proposer never signs, one person signs once. The second approval activates it
in the same transaction: a new `azdev_policy_version` row and a `policy.activate` audit entry
holding the document (replay rebuilds the version from it). A proposal whose base is no
longer the active version cannot be signed into effect: it answers 409 and must be proposed
again. Rejection by any signer closes it; the proposing side may withdraw it while pending.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission, Role
from azdev_ica.db.tables import PolicyProposal, PolicySignature, PolicyVersion
from azdev_ica.errors import (
    Conflict,
    NoPolicy,
    NotFound,
    PersonRequired,
    PolicyChangeRefused,
    StaleProposal,
    ValidationProblem,
)
from azdev_ica.policy import parse_policy
from azdev_ica.policy.diff import PolicyDiff, diff_policies
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import enqueue

PENDING, ACTIVE, REJECTED, WITHDRAWN = "pending", "active", "rejected", "withdrawn"
SIGNATURES_REQUIRED = 2
SIGNER_ROLES = (Role.ADMIN, Role.APPROVER_TECH, Role.APPROVER_BIZ)


@dataclass(frozen=True)
class ProposalOutcome:
    proposal: PolicyProposal
    created: bool


def _text(text: str | None, what: str, *, required: bool) -> str | None:
    if text is None or not text.strip():
        if required:
            raise ValidationProblem(f"give a {what} of 1 to 2000 characters")
        return None
    text = text.strip()
    if len(text) > 2000:
        raise ValidationProblem(f"give a {what} of 1 to 2000 characters")
    return text


# PostgreSQL advisory lock key ("ICApolcy"): one policy change (activation, direct apply) at a
# time, so the newest version read after taking it is the one the change builds on.
POLICY_LOCK = 0x4943_4170_6F6C_6379


def lock_policy_changes(session: Session) -> None:
    """Serialise changes of the active policy until the transaction ends. Taken before
    reading the active version; SQLite's write transactions are serial already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POLICY_LOCK})


def latest_version(session: Session) -> PolicyVersion | None:
    """The active policy version: the newest row (as `PolicyCache.active` reads it)."""
    return session.scalars(
        select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)
    ).one_or_none()


def propose_policy(
    ctx: ServiceContext, *, principal: Principal, document: str, reason: str
) -> ProposalOutcome:
    """Validate `document` and store it as a pending proposal on the active version.
    Proposing the same document again while its proposal is pending answers with it."""
    why = _text(reason, "reason", required=True)
    if principal.scope(Permission.POLICY_PROPOSE) is not None:
        raise PolicyChangeRefused(
            "a policy governs every tenant: proposing needs an all-tenants grant",
            code="all_tenants_required",
        )
    policy = parse_policy(document, source="proposal")

    def action(session: Session) -> ProposalOutcome:
        base = latest_version(session)
        if base is not None and base.sha256 == policy.sha256:
            raise Conflict(
                f"policy {policy.sha256[:12]} is the active policy already", code="already_active"
            )
        base_id = base.id if base is not None else None
        existing = session.scalars(
            select(PolicyProposal).where(
                PolicyProposal.status == PENDING,
                PolicyProposal.sha256 == policy.sha256,
                (PolicyProposal.base_version_id == base_id)
                if base_id is not None
                else PolicyProposal.base_version_id.is_(None),
            )
        ).first()
        if existing is not None:
            return ProposalOutcome(existing, created=False)
        now = ctx.clock.now()
        row = PolicyProposal(
            sha256=policy.sha256,
            document=document,
            reason=why,
            base_version_id=base_id,
            base_sha256=base.sha256 if base is not None else None,
            status=PENDING,
            signatures_required=SIGNATURES_REQUIRED,
            proposed_by=principal.id,
            proposed_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=principal.actor,
            action="policy.propose",
            subject_type="policy_proposal",
            subject_id=str(row.id),
            tenant=None,
            data={
                "sha256": policy.sha256,
                "reason": why,
                "base_version_id": base_id,
                "base_sha256": row.base_sha256,
                "signatures_required": SIGNATURES_REQUIRED,
                "document": document,
            },
            at=now,
        )
        _notify(ctx, session, row, "policy.proposed", "info")
        return ProposalOutcome(row, created=True)

    return ctx.run_action(action)


def sign_proposal(
    ctx: ServiceContext,
    *,
    principal: Principal,
    proposal_id: int,
    approve: bool,
    comment: str | None = None,
) -> PolicyProposal:
    """A person holding `policy:sign` for every tenant signs; the second approval makes the
    proposal the active policy, in this transaction."""
    note = _text(comment, "comment", required=False)
    if not principal.is_person or principal.person_id is None:
        raise PersonRequired("a policy change is signed by a person, never by a key or pipeline")
    person_id = principal.person_id

    def action(session: Session) -> PolicyProposal:
        if approve:  # an approval may activate: the active version must not move meanwhile
            lock_policy_changes(session)
        row = _proposal(session, proposal_id, lock=True)
        if not principal.can(Permission.POLICY_SIGN):
            raise PolicyChangeRefused(
                "signing a policy change needs the policy:sign permission", code="role_not_held"
            )
        if principal.scope(Permission.POLICY_SIGN) is not None:
            raise PolicyChangeRefused(
                "a policy governs every tenant: signing needs an all-tenants grant",
                code="all_tenants_required",
            )
        if principal.id == row.proposed_by:
            raise PolicyChangeRefused(
                "the proposer never signs their own policy change", code="proposer_cannot_sign"
            )
        signatures = signatures_of(session, row.id)
        if any(s.person_id == person_id for s in signatures):
            raise PolicyChangeRefused(
                "you have signed this policy change already", code="already_signed"
            )
        if row.status != PENDING:
            raise PolicyChangeRefused(f"the proposal is {row.status}", code="proposal_closed")
        active = latest_version(session)
        active_id = active.id if active is not None else None
        if approve and active_id != row.base_version_id:
            raise StaleProposal(
                f"proposal {row.id} was based on policy "
                f"{(row.base_sha256 or 'none')[:12]}, which is no longer active: propose it "
                "again on the active policy",
                code="stale_base",
            )
        now = ctx.clock.now()
        decision = "approve" if approve else "reject"
        session.add(
            PolicySignature(
                proposal_id=row.id,
                person_id=person_id,
                decision=decision,
                comment=note,
                signed_at=now,
            )
        )
        approvals = [s.person_id for s in signatures if s.decision == "approve"]
        if approve:
            approvals.append(person_id)
        if not approve:
            row.status = REJECTED
            row.closed_at = now
            row.closed_by = principal.id
            row.close_reason = note
        elif len(approvals) >= row.signatures_required:
            row.status = ACTIVE
            row.closed_at = now
            row.closed_by = principal.id
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="policy.sign",
            subject_type="policy_proposal",
            subject_id=str(row.id),
            tenant=None,
            data={
                "decision": decision,
                "comment": note,
                "person_id": person_id,
                "status": row.status,
            },
            at=now,
        )
        if row.status == ACTIVE:
            _activate(ctx, session, row, principal, approvals, active)
        elif row.status == REJECTED:
            _notify(ctx, session, row, "policy.rejected", "info")
        return row

    return ctx.run_action(action)


def _activate(
    ctx: ServiceContext,
    session: Session,
    row: PolicyProposal,
    principal: Principal,
    signers: list[int],
    previous: PolicyVersion | None,
) -> None:
    # Validated again: the schema may have grown since the proposal was made.
    policy = parse_policy(row.document, source=f"proposal {row.id}")
    now = ctx.clock.now()
    version = PolicyVersion(
        sha256=policy.sha256, document=row.document, applied_at=now, applied_by=principal.id
    )
    session.add(version)
    session.flush()
    row.version_id = version.id
    append_audit(
        session,
        actor=principal.actor,
        action="policy.activate",
        subject_type="policy",
        subject_id=policy.sha256,
        tenant=None,
        data={
            "version_id": version.id,
            "proposal_id": row.id,
            "previous_sha256": previous.sha256 if previous else None,
            "signers": signers,
            "proposed_by": row.proposed_by,
            "tenants": sorted(policy.tenants),
            "stages": [stage.name for stage in policy.stages],
            # The whole document: `ica audit replay` rebuilds the policy versions from it.
            "document": row.document,
        },
        at=now,
    )
    _notify(ctx, session, row, "policy.activated", "warning")


def withdraw_proposal(
    ctx: ServiceContext, *, principal: Principal, proposal_id: int, reason: str
) -> PolicyProposal:
    """The proposing side (the proposer, or anyone who may propose for every tenant) withdraws
    a pending proposal."""
    why = _text(reason, "reason", required=True)

    def action(session: Session) -> PolicyProposal:
        row = _proposal(session, proposal_id, lock=True)
        may_propose = principal.scope(Permission.POLICY_PROPOSE) is None and principal.can(
            Permission.POLICY_PROPOSE
        )
        if principal.id != row.proposed_by and not may_propose:
            raise PolicyChangeRefused(
                "only the proposing side withdraws a proposal", code="not_the_proposer"
            )
        if row.status != PENDING:
            if row.status == WITHDRAWN and row.close_reason == why:
                return row  # a retried withdrawal
            raise PolicyChangeRefused(f"the proposal is {row.status}", code="proposal_closed")
        now = ctx.clock.now()
        row.status = WITHDRAWN
        row.closed_at = now
        row.closed_by = principal.id
        row.close_reason = why
        row.updated_at = now
        append_audit(
            session,
            actor=principal.actor,
            action="policy.withdraw",
            subject_type="policy_proposal",
            subject_id=str(row.id),
            tenant=None,
            data={"reason": why},
            at=now,
        )
        return row

    return ctx.run_action(action)


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalView:
    proposal: PolicyProposal
    signatures: list[PolicySignature]
    stale: bool


def get_proposal(session: Session, proposal_id: int) -> ProposalView:
    row = _proposal(session, proposal_id, lock=False)
    return _view(session, row, _active_id(session))


def list_proposals(
    session: Session, *, status: str | None = None, limit: int = 50
) -> list[ProposalView]:
    query = select(PolicyProposal).order_by(PolicyProposal.id.desc()).limit(limit)
    if status is not None:
        query = query.where(PolicyProposal.status == status)
    active_id = _active_id(session)
    return [_view(session, row, active_id) for row in session.scalars(query)]


def list_versions(session: Session) -> list[PolicyVersion]:
    """Every policy version, newest first."""
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc())))


def find_version(session: Session, ref: str) -> PolicyVersion:
    """A version by id (`7`) or by sha256 (or a prefix of at least 7 hex digits; the newest
    version with that hash)."""
    ref = ref.strip().lower()
    if ref.isdigit() and len(ref) <= 6:
        row = session.get(PolicyVersion, int(ref))
        if row is None:
            raise NotFound(f"no policy version {ref}")
        return row
    if not 7 <= len(ref) <= 64 or any(c not in "0123456789abcdef" for c in ref):
        raise ValidationProblem(f"not a version id or a sha256 (prefix): {ref!r}")
    rows = list(
        session.scalars(
            select(PolicyVersion)
            .where(PolicyVersion.sha256.startswith(ref, autoescape=True))
            .order_by(PolicyVersion.id.desc())
        )
    )
    if not rows:
        raise NotFound(f"no policy version with sha256 {ref}")
    if len({r.sha256 for r in rows}) > 1:
        raise ValidationProblem(f"the sha256 prefix {ref} names several versions: give more")
    return rows[0]


def resolve_ref(session: Session, ref: str | None) -> tuple[str, str, PolicyVersion | None]:
    """A ref's document, its label, and what a default `from` compares it with (the version
    before it; for a proposal, its base). Refs: None (the active version), a version id, a
    sha256 (prefix), or `proposal:ID`."""
    if ref is not None and ref.startswith("proposal:"):
        number = ref.removeprefix("proposal:")
        if not number.isdigit():
            raise ValidationProblem(f"not a proposal ref: {ref!r}")
        row = _proposal(session, int(number), lock=False)
        base = session.get(PolicyVersion, row.base_version_id) if row.base_version_id else None
        return row.document, f"proposal {row.id}", base
    version = find_version(session, ref) if ref is not None else latest_version(session)
    if version is None:
        raise NoPolicy("no policy has been applied")
    previous = session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.id < version.id)
        .order_by(PolicyVersion.id.desc())
        .limit(1)
    ).one_or_none()
    return version.document, f"version {version.id}", previous


def diff_documents(from_doc: str, from_label: str, to_doc: str, to_label: str) -> PolicyDiff:
    old = parse_policy(from_doc, source=from_label)
    new = parse_policy(to_doc, source=to_label)
    return diff_policies(
        old.content,
        new.content,
        old_sha256=old.sha256,
        new_sha256=new.sha256,
        old_label=f"{from_label} ({old.sha256[:12]})",
        new_label=f"{to_label} ({new.sha256[:12]})",
    )


def diff_refs(session: Session, *, from_ref: str | None, to_ref: str | None) -> PolicyDiff:
    """`to` defaults to the active version; `from` to the version before `to` (for a
    proposal, its base version)."""
    to_doc, to_label, base = resolve_ref(session, to_ref)
    if from_ref is not None:
        from_doc, from_label, _ = resolve_ref(session, from_ref)
    elif base is not None:
        from_doc, from_label = base.document, f"version {base.id}"
    else:
        raise NotFound(f"there is no policy version before {to_label} to compare with")
    return diff_documents(from_doc, from_label, to_doc, to_label)


def signatures_of(session: Session, proposal_id: int) -> list[PolicySignature]:
    return list(
        session.scalars(
            select(PolicySignature)
            .where(PolicySignature.proposal_id == proposal_id)
            .order_by(PolicySignature.id)
        )
    )


def _active_id(session: Session) -> int | None:
    row = latest_version(session)
    return row.id if row is not None else None


def _view(session: Session, row: PolicyProposal, active_id: int | None) -> ProposalView:
    stale = row.status == PENDING and row.base_version_id != active_id
    return ProposalView(row, signatures_of(session, row.id), stale)


def _proposal(session: Session, proposal_id: int, *, lock: bool) -> PolicyProposal:
    query = select(PolicyProposal).where(PolicyProposal.id == proposal_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no policy proposal {proposal_id}")
    return row


def proposal_link(ctx: ServiceContext, proposal_id: int) -> str:
    """The proposal's console page (its JSON is `/api/v1/azdev/policy/proposal/{id}`)."""
    return f"{ctx.public_url.rstrip('/')}/policy/proposals/{proposal_id}"


def _notify(
    ctx: ServiceContext, session: Session, row: PolicyProposal, topic: str, severity: str
) -> None:
    enqueue(
        session,
        topic=topic,
        channel="notify",
        subject_type="policy_proposal",
        subject_id=str(row.id),
        tenant=None,
        payload={
            "topic": topic,
            "severity": severity,
            "proposal_id": row.id,
            "sha256": row.sha256,
            "status": row.status,
            "reason": row.reason,
            "proposed_by": row.proposed_by,
            "roles": [role.value for role in SIGNER_ROLES] + [Role.AUDITOR.value],
            "link": proposal_link(ctx, row.id),
        },
        at=ctx.clock.now(),
    )
