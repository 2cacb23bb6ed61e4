"""Domain errors. Each maps to one RFC 9457 problem type; the API layer renders them."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "urn:ica:problem:"


class IcaError(Exception):
    """Base of every error that reaches a user as a problem document."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class ValidationProblem(IcaError):
    status = 422
    slug = "validation"
    title = "The request is not valid"


class MalformedRequest(IcaError):
    status = 400
    slug = "malformed"
    title = "The request body could not be read"


class PayloadTooLarge(IcaError):
    status = 413
    slug = "payload-too-large"
    title = "The request body is too large"


class UnsupportedMediaType(IcaError):
    status = 415
    slug = "unsupported-media-type"
    title = "Send application/json"


class UnknownTenant(IcaError):
    status = 422
    slug = "unknown-tenant"
    title = "The tenant is not defined in the active policy"


class UnknownStage(IcaError):
    status = 422
    slug = "unknown-stage"
    title = "The stage is not defined in the active policy"


class NotFound(IcaError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(IcaError):
    status = 409
    slug = "conflict"
    title = "The request conflicts with the recorded state"


class RunFinished(Conflict):
    slug = "run-finished"
    title = "The run attempt has already finished"


class RunKeyTaken(Conflict):
    """The run key is recorded for a run outside the caller's scope. Since an absent key means
    "create", the answer cannot be a 404: it is this 409, with nothing of the existing run."""

    slug = "run-key-taken"
    title = "The run key is taken"


class IdempotencyKeyReused(IcaError):
    status = 422
    slug = "idempotency-key-reused"
    title = "The Idempotency-Key was already used for a different request"


class Unauthenticated(IcaError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(IcaError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class PersonRequired(Forbidden):
    """The caller holds the permission, but the action is a person's own (signing, personal
    tokens): an API key or a pipeline never acts as a person."""

    slug = "person-required"
    title = "Only a person may do this"


class SignInFailed(Unauthenticated):
    """One answer for every wrong sign-in (unknown login, wrong password, wrong or replayed
    one-time code, disabled person): nothing tells which part was wrong."""

    slug = "sign-in-failed"
    title = "Sign-in failed"


class SignInLocked(Unauthenticated):
    """Too many failed sign-ins for this login (known or not): wait, then try again."""

    slug = "sign-in-locked"
    title = "Too many failed sign-ins"


class TooManyRequests(IcaError):
    """Over a rate or concurrency limit: come back after `retry_after_seconds` (also sent as
    the Retry-After header)."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class ServiceUnavailable(IcaError):
    """The database cannot be reached just now (a restart, a failover): nothing is known to
    have changed unless the problem says so; repeat the request with the same
    Idempotency-Key after `retry_after_seconds` (also the Retry-After header)."""

    status = 503
    slug = "unavailable"
    title = "The service is briefly unavailable"


class CommitOutcomeUnknown(ServiceUnavailable):
    """The connection was lost during COMMIT: the change may or may not be recorded."""


class CsrfRefused(Forbidden):
    slug = "csrf"
    title = "The request did not come from this session's own pages"


class OutOfScope(Forbidden):
    slug = "tenant-out-of-scope"
    title = "The tenant is outside the caller's scope"


class TargetOutOfScope(Forbidden):
    """A deploy, verify, monitor or rollback event names a target (tenant x stage) outside the
    run's tenant or the caller's scope: refused, audited, nothing recorded."""

    slug = "target-out-of-scope"
    title = "The event's target is outside the run's tenant or the caller's scope"


class ApprovalRefused(Forbidden):
    """Segregation of duties or the request's state refuses a signature or a withdrawal; the
    `code` extension names the rule (see `domain/approvals.py` RefusalCode)."""

    slug = "approval-refused"
    title = "The approval rules refuse this"


class OverrideRefused(Forbidden):
    """The emergency override rules refuse this signature or review; the `code` extension
    names the rule (role_not_held, requester_cannot_sign, already_signed, override_closed,
    signer_cannot_review, not_signed)."""

    slug = "override-refused"
    title = "The emergency override rules refuse this"


class SignoffRefused(Forbidden):
    """The sign-off rules refuse this signature; the `code` extension names the rule
    (role_not_held, requester_cannot_sign)."""

    slug = "signoff-refused"
    title = "The sign-off rules refuse this"


class RefreshRefused(Forbidden):
    """The data refresh rules refuse this decision; the `code` extension names the rule
    (role_not_held, requester_cannot_approve)."""

    slug = "refresh-refused"
    title = "The data refresh rules refuse this"


class NotReady(IcaError):
    status = 503
    slug = "not-ready"
    title = "The service is not ready"


class PolicyError(IcaError):
    status = 422
    slug = "invalid-policy"
    title = "The policy file is not valid"


class NoPolicy(IcaError):
    status = 503
    slug = "no-policy"
    title = "No policy has been applied"


class LedgerUnavailable(IcaError):
    """The audit ledger cannot seal or sign: no signing key, a key that is not the current one,
    another process holding the sealer's lease, or a database that disagrees with the
    checkpoints it published."""

    status = 503
    slug = "ledger-unavailable"
    title = "The audit ledger cannot seal now"


class PolicyChangeRefused(Forbidden):
    """The governed policy change rules refuse this signature or withdrawal; the `code`
    extension names the rule (role_not_held, all_tenants_required, proposer_cannot_sign,
    already_signed, proposal_closed, not_the_proposer)."""

    slug = "policy-change-refused"
    title = "The policy change rules refuse this"


class StaleProposal(Conflict):
    """The proposal was based on a policy version that is no longer the active one: it can
    no longer be activated and must be proposed again on the active version."""

    slug = "policy-proposal-stale"
    title = "The policy proposal is based on a version that is no longer active"
