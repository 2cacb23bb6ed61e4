"""Dual approval: the state machine and segregation of duties (seed 000 §1.4). Pure, no I/O.

A production deploy needs a technical and a business signature from two different people,
neither of them the requester, each holding the approver role for the tenant at the time
of signing. A pipeline identity never signs. Either approver may reject; the requester may
withdraw; a request not decided by `expires_at` expires (that is not the SLA, which only
warns and escalates).

    pending --tech approve--> technical_approved --biz approve--> approved
    pending --biz approve--> business_approved --tech approve--> approved   (policy allowing)
    pending | *_approved --reject--> rejected
    pending | *_approved --requester withdraws--> withdrawn
    pending | *_approved --time passes expires_at--> expired

Every refusal names a stable code, so the API can answer a clear 403 problem and the audit
entry can record why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    TECHNICAL_APPROVED = "technical_approved"
    BUSINESS_APPROVED = "business_approved"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        ApprovalStatus.APPROVED,
        ApprovalStatus.REJECTED,
        ApprovalStatus.WITHDRAWN,
        ApprovalStatus.EXPIRED,
    }
)


class Half(StrEnum):
    """Which half of the dual approval a signature is."""

    TECHNICAL = "technical"
    BUSINESS = "business"

    @property
    def role(self) -> str:
        """The role a signer must hold for the tenant to sign this half."""
        return "azdev_approver_tech" if self is Half.TECHNICAL else "azdev_approver_biz"

    @property
    def other(self) -> Half:
        return Half.BUSINESS if self is Half.TECHNICAL else Half.TECHNICAL


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class RefusalCode(StrEnum):
    """Why a signature or a withdrawal is refused (stable: used in problems and audit)."""

    DECIDED = "approval_decided"
    EXPIRED = "approval_expired"
    NOT_A_PERSON = "signer_not_a_person"
    REQUESTER_SIGNS = "requester_cannot_sign"
    SAME_PERSON_BOTH_HALVES = "same_person_both_halves"
    ROLE_NOT_HELD = "role_not_held"
    HALF_ALREADY_SIGNED = "half_already_signed"
    TECHNICAL_FIRST = "technical_half_first"
    NOT_THE_REQUESTER = "only_requester_withdraws"


class Refused(Exception):
    """A refused signature or withdrawal, with its stable code."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Signer:
    """Who is signing, as decided at signing time.

    `person_id` is ICA's id of the person (provider user ids are linked to people before
    this point, so "the same person" compares people, not strings); None for a pipeline or
    any other non-person identity. `roles` are the roles the signer holds *for the
    request's tenant* right now.
    """

    person_id: str | None
    roles: frozenset[str]


@dataclass(frozen=True)
class Signature:
    person_id: str
    half: Half
    decision: Decision
    at: datetime
    comment: str = ""


@dataclass(frozen=True)
class Approval:
    """The state of one approval request.

    `requesters` are the person ids of whoever requested the change (the run's requester,
    and the person who created the request when that is someone else): none of them signs.
    """

    requesters: frozenset[str]
    expires_at: datetime
    business_first: bool = False
    status: ApprovalStatus = ApprovalStatus.PENDING
    signatures: tuple[Signature, ...] = ()

    def status_at(self, now: datetime) -> ApprovalStatus:
        """The status as seen at `now`: an undecided request past its expiry has expired."""
        if not self.status.final and now >= self.expires_at:
            return ApprovalStatus.EXPIRED
        return self.status

    def signed(self, half: Half) -> Signature | None:
        return next((s for s in self.signatures if s.half is half), None)


def sign(
    approval: Approval,
    signer: Signer,
    half: Half,
    decision: Decision,
    now: datetime,
    comment: str = "",
) -> Approval:
    """The approval after `signer` signs `half` with `decision`; raises Refused when not allowed.

    Checks run from the request's state to the signer's identity to their rights, so the
    first refusal is the most useful one to show.
    """
    status = approval.status_at(now)
    if status is ApprovalStatus.EXPIRED:
        raise Refused(RefusalCode.EXPIRED, f"the request expired at {approval.expires_at}")
    if status.final:
        raise Refused(RefusalCode.DECIDED, f"the request is already {status.value}")
    person = signer.person_id
    if person is None:
        raise Refused(RefusalCode.NOT_A_PERSON, "approvals are signed by people, not pipelines")
    if person in approval.requesters:
        raise Refused(RefusalCode.REQUESTER_SIGNS, "the requester of a change never approves it")
    if approval.signed(half) is not None:
        raise Refused(RefusalCode.HALF_ALREADY_SIGNED, f"the {half.value} half is already signed")
    other = approval.signed(half.other)
    if other is not None and other.person_id == person:
        raise Refused(
            RefusalCode.SAME_PERSON_BOTH_HALVES,
            "one person never signs both halves of a dual approval",
        )
    if half.role not in signer.roles:
        raise Refused(
            RefusalCode.ROLE_NOT_HELD,
            f"signing the {half.value} half needs the {half.role} role for this tenant",
        )
    if (
        half is Half.BUSINESS
        and decision is Decision.APPROVE
        and other is None
        and not approval.business_first
    ):
        raise Refused(
            RefusalCode.TECHNICAL_FIRST, "the technical half is signed before the business half"
        )
    signature = Signature(person_id=person, half=half, decision=decision, at=now, comment=comment)
    signatures = (*approval.signatures, signature)
    if decision is Decision.REJECT:
        new_status = ApprovalStatus.REJECTED
    elif other is not None:
        new_status = ApprovalStatus.APPROVED
    elif half is Half.TECHNICAL:
        new_status = ApprovalStatus.TECHNICAL_APPROVED
    else:
        new_status = ApprovalStatus.BUSINESS_APPROVED
    return replace(approval, status=new_status, signatures=signatures)


def withdraw(approval: Approval, person_id: str | None, now: datetime) -> Approval:
    """The approval withdrawn by its requester; raises Refused otherwise."""
    status = approval.status_at(now)
    if status is ApprovalStatus.EXPIRED:
        raise Refused(RefusalCode.EXPIRED, f"the request expired at {approval.expires_at}")
    if status.final:
        raise Refused(RefusalCode.DECIDED, f"the request is already {status.value}")
    if person_id is None or person_id not in approval.requesters:
        raise Refused(RefusalCode.NOT_THE_REQUESTER, "only the requester withdraws a request")
    return replace(approval, status=ApprovalStatus.WITHDRAWN)


def expire(approval: Approval, now: datetime) -> Approval:
    """The approval with its expiry applied (unchanged when it has not expired)."""
    if approval.status_at(now) is ApprovalStatus.EXPIRED and approval.status is not (
        ApprovalStatus.EXPIRED
    ):
        return replace(approval, status=ApprovalStatus.EXPIRED)
    return approval
