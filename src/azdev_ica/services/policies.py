"""Applying a policy version."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import Actor
from azdev_ica.db.tables import PolicyVersion
from azdev_ica.policy import Policy, parse_policy
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext


@dataclass(frozen=True)
class AppliedPolicy:
    policy: Policy
    version_id: int
    changed: bool


def apply_policy(ctx: ServiceContext, *, actor: Actor, document: str, source: str) -> AppliedPolicy:
    """Validate `document` and make it the active policy, unless it already is."""
    policy = parse_policy(document, source=source)

    def action(session: Session) -> AppliedPolicy:
        latest = session.scalars(
            select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)
        ).one_or_none()
        if latest is not None and latest.sha256 == policy.sha256:
            return AppliedPolicy(policy=policy, version_id=latest.id, changed=False)
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
                # The whole document: `ica audit replay` rebuilds the policy versions from it.
                "document": document,
            },
            at=now,
        )
        return AppliedPolicy(policy=policy, version_id=row.id, changed=True)

    return ctx.run_action(action)
