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
class Grant:
    """One role, for one tenant or for every tenant (`tenant` None), and for some stages or
    for every stage (`stages` None), e.g. a development pipeline's identity reaches
    `development` and `test` only."""

    role: Role
    tenant: str | None = None
    stages: frozenset[str] | None = None

    def covers(self, tenant: str | None) -> bool:
        return self.tenant is None or self.tenant == tenant

    def covers_stage(self, stage: str | None) -> bool:
        """A stage-scoped grant reaches only its stages; a target with no stage named only
        an every-stage grant reaches."""
        return self.stages is None or (stage is not None and stage in self.stages)

    def reaches(self, tenant: str | None, stage: str | None) -> bool:
        return self.covers(tenant) and self.covers_stage(stage)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the grants it holds.

    An API key or a pipeline token carries one role scoped to some tenants or to all; a
    person carries the grants held at the time of the request (several roles, each scoped
    on its own, e.g. technical approver for Tonga and auditor everywhere).
    """

    kind: str
    id: str
    name: str
    grants: tuple[Grant, ...]
    # Verified, non-secret claims of a signed token (e.g. GitHub `actor_id`, `run_id`,
    # `repository_id`; Entra `tid`, `oid`), as sorted (name, value) pairs. Empty for API keys.
    claims: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    # The person behind a PERSON principal (azdev_person.id); None for keys and pipelines.
    person_id: int | None = None

    @classmethod
    def with_role(
        cls,
        *,
        kind: str,
        id: str,
        name: str,
        role: Role,
        tenants: frozenset[str] | None,
        claims: tuple[tuple[str, str], ...] = (),
        stages: frozenset[str] | None = None,
    ) -> Principal:
        """A key or pipeline principal: one role for `tenants` (None: every tenant) and
        `stages` (None: every stage)."""
        if tenants is None:
            grants: tuple[Grant, ...] = (Grant(role, None, stages),)
        else:
            grants = tuple(Grant(role, tenant, stages) for tenant in sorted(tenants))
        return cls(kind=kind, id=id, name=name, grants=grants, claims=claims)

    @property
    def is_person(self) -> bool:
        """True only for a signed-in person: a pipeline or an API key can never act as one."""
        return self.kind == PERSON and self.person_id is not None

    def claim(self, name: str) -> str | None:
        """A verified token claim kept on the principal, or None."""
        for key, value in self.claims:
            if key == name:
                return value
        return None

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(grant.role for grant in self.grants)

    @property
    def role(self) -> Role | None:
        """The caller's role when it has exactly one (keys, pipelines); None otherwise."""
        roles = self.roles
        return next(iter(roles)) if len(roles) == 1 else None

    @property
    def tenants(self) -> frozenset[str] | None:
        """Every tenant some grant reaches (None: all tenants)."""
        if any(grant.tenant is None for grant in self.grants):
            return None
        return frozenset(grant.tenant for grant in self.grants if grant.tenant is not None)

    @property
    def actor(self) -> Actor:
        role = self.role
        return Actor(kind=self.kind, id=self.id, role=role.value if role else None)

    def can(self, permission: Permission) -> bool:
        """Whether some grant gives `permission`, for at least one tenant. A signed-in person
        always has `self` (their own page and tokens), even before holding any role."""
        if permission is Permission.SELF and self.is_person:
            return True
        return any(permission in permissions_of(grant.role) for grant in self.grants)

    def can_for(self, permission: Permission, tenant: str | None) -> bool:
        """Whether some grant gives `permission` for `tenant` (None: a run with no tenant,
        which only an all-tenants grant reaches), whatever its stage scope: reads, and the
        tenant half of a write; a write naming a stage checks `can_at` too."""
        return any(
            permission in permissions_of(grant.role) and grant.covers(tenant)
            for grant in self.grants
        )

    def can_at(self, permission: Permission, tenant: str | None, stage: str | None) -> bool:
        """Whether some grant gives `permission` for the target `tenant` x `stage` (the check
        every write naming a stage and the gate make: tenant scope and stage scope together)."""
        return any(
            permission in permissions_of(grant.role) and grant.reaches(tenant, stage)
            for grant in self.grants
        )

    def can_on_run(self, permission: Permission, tenant: str | None, stage: str | None) -> bool:
        """Whether some grant gives `permission` on a run of `tenant` whose own stage is
        `stage`. A run with no stage of its own may deploy several stages (each deploy event
        names its target, checked with `can_at`), so any stage scope reaches it."""
        if stage is None:
            return self.can_for(permission, tenant)
        return self.can_at(permission, tenant, stage)

    def stage_scoped(self, permission: Permission) -> bool:
        """Whether every grant giving `permission` is limited to some stages."""
        reaching = [grant for grant in self.grants if permission in permissions_of(grant.role)]
        return bool(reaching) and all(grant.stages is not None for grant in reaching)

    def stage_reach(self, permission: Permission) -> frozenset[str]:
        """Every stage some stage-scoped grant giving `permission` names."""
        return frozenset(
            stage
            for grant in self.grants
            if permission in permissions_of(grant.role) and grant.stages is not None
            for stage in grant.stages
        )

    def scope(self, permission: Permission) -> frozenset[str] | None:
        """The tenants where the caller has `permission` (None: every tenant)."""
        reaching = [grant for grant in self.grants if permission in permissions_of(grant.role)]
        if any(grant.tenant is None for grant in reaching):
            return None
        return frozenset(grant.tenant for grant in reaching if grant.tenant is not None)

    def holds(self, role: Role, tenant: str | None, stage: str | None = None) -> bool:
        """Whether the caller holds `role` for `tenant` and `stage` (the signing-time role
        check). With no stage named, only a grant reaching every stage counts."""
        return any(grant.role is role and grant.reaches(tenant, stage) for grant in self.grants)

    def in_scope(self, tenant: str | None) -> bool:
        """Whether some grant reaches `tenant` at all (None: only an all-tenants grant)."""
        return any(grant.covers(tenant) for grant in self.grants)
