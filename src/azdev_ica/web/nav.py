"""The console's navigation entries for the list areas, each shown only to people whose
permissions open it (the same permission the area's routes declare)."""

from __future__ import annotations

from dataclasses import dataclass

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission


@dataclass(frozen=True)
class NavEntry:
    href: str
    label: str
    permission: Permission


AREAS = (
    NavEntry("/runs", "Runs", Permission.RUN_READ),
    NavEntry("/inventory", "Inventory", Permission.RUN_READ),
    NavEntry("/dashboards", "Dashboards", Permission.RUN_READ),
    NavEntry("/incidents", "Incidents", Permission.INCIDENT_READ),
    NavEntry("/overrides", "Overrides", Permission.APPROVAL_READ),
    NavEntry("/dr", "DR", Permission.DR_READ),
    NavEntry("/audit", "Audit", Permission.AUDIT_READ),
    NavEntry("/policy", "Policy", Permission.POLICY_READ),
    NavEntry("/reports", "Reports", Permission.AUDIT_READ),
)


@dataclass(frozen=True)
class NavLink:
    href: str
    label: str
    current: bool


def console_nav(principal: Principal | None, path: str) -> list[NavLink]:
    """The entries `principal` may open; `current` marks the area `path` is in."""
    if principal is None:
        return []
    return [
        NavLink(
            entry.href,
            entry.label,
            path == entry.href or path.startswith(entry.href + "/"),
        )
        for entry in AREAS
        if principal.can(entry.permission)
    ]
