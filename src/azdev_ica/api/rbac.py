"""The access matrix, generated from the code: every route with the permission it declares,
and which roles hold it. Published as `docs/access-matrix.md` (diff-tested, like the OpenAPI
file), so the documentation can never drift from what the server enforces."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from azdev_ica.api.deps import PUBLIC, declared_permission
from azdev_ica.auth.roles import Permission, Role, permissions_of

PREFIX = "/api/v1/azdev"

# What a tenant-scoped grant means for each permission (the third axis of the matrix).
TENANT_SCOPE = {
    Permission.RUN_WRITE: "runs of the grant's tenants only",
    Permission.RUN_READ: "runs of the grant's tenants only; others answer 404",
    Permission.POLICY_READ: "the whole policy",
    Permission.AUDIT_READ: "entries of the grant's tenants only; others answer 404",
    Permission.APPROVAL_REQUEST: "runs and targets of the grant's tenants only",
    Permission.APPROVAL_READ: "approvals of the grant's tenants only; others answer 404",
    Permission.APPROVAL_SIGN: "the grant's tenants, and only the half its role signs",
    Permission.APPROVAL_DELEGATE: "the delegator's own grants, for their tenants",
    Permission.GATE_EVALUATE: "targets of the grant's tenants only",
    Permission.LOCK_RELEASE: "locks of the grant's tenants only",
    Permission.OVERRIDE_REQUEST: "targets of the grant's tenants only",
    Permission.OVERRIDE_SIGN: "targets of the grant's tenants only",
    Permission.USER_ADMIN: (
        "tenant roles for the grant's tenants only; links and disabling need every tenant"
    ),
    Permission.SELF: "the caller's own identity and tokens",
    Permission.INCIDENT_WRITE: "incidents of the grant's tenants only",
    Permission.INCIDENT_READ: "incidents of the grant's tenants only; others answer 404",
    Permission.DR_WRITE: "backups and drills of the grant's tenants only",
    Permission.DR_READ: "backups and drills of the grant's tenants only",
    Permission.SIGNOFF_SIGN: "the grant's tenants, and only the kind its role signs",
    Permission.SIGNOFF_READ: "sign-offs of the grant's tenants only",
    Permission.REFRESH_REQUEST: "data refresh requests of the grant's tenants only",
    Permission.REFRESH_APPROVE: (
        "the grant's tenants, with the policy's refresh approver role; others answer 404"
    ),
    Permission.REFRESH_READ: "data refresh requests of the grant's tenants only",
    Permission.POLICY_PROPOSE: "nothing: a policy governs every tenant (all-tenants grant)",
    Permission.POLICY_SIGN: "nothing: a policy governs every tenant (all-tenants grant)",
    Permission.METRICS_READ: "nothing: metrics cover every tenant (all-tenants grant)",
}

# What a stage-scoped grant (API key, pipeline identity, person's grant) limits, per
# permission. Reads are scoped by tenant only; every write naming a target and the gate
# check the stage too.
STAGE_SCOPE = {
    Permission.RUN_WRITE: (
        "runs of its stages (a run with no stage of its own too); deploy events to its stages"
    ),
    Permission.GATE_EVALUATE: "targets of its stages only",
    Permission.APPROVAL_REQUEST: "runs and targets of its stages only",
    Permission.APPROVAL_SIGN: "approvals for its stages only",
    Permission.APPROVAL_DELEGATE: "the delegator's own stages",
    Permission.LOCK_RELEASE: "locks of its stages only",
    Permission.OVERRIDE_REQUEST: "runs and targets of its stages only",
    Permission.OVERRIDE_SIGN: "overrides for its stages only",
    Permission.USER_ADMIN: "grants limited to its own stages",
    Permission.DR_WRITE: "backups and drills of its stages only",
    Permission.INCIDENT_WRITE: "incidents of its stages (and incidents naming no stage)",
    Permission.SIGNOFF_SIGN: "sign-offs for its stages only",
    Permission.REFRESH_REQUEST: "refreshes into its stages only",
    Permission.REFRESH_APPROVE: "refreshes into its stages only",
}

_ABBREVIATIONS = {
    Role.DEVOPS: "devops",
    Role.APPROVER_TECH: "tech",
    Role.APPROVER_BIZ: "biz",
    Role.AUDITOR: "auditor",
    Role.ADMIN: "admin",
    Role.OVERRIDE_SIGNER: "override",
    Role.ESCALATION: "escal.",
    Role.SIGNOFF_QA: "qa",
    Role.SIGNOFF_UAT: "uat",
    Role.SIGNOFF_DATA: "data",
    Role.APPROVER_MAJOR: "major",
    Role.TENANT_ADMIN: "t-admin",
    Role.MONITORING: "monitor",
}


def _routes(app: Any) -> list[tuple[str, str, str]]:
    rows = set()
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        path = str(route.path)
        if path.startswith("/api/azdev/"):
            continue  # the seed's alias prefix: the same routes, listed once
        declared = declared_permission(route.dependant) or "NONE"
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            rows.add((path.removeprefix(PREFIX) or "/", method, declared))
    return sorted(rows)


def access_matrix_markdown(app: Any) -> str:
    roles = list(Role)
    lines = [
        "# Access matrix",
        "",
        "Generated from the code by `ica rbac --out docs/access-matrix.md`; a test fails when",
        "it is stale. Deny by default: a route answers 403 unless the caller holds a grant",
        "whose role has the route's permission, and a tenant-scoped grant reaches only its",
        "tenants. Routes live under `/api/v1/azdev` (and the unversioned `/api/azdev` alias).",
        "",
        "## Roles",
        "",
        "| Column | Role |",
        "|---|---|",
        *[f"| {_ABBREVIATIONS[role]} | `{role.value}` |" for role in roles],
        "",
        "## Routes × roles",
        "",
        "| Method | Route | Permission | " + " | ".join(_ABBREVIATIONS[r] for r in roles) + " |",
        "|---|---|---|" + "---|" * len(roles),
    ]
    for path, method, declared in _routes(app):
        if declared == PUBLIC:
            cells = ["any"] * len(roles)
        else:
            cells = [
                "✓" if declared in {p.value for p in permissions_of(role)} else "–"
                for role in roles
            ]
        lines.append(f"| {method} | `{path}` | `{declared}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Permissions × tenant scope",
        "",
        "| Permission | Held by | A grant for some tenants reaches |",
        "|---|---|---|",
    ]
    for permission in Permission:
        holders = ", ".join(
            f"`{role.value}`" for role in roles if permission in permissions_of(role)
        )
        lines.append(f"| `{permission.value}` | {holders} | {TENANT_SCOPE[permission]} |")
    lines += [
        "",
        "## Permissions × stage scope",
        "",
        "A grant, an API key (`ica apikey create --stage`) or a pipeline identity",
        "(`ICA_OIDC_TRUST` `stages`) may also be limited to some stages (`ica user grant",
        "--stage`), e.g. a development pipeline's identity reaching `development` and `test`",
        "only. Reads stay scoped by tenant; each write and the gate also check the stage of the",
        "target they touch (out of reach answers like absent for a stored run):",
        "",
        "| Permission | A grant for some stages reaches |",
        "|---|---|",
        *[
            f"| `{permission.value}` | {STAGE_SCOPE[permission]} |"
            for permission in Permission
            if permission in STAGE_SCOPE
        ],
        "",
        "Beyond the matrix, the services refuse what a role alone cannot decide: a pipeline or",
        "an API key never acts as a person (`person-required`); the requester of a change never",
        "signs it, and one person never signs both halves of a dual approval; nobody grants",
        "roles to themselves; a GitHub Actions token reaches only its own repository's runs.",
        "A deploy event's target is the run's tenant (whatever the caller's scope) and a stage",
        "in the caller's scope (`target-out-of-scope`, audited); a run key recorded for",
        "another tenant answers `run-key-taken` (409, audited) with nothing of that run.",
        "Routes whose permission is `signed` take no caller credentials and no role reaches",
        "them: the provider signs the body (GitHub's webhook, HMAC-SHA256 with the webhook",
        "secret; docs/github.md).",
        "",
    ]
    return "\n".join(lines)


def access_matrix() -> str:
    from azdev_ica.api.app import create_app
    from azdev_ica.db.engine import Database
    from azdev_ica.settings import Settings

    app = create_app(
        Settings(secret_key="rbac-generation-only-" + "x" * 20),
        database=Database.from_url("sqlite://"),
    )
    return access_matrix_markdown(app)
