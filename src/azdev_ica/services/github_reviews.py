"""GitHub custom deployment protection rule (pipelines.md §4.2): a GitHub App sends ICA the
`deployment_protection_rule` webhook when a job targets a protected environment; ICA opens (or
reuses) the dual approval of that run and target and, once it is decided, answers the run's
`deployment_callback_url` with `approved` or `rejected` (the sender is
`adapters/notify/github_review.py`, through the outbox).

Which run and target:

- the run key is `gh:<repository.id>:<run id>`, the run id read from the callback URL
  (`.../actions/runs/<run id>/deployment_protection_rule`); the workflow's own `ica run start`
  (in a job before the protected one) must have recorded the run;
- the GitHub environment name names the target: `<stage>` (the tenant is the run's) or
  `<tenant>-<stage>`, compared in lower case with the active policy's tenants and stages;
- the requester is whom GitHub says created the deployment (`deployment.creator.id`, a GitHub
  user id, linked to a person with provider `github`), as for a GitHub OIDC token of the run;
  else the run's `requested_for`. The approval rules (services/approvals.py) keep the requester
  from signing.

When ICA cannot open an approval (no such run, an environment naming no target, a tenant that
is not the run's, another open request in the way), the rule is answered `rejected` at once,
with the reason as the comment: GitHub holds the job until an answer comes, and a re-run asks
again. Every accepted delivery is one `github.review` audit entry and one `azdev_github_review`
row; a replayed delivery (the same `X-GitHub-Delivery`) is answered from that row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.auth.principal import PIPELINE, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import Approval, GithubReview, PipelineRun
from azdev_ica.domain.approvals import ApprovalStatus
from azdev_ica.errors import IcaError, NotFound, ValidationProblem
from azdev_ica.policy.model import Policy
from azdev_ica.services.audit import append_audit
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import enqueue

if TYPE_CHECKING:
    from azdev_ica.services.approvals import RequestApproval

GITHUB_REVIEW_CHANNEL = "github_review"
APPROVED = "approved"
REJECTED = "rejected"
MAX_COMMENT = 1000

_CALLBACK_PATH = re.compile(
    r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/runs/(?P<run_id>[0-9]{1,20})"
    r"/deployment_protection_rule$"
)
_DELIVERY = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class ProtectionRule:
    """What ICA keeps of one `deployment_protection_rule` delivery (action `requested`)."""

    delivery_id: str
    environment: str
    callback_url: str
    installation_id: int
    repository_id: str
    repository: str  # owner/name
    run_id: str
    creator_id: str | None  # deployment.creator.id
    sender_id: str | None

    @property
    def run_key(self) -> str:
        return f"gh:{self.repository_id}:{self.run_id}"


@dataclass(frozen=True)
class ReviewOutcome:
    review_id: int
    delivery_id: str
    run_key: str
    approval_id: int | None
    answer: str | None  # None while the approval is open
    duplicate: bool


def parse_protection_rule(delivery_id: str | None, payload: Any) -> ProtectionRule:
    """Read the fields ICA needs from a webhook body; a 422 problem names what is wrong."""
    if not delivery_id or not _DELIVERY.match(delivery_id):
        raise ValidationProblem(
            "X-GitHub-Delivery must be the delivery's id (1-64 of A-Z a-z 0-9 -)"
        )
    if not isinstance(payload, dict):
        raise ValidationProblem("the webhook body must be a JSON object")
    environment = payload.get("environment")
    if not isinstance(environment, str) or not 0 < len(environment) <= 255:
        raise ValidationProblem("`environment` must be the environment's name")
    url = payload.get("deployment_callback_url")
    if not isinstance(url, str) or len(url) > 2000:
        raise ValidationProblem("`deployment_callback_url` must be a URL")
    parts = urlsplit(url)
    match = _CALLBACK_PATH.search(parts.path)
    if parts.scheme not in ("https", "http") or not parts.netloc or match is None:
        raise ValidationProblem(
            "`deployment_callback_url` must name .../actions/runs/<id>/deployment_protection_rule"
        )
    installation = _id(payload, "installation")
    repository_id = _id(payload, "repository")
    repository = payload["repository"].get("full_name")
    if not isinstance(repository, str) or not 0 < len(repository) <= 200:
        raise ValidationProblem("`repository.full_name` must be owner/name")
    if f"{match['owner']}/{match['repo']}".lower() != repository.lower():
        raise ValidationProblem("`deployment_callback_url` names another repository")
    deployment = payload.get("deployment")
    creator = deployment.get("creator") if isinstance(deployment, dict) else None
    return ProtectionRule(
        delivery_id=delivery_id,
        environment=environment,
        callback_url=url,
        installation_id=installation,
        repository_id=str(repository_id),
        repository=repository,
        run_id=match["run_id"],
        creator_id=_user_id(creator),
        sender_id=_user_id(payload.get("sender")),
    )


def _id(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    number = value.get("id") if isinstance(value, dict) else None
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**63:
        raise ValidationProblem(f"`{name}.id` must be a positive integer")
    return number


def _user_id(user: Any) -> str | None:
    number = user.get("id") if isinstance(user, dict) else None
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        return None
    return str(number)


def target_of(environment: str, run_tenant: str | None, policy: Policy) -> tuple[str, str]:
    """The tenant and stage a GitHub environment names: `<stage>` (the run's tenant) or
    `<tenant>-<stage>`, in any case."""
    name = environment.strip().lower()
    if policy.stage(name) is not None:
        if run_tenant is None:
            raise ValidationProblem(
                f"the run names no tenant: name the GitHub environment <tenant>-{name}"
            )
        return run_tenant, name
    for at, char in enumerate(name):
        if char == "-" and name[:at] in policy.tenants and policy.stage(name[at + 1 :]):
            return name[:at], name[at + 1 :]
    raise ValidationProblem(
        f"GitHub environment {environment!r} names no ICA target: name it <stage> or "
        "<tenant>-<stage> after the policy's tenants and stages"
    )


def github_principal(rule: ProtectionRule) -> Principal:
    """GitHub, acting for the run through the signed webhook: it may ask for the approval of
    that run, and it vouches for who created the deployment (as a GitHub OIDC token does)."""
    claims = [("repository_id", rule.repository_id), ("run_id", rule.run_id)]
    if rule.creator_id:
        claims.append(("actor_id", rule.creator_id))
    return Principal.with_role(
        kind=PIPELINE,
        id=f"github-app:{rule.installation_id}",
        name=f"GitHub App installation {rule.installation_id}",
        role=Role.DEVOPS,
        tenants=None,
        claims=tuple(sorted(claims)),
    )


def receive_protection_rule(ctx: ServiceContext, rule: ProtectionRule) -> ReviewOutcome:
    """Open or reuse the approval the rule waits for and record the delivery; answer at once
    when the approval is already decided or cannot be opened (see the module's text)."""
    from azdev_ica.services.approvals import request_approval

    with ctx.read() as session:
        seen = _find(session, rule.delivery_id)
        if seen is not None:
            return _outcome(seen, duplicate=True)
    principal = github_principal(rule)
    try:
        command = _command(ctx, rule)
    except IcaError as exc:
        return _refuse(ctx, rule, principal, exc.detail)
    recorded: list[tuple[GithubReview, bool]] = []

    def then(session: Session, approval: Approval) -> None:
        recorded.append(_record(ctx, session, rule, principal, approval=approval, reason=None))

    try:
        request_approval(ctx, principal=principal, command=command, then=then)
    except IcaError as exc:
        return _refuse(ctx, rule, principal, exc.detail)
    review, created = recorded[-1]
    return _outcome(review, duplicate=not created)


def _command(ctx: ServiceContext, rule: ProtectionRule) -> RequestApproval:
    """The approval request the rule stands for; a problem says why there is none."""
    from azdev_ica.services.approvals import RequestApproval

    with ctx.read() as session:
        run = session.scalars(
            select(PipelineRun).where(PipelineRun.run_key == rule.run_key)
        ).one_or_none()
        if run is None:
            raise NotFound(
                f"ICA has no run {rule.run_key}: record it with `ica run start` in a job "
                "before the protected one, then re-run the job"
            )
        tenant, stage = target_of(rule.environment, run.tenant, ctx.policies.active(session))
        # An open request (asked by the pipeline itself, maybe with money) is reused as bound.
        standing = session.scalars(
            select(Approval).where(Approval.open_key == f"{run.id}:{tenant}:{stage}")
        ).one_or_none()
        if standing is None:
            return RequestApproval(run_key=rule.run_key, tenant=tenant, stage=stage)
        return RequestApproval(
            run_key=rule.run_key,
            tenant=tenant,
            stage=stage,
            artifact_digest=standing.artifact_digest,
            commit=standing.commit,
            cost_impact_minor=standing.cost_impact_minor,
            budget_minor=standing.budget_minor,
            currency=standing.currency,
        )


def _find(session: Session, delivery_id: str) -> GithubReview | None:
    return session.scalars(
        select(GithubReview).where(GithubReview.delivery_id == delivery_id)
    ).one_or_none()


def _outcome(review: GithubReview, *, duplicate: bool) -> ReviewOutcome:
    return ReviewOutcome(
        review_id=review.id,
        delivery_id=review.delivery_id,
        run_key=review.run_key,
        approval_id=review.approval_id,
        answer=review.answer,
        duplicate=duplicate,
    )


def _refuse(
    ctx: ServiceContext, rule: ProtectionRule, principal: Principal, reason: str
) -> ReviewOutcome:
    """Record the delivery and answer `rejected` at once, with `reason` as the comment."""

    def action(session: Session) -> tuple[GithubReview, bool]:
        return _record(ctx, session, rule, principal, approval=None, reason=reason)

    review, created = ctx.run_action(action)
    return _outcome(review, duplicate=not created)


def _record(
    ctx: ServiceContext,
    session: Session,
    rule: ProtectionRule,
    principal: Principal,
    *,
    approval: Approval | None,
    reason: str | None,
) -> tuple[GithubReview, bool]:
    """The delivery's row and audit entry (once per delivery id), and its answer when one is
    due now: the approval is decided already, or there is none (`reason`). False: the same
    delivery was recorded first by a concurrent request."""
    existing = _find(session, rule.delivery_id)
    if existing is not None:
        return existing, False
    now = ctx.clock.now()
    review = GithubReview(
        delivery_id=rule.delivery_id,
        received_at=now,
        run_key=rule.run_key,
        repository=rule.repository,
        environment=rule.environment,
        installation_id=rule.installation_id,
        callback_url=rule.callback_url,
        tenant=approval.tenant if approval is not None else None,
        stage=approval.stage if approval is not None else None,
        approval_id=approval.id if approval is not None else None,
    )
    session.add(review)
    session.flush()
    append_audit(
        session,
        actor=principal.actor,
        action="github.review",
        subject_type="github_review",
        subject_id=rule.delivery_id,
        tenant=review.tenant,
        data={
            "review": review.id,
            "run_key": rule.run_key,
            "repository": rule.repository,
            "environment": rule.environment,
            "installation_id": rule.installation_id,
            "callback_url": rule.callback_url,
            "approval_id": review.approval_id,
            "stage": review.stage,
            "refused": reason,
        },
        personal={
            "creator_id": ("provider_user", rule.creator_id),
            "sender_id": ("provider_user", rule.sender_id),
        },
        at=now,
    )
    if approval is None:
        _answer(session, review, REJECTED, f"ICA: {reason}", now)
    elif ApprovalStatus(approval.status).final:
        _answer(session, review, _state(approval), _comment(ctx, approval), now)
    return review, True


def answer_reviews(session: Session, approval: Approval, *, link: str, now: datetime) -> None:
    """Queue the answer of every review waiting for `approval`, which has just closed (the
    hook of services/approvals.py `_finish`), in the transaction that closed it."""
    waiting = session.scalars(
        select(GithubReview).where(
            GithubReview.approval_id == approval.id, GithubReview.answered_at.is_(None)
        )
    )
    for review in waiting:
        _answer(session, review, _state(approval), _comment_text(approval, link), now)


def _state(approval: Approval) -> str:
    return APPROVED if approval.status == ApprovalStatus.APPROVED.value else REJECTED


def _comment(ctx: ServiceContext, approval: Approval) -> str:
    from azdev_ica.services.approvals import approval_link

    return _comment_text(approval, approval_link(ctx, approval.id))


def _comment_text(approval: Approval, link: str) -> str:
    return f"ICA approval {approval.id}: {approval.status}. {link}"


def _answer(
    session: Session, review: GithubReview, state: str, comment: str, now: datetime
) -> None:
    review.answer = state
    review.answered_at = now
    enqueue(
        session,
        topic="github.review",
        channel=GITHUB_REVIEW_CHANNEL,
        subject_type="github_review",
        subject_id=review.delivery_id,
        tenant=review.tenant,
        payload={
            "review": review.id,
            "approval_id": review.approval_id,
            "url": review.callback_url,
            "installation_id": review.installation_id,
            "environment_name": review.environment,
            "state": state,
            "comment": comment[:MAX_COMMENT],
        },
        at=now,
    )
