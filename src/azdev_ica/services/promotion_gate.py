"""The gate's promotion and rollback facts (seed 002, seed 000 §6.1), read inside the gate's
own transaction by `services/gates.py`; `domain/gate_decision.py` decides with them.

- Promotion (only when the policy has a `promotion` section): the tenant's good deployments
  of this artifact or to its production stage, and the sign-offs given for the target and
  artifact (`ci` is the run's own passed `test` event, added by the domain).
- Rollback: the target's finished deployments, oldest first, and whether the policy lets a
  valid rollback to this stage go without a fresh approval.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from azdev_ica.domain import promotion as rules
from azdev_ica.domain.gate_decision import (
    ROLLBACK,
    ROLLBACK_NOT_LAST_GOOD,
    DeploymentFact,
    PromotionFacts,
    RollbackFacts,
)
from azdev_ica.policy import Policy
from azdev_ica.queries.deployments import (
    DeploymentRecord,
    deployment_history,
    promotion_history,
)

__all__ = ["ROLLBACK", "ROLLBACK_NOT_LAST_GOOD", "promotion_facts", "rollback_facts"]


def _fact(record: DeploymentRecord) -> DeploymentFact:
    return DeploymentFact(
        tenant=record.tenant,
        stage=record.stage,
        artifact_digest=record.artifact_digest,
        version=record.version,
        run_key=record.run_key,
        good=record.good,
    )


def rollback_facts(session: Session, policy: Policy, *, tenant: str, stage: str) -> RollbackFacts:
    history = deployment_history(session, tenant=tenant, stage=stage)
    allowed = policy.promotion is not None and policy.promotion.rollback_without_approval(stage)
    return RollbackFacts(history=tuple(_fact(d) for d in history), without_approval_allowed=allowed)


def promotion_facts(
    session: Session,
    policy: Policy,
    *,
    tenant: str,
    stage: str,
    digest: str | None,
    history: tuple[list[DeploymentRecord], list[str]] | None = None,
) -> PromotionFacts | None:
    """What the promotion rules read for `digest` to enter `stage` of `tenant` (None: the
    policy has no promotion rules). `history`: what `promotion_history` answers for them,
    read already with the gate's other facts (PostgreSQL)."""
    promotion = policy.promotion
    if promotion is None:
        return None
    # Where this artifact went in the tenant, and what runs in its production stage: all the
    # promotion rules read (not the tenant's whole history).
    narrowed, kinds = history or promotion_history(
        session,
        tenant=tenant,
        stage=stage,
        digest=digest or "",
        other_stage=promotion.major_release_stage,
    )
    return PromotionFacts(
        stages=tuple(promotion.stage_rules(policy.stages)),
        production_stage=promotion.major_release_stage,
        deployments=tuple(_fact(d) for d in narrowed if d.good),
        signoffs=tuple(rules.SignoffKind(kind) for kind in kinds),
    )
