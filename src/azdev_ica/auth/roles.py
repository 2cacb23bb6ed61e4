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


_READERS = frozenset({Permission.RUN_READ, Permission.POLICY_READ})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # "Run pipelines, request approvals"
    Role.DEVOPS: _READERS | {Permission.RUN_WRITE},
    Role.APPROVER_TECH: _READERS,
    Role.APPROVER_BIZ: _READERS,
    # "Read-only access to run ledger" and the audit trail.
    Role.AUDITOR: _READERS | {Permission.AUDIT_READ},
    Role.ADMIN: frozenset(Permission),
    Role.OVERRIDE_SIGNER: _READERS,
    Role.ESCALATION: _READERS,
    Role.SIGNOFF_QA: _READERS,
    Role.SIGNOFF_UAT: _READERS,
    Role.SIGNOFF_DATA: _READERS,
    Role.APPROVER_MAJOR: _READERS,
    Role.TENANT_ADMIN: _READERS | {Permission.AUDIT_READ},
}


def permissions_of(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]
