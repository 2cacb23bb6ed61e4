"""Roles (seed 000 §2.1 and seed 002) and the permissions each grants.

Deny by default: a role holds exactly the permissions listed here, and every route
declares the one permission it needs.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    RUN_WRITE = "run:write"
    RUN_READ = "run:read"
    POLICY_READ = "policy:read"
    AUDIT_READ = "audit:read"
    # Approvals (issue 5): asking, reading, signing (the signing-time role check for the
    # tenant and the half is the approval service's; this only opens the route).
    APPROVAL_REQUEST = "approval:request"
    APPROVAL_READ = "approval:read"
    APPROVAL_SIGN = "approval:sign"
    APPROVAL_DELEGATE = "approval:delegate"
    GATE_EVALUATE = "gate:evaluate"
    LOCK_RELEASE = "lock:release"
    OVERRIDE_REQUEST = "override:request"
    OVERRIDE_SIGN = "override:sign"
    # People (issue 4): managing persons and their grants (tenant administrators: their
    # tenants only), and what any signed-in person may do for themselves (own tokens).
    USER_ADMIN = "user:admin"
    SELF = "self"
    # Incidents (seed 000 §6.2): opening and working them, and reading them.
    INCIDENT_WRITE = "incident:write"
    INCIDENT_READ = "incident:read"
    # Backups and disaster-recovery drills (seed 000 §9): recording them, reading them.
    DR_WRITE = "dr:write"
    DR_READ = "dr:read"
    # Governed policy changes (seed 000 §8.1): proposing a new policy version, and signing
    # one (two different approvers, never the proposer; both need an all-tenants grant).
    POLICY_PROPOSE = "policy:propose"
    POLICY_SIGN = "policy:sign"

    # Promotion (seed 002): signing a sign-off (the signing-time role check for the tenant
    # and the kind is the sign-off service's) and reading them; data refresh requests from
    # production into a lower stage: asking (and marking done), approving, reading.
    SIGNOFF_SIGN = "signoff:sign"
    SIGNOFF_READ = "signoff:read"
    REFRESH_REQUEST = "refresh:request"
    REFRESH_APPROVE = "refresh:approve"
    REFRESH_READ = "refresh:read"

    # Operating ICA (issue 18): Prometheus scraping `/metrics`, fleet-wide (an all-tenants
    # grant), so a monitoring key reads nothing else.
    METRICS_READ = "metrics:read"


class Role(StrEnum):
    DEVOPS = "azdev_devops"
    APPROVER_TECH = "azdev_approver_tech"
    APPROVER_BIZ = "azdev_approver_biz"
    AUDITOR = "azdev_auditor"
    ADMIN = "admin"
    OVERRIDE_SIGNER = "azdev_override_signer"
    ESCALATION = "azdev_escalation"
    SIGNOFF_QA = "azdev_signoff_qa"
    SIGNOFF_UAT = "azdev_signoff_uat"
    SIGNOFF_DATA = "azdev_signoff_data"
    APPROVER_MAJOR = "azdev_approver_major"
    TENANT_ADMIN = "tenant_admin"
    # A monitoring system's API key (Prometheus): `/metrics` and nothing else.
    MONITORING = "azdev_monitoring"


_READERS = frozenset(
    {
        Permission.RUN_READ,
        Permission.POLICY_READ,
        Permission.APPROVAL_READ,
        Permission.INCIDENT_READ,
        Permission.DR_READ,
        Permission.SIGNOFF_READ,
        Permission.REFRESH_READ,
        Permission.SELF,
    }
)
_SIGNERS = _READERS | {Permission.APPROVAL_SIGN, Permission.APPROVAL_DELEGATE}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # "Run pipelines, request approvals"
    Role.DEVOPS: _READERS
    | {
        Permission.RUN_WRITE,
        Permission.APPROVAL_REQUEST,
        Permission.GATE_EVALUATE,
        Permission.OVERRIDE_REQUEST,
        Permission.INCIDENT_WRITE,
        Permission.DR_WRITE,
        Permission.POLICY_PROPOSE,
        Permission.REFRESH_REQUEST,
    },
    Role.APPROVER_TECH: _SIGNERS | {Permission.POLICY_SIGN, Permission.REFRESH_APPROVE},
    Role.APPROVER_BIZ: _SIGNERS | {Permission.POLICY_SIGN, Permission.REFRESH_APPROVE},
    # "Read-only access to run ledger" and the audit trail.
    Role.AUDITOR: _READERS | {Permission.AUDIT_READ},
    # "Configure ICA, emergency overrides": everything except signing approvals, which only
    # approvers do (an administrator who must approve holds an approver grant too).
    Role.ADMIN: frozenset(Permission) - {Permission.APPROVAL_SIGN, Permission.APPROVAL_DELEGATE},
    Role.OVERRIDE_SIGNER: _READERS | {Permission.OVERRIDE_SIGN},
    Role.ESCALATION: _READERS,
    Role.SIGNOFF_QA: _SIGNERS | {Permission.SIGNOFF_SIGN},
    Role.SIGNOFF_UAT: _SIGNERS | {Permission.SIGNOFF_SIGN},
    Role.SIGNOFF_DATA: _SIGNERS | {Permission.SIGNOFF_SIGN},
    Role.APPROVER_MAJOR: _SIGNERS | {Permission.SIGNOFF_SIGN},
    Role.TENANT_ADMIN: _READERS
    | {
        Permission.AUDIT_READ,
        Permission.USER_ADMIN,
        Permission.LOCK_RELEASE,
        Permission.INCIDENT_WRITE,
        Permission.DR_WRITE,
        Permission.REFRESH_REQUEST,
        Permission.REFRESH_APPROVE,
    },
    # Its own identity (`self`, e.g. `GET /me` to check the key) and `/metrics`, no data.
    Role.MONITORING: frozenset({Permission.METRICS_READ, Permission.SELF}),
}


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]
