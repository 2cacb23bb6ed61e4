"""The authenticated caller of one request, and the actor recorded in the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field

from azdev_ica.auth.roles import Permission, Role, permissions_of


@dataclass(frozen=True)
class Actor:
    """Who did something, as the audit trail records it. Never carries a secret."""

    kind: str  # api_key | pipeline | operator | system
    id: str
    role: str | None = None

    def as_record(self) -> dict[str, str]:
        record = {"kind": self.kind, "id": self.id}
        if self.role:
            record["role"] = self.role
        return record


# Principal kinds. Only a person may ever sign an approval; API keys and pipelines never do.
API_KEY = "api_key"
PIPELINE = "pipeline"
PERSON = "person"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: one role, scoped to some tenants or to all (`tenants=None`)."""

    kind: str
    id: str
    name: str
    role: Role
    tenants: frozenset[str] | None
    # Verified, non-secret claims of a signed token (e.g. GitHub `actor_id`, `run_id`,
    # `repository_id`; Entra `tid`, `oid`), as sorted (name, value) pairs. Empty for API keys.
    claims: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def is_person(self) -> bool:
        """True only for a signed-in person: a pipeline or an API key can never act as one."""
        return self.kind == PERSON

    def claim(self, name: str) -> str | None:
        """A verified token claim kept on the principal, or None."""
        for key, value in self.claims:
            if key == name:
                return value
        return None

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
