"""The gate's promotion and rollback facts (seed 002, seed 000 §6.1), read inside the gate's
own transaction by `services/gates.py`.

- Promotion (only when the policy has a `promotion` section): the digest must have passed the
  stage before in the same tenant (a good deployment there), with every sign-off the target
  stage requires, bound to tenant, stage and digest; `ci` is the run's own `test` event
  (passed). A major release over the tenant's production also needs the major-release
  approver. Reasons carry the domain's codes (`domain/promotion.py`).
- Rollback: a request flagged as a rollback must deploy the target's last good version (the
  newest good deployment before the newest one, with another artifact); otherwise it is
  denied (`rollback_not_last_good`). A valid rollback skips the promotion checks (that version
  already entered the stage) and, where the policy says so, needs no fresh approval.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.db.tables import Signoff
from azdev_ica.domain import promotion as rules
from azdev_ica.policy import Policy
from azdev_ica.queries.deployments import DeploymentRecord, deployment_history, last_good

ROLLBACK = "rollback"
ROLLBACK_NOT_LAST_GOOD = "rollback_not_last_good"


@dataclass(frozen=True)
class RollbackFacts:
    valid: bool
    last_good: DeploymentRecord | None
    without_approval: bool

    def as_record(self) -> dict[str, object]:
        good = self.last_good
        return {
            "valid": self.valid,
            "without_approval": self.without_approval,
            "last_good_digest": good.artifact_digest if good else None,
            "last_good_version": good.version if good else None,
            "last_good_run_key": good.run_key if good else None,
        }


def rollback_facts(
    session: Session, policy: Policy, *, tenant: str, stage: str, digest: str | None
) -> RollbackFacts:
    history = deployment_history(session, tenant=tenant, stage=stage)
    good = last_good(history, tenant=tenant, stage=stage)
    valid = good is not None and digest is not None and good.artifact_digest == digest
    allowed = policy.promotion is not None and policy.promotion.rollback_without_approval(stage)
    return RollbackFacts(valid=valid, last_good=good, without_approval=valid and allowed)


def rollback_refusal(facts: RollbackFacts, digest: str | None) -> str:
    good = facts.last_good
    if good is None:
        return "this target has no earlier good version to roll back to"
    return (
        f"a rollback deploys the target's last good version ({good.artifact_digest}"
        + (f", {good.version}" if good.version else "")
        + f", run {good.run_key}), not {digest or 'an unknown artifact'}"
    )


def promotion_missing(
    session: Session,
    policy: Policy,
    *,
    tenant: str,
    stage: str,
    digest: str | None,
    version: str | None,
    tests_passed: bool,
) -> list[rules.Missing]:
    """What the promotion rules still miss for `digest` to enter `stage` of `tenant`."""
    promotion = policy.promotion
    if promotion is None:
        return []
    # Where this artifact went in the tenant, and what runs in its production stage: all the
    # promotion rules read (not the tenant's whole history).
    narrowed = deployment_history(
        session,
        tenant=tenant,
        digest_or_stage=(digest or "", promotion.major_release_stage),
    )
    history = [d for d in narrowed if d.good]
    deployments = [
        rules.Deployment(d.tenant, d.stage, d.artifact_digest or "", d.version) for d in history
    ]
    if version is None:
        # The version this artifact was deployed with before in the tenant, if it said.
        version = next(
            (d.version for d in reversed(history) if d.artifact_digest == digest and d.version),
            None,
        )
    signoffs = [
        rules.Signoff(row.tenant, row.stage, row.artifact_digest, rules.SignoffKind(row.kind))
        for row in session.scalars(
            select(Signoff).where(
                Signoff.tenant == tenant,
                Signoff.stage == stage,
                Signoff.artifact_digest == (digest or ""),
            )
        )
    ]
    if tests_passed:
        signoffs.append(rules.Signoff(tenant, stage, digest or "", rules.SignoffKind.CI))
    check = rules.check_promotion(
        stages=promotion.stage_rules(policy.stages),
        tenant=tenant,
        stage=stage,
        digest=digest or "",
        version=version,
        deployments=deployments,
        signoffs=signoffs,
        production_stage=promotion.major_release_stage,
    )
    return list(check.missing)
