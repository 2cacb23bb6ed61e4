"""The authenticated caller of one request, and the actor recorded in the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from azdev_ica.auth.roles import Permission, Role, permissions_of


@dataclass(frozen=True)
class Actor:
    """Who did something, as the audit trail records it. Never carries a secret."""

    kind: str  # api_key | operator | system
    id: str
    role: str | None = None

    def as_record(self) -> dict[str, str]:
        record = {"kind": self.kind, "id": self.id}
        if self.role:
            record["role"] = self.role
        return record


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: one role, scoped to some tenants or to all (`tenants=None`)."""

    kind: str
    id: str
    name: str
    role: Role
    tenants: frozenset[str] | None

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, role=self.role.value)

    def can(self, permission: Permission) -> bool:
        return permission in permissions_of(self.role)

    def in_scope(self, tenant: str | None) -> bool:
        """Whether the caller may see or act on `tenant` (None: a run without a tenant)."""
        if self.tenants is None:
            return True
        return tenant is not None and tenant in self.tenants
