"""Applying a policy version directly: the very first policy (`ica init`), and the operator's
audited break-glass recovery (`ica policy apply --break-glass --reason`). Every other change is
a governed proposal signed by two approvers (services/policy_changes.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import PolicyVersion
from azdev_ica.errors import Conflict, ValidationProblem
from azdev_ica.policy import Policy, parse_policy
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.policy_changes import lock_policy_changes


@dataclass(frozen=True)
class AppliedPolicy:
    policy: Policy
    version_id: int
    changed: bool


def apply_policy(
    ctx: ServiceContext,
    *,
    actor: Actor,
    document: str,
    source: str,
    bootstrap: bool = False,
    break_glass_reason: str | None = None,
) -> AppliedPolicy:
    """Validate `document` and make it the active policy, unless it already is.

    `bootstrap`: only the very first policy is applied; a different document when a policy is
    active is refused (409 `policy_governed`: propose it). `break_glass_reason`: the
    operator's recovery path, recorded in the audit entry as such."""
    policy = parse_policy(document, source=source)
    if break_glass_reason is not None:
        break_glass_reason = break_glass_reason.strip()
        if not break_glass_reason or len(break_glass_reason) > 2000:
            raise ValidationProblem("a break-glass apply needs a reason of 1 to 2000 characters")

    def action(session: Session) -> AppliedPolicy:
        lock_policy_changes(session)
        latest = session.scalars(
            select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)
        ).one_or_none()
        if latest is not None and latest.sha256 == policy.sha256:
            return AppliedPolicy(policy=policy, version_id=latest.id, changed=False)
        if bootstrap and latest is not None:
            raise Conflict(
                f"policy {latest.sha256[:12]} is active and changes are governed: propose "
                "the new policy (`ica policy propose FILE`) for two approvers to sign",
                code="policy_governed",
            )
        now = ctx.clock.now()
        row = PolicyVersion(
            sha256=policy.sha256, document=document, applied_at=now, applied_by=actor.id
        )
        session.add(row)
        session.flush()
        append_audit(
            session,
            actor=actor,
            action="policy.apply",
            subject_type="policy",
            subject_id=policy.sha256,
            tenant=None,
            data={
                "version_id": row.id,
                "previous_sha256": latest.sha256 if latest else None,
                "tenants": sorted(policy.tenants),
                "stages": [stage.name for stage in policy.stages],
                "break_glass": break_glass_reason is not None,
                "reason": break_glass_reason,
                # The whole document: `ica audit replay` rebuilds the policy versions from it.
                "document": document,
            },
            at=now,
        )
        return AppliedPolicy(policy=policy, version_id=row.id, changed=True)

    return ctx.run_action(action)
