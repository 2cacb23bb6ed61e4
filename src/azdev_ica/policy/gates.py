"""The policy's gate sections: `gates` (quality rules, dependency allow list), `windows`
(maintenance windows and freezes per target), `locks` (lease and queue) and `overrides`
(emergency overrides: signatures, review, quarterly target)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from azdev_ica.domain.windows import Freeze, Schedule, WeeklyWindow, WindowError, parse_window


@dataclass(frozen=True)
class WindowRule:
    """Windows and freezes of a stage, for one tenant or all (`tenant` None)."""

    stage: str
    tenant: str | None
    windows: tuple[str, ...] = ()
    freezes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class GatePolicy:
    min_coverage_percent: float = 80.0
    # A deploy needs a recorded successful build of its artifact digest (issue 17).
    require_build: bool = True
    require_tests: bool = True
    require_scan: bool = True
    # Stages that need an approved dual approval; None: the stages marked `production`.
    approval_stages: frozenset[str] | None = None
    # Package identifiers allowed (without version); None: no dependency check.
    dependency_allow_list: frozenset[str] | None = None
    windows: tuple[WindowRule, ...] = ()
    lock_lease: timedelta = timedelta(minutes=60)
    queue_stale: timedelta = timedelta(minutes=30)
    override_signatures: int = 1
    override_review: timedelta = timedelta(hours=72)
    overrides_per_quarter: int = 2

    def schedule(self, *, tenant: str, stage: str, timezone: str) -> Schedule:
        """The windows and freezes that apply to a target (a tenant's own rules and the
        rules for all tenants both apply)."""
        windows: list[WeeklyWindow] = []
        freezes: list[Freeze] = []
        for rule in self.windows:
            if rule.stage != stage or rule.tenant not in (None, tenant):
                continue
            windows.extend(parse_window(text) for text in rule.windows)
            freezes.extend(_freeze(item) for item in rule.freezes)
        return Schedule(ZoneInfo(timezone), tuple(windows), tuple(freezes))


def _freeze(item: dict[str, Any]) -> Freeze:
    start = item.get("start")
    return Freeze(
        reason=str(item.get("reason", "freeze")),
        duration=timedelta(hours=float(item["hours"])),
        start=datetime.fromisoformat(start) if start is not None else None,
        rule=item.get("rule"),
    )


def gate_policy(content: dict[str, Any]) -> GatePolicy:
    """The gate sections of a validated policy document."""
    defaults = GatePolicy()
    gates = content.get("gates", {})
    locks = content.get("locks", {})
    overrides = content.get("overrides", {})
    approval_stages = gates.get("approval_stages")
    allow_list = gates.get("dependency_allow_list")
    return GatePolicy(
        min_coverage_percent=float(
            gates.get("min_coverage_percent", defaults.min_coverage_percent)
        ),
        require_build=bool(gates.get("require_build", True)),
        require_tests=bool(gates.get("require_tests", True)),
        require_scan=bool(gates.get("require_scan", True)),
        approval_stages=None if approval_stages is None else frozenset(approval_stages),
        dependency_allow_list=None
        if allow_list is None
        else frozenset(normalise_dependency(item) for item in allow_list),
        windows=tuple(
            WindowRule(
                stage=item["stage"],
                tenant=item.get("tenant"),
                windows=tuple(item.get("open", ())),
                freezes=tuple(item.get("freezes", ())),
            )
            for item in content.get("windows", [])
        ),
        lock_lease=timedelta(minutes=float(locks.get("lease_minutes", 60))),
        queue_stale=timedelta(minutes=float(locks.get("queue_stale_minutes", 30))),
        override_signatures=int(overrides.get("signatures", 1)),
        override_review=timedelta(hours=float(overrides.get("review_hours", 72))),
        overrides_per_quarter=int(overrides.get("max_per_quarter", 2)),
    )


def normalise_dependency(text: str) -> str:
    """A dependency's identity without its version: `pkg:pypi/Requests@2.31.0?x=y` and
    `pkg:pypi/requests` are the same package. Lower-cased; qualifiers and subpath dropped."""
    name = text.strip().split("#", 1)[0].split("?", 1)[0]
    # A purl's version follows the last `@` of the name part (`pkg:npm/%40scope/name@1.0`).
    head, at, tail = name.rpartition("@")
    if at and head and "/" not in tail:
        name = head
    return name.lower()


def gate_problems(content: dict[str, Any], locate: Any, source: str) -> list[str]:
    """Cross-field rules of the gate sections: stages and tenants that exist, windows and
    freezes that parse. `locate(path)` gives the line of a path."""
    problems: list[str] = []
    stages = {stage["name"] for stage in content["stages"]}
    tenants = {tenant["code"] for tenant in content["tenants"]}
    for index, name in enumerate(content.get("gates", {}).get("approval_stages", [])):
        if name not in stages:
            path = ["gates", "approval_stages", index]
            problems.append(
                f"{source}:{locate(path)}: /gates/approval_stages/{index}: unknown stage {name!r}"
            )
    for index, rule in enumerate(content.get("windows", [])):
        where = f"/windows/{index}"
        if rule["stage"] not in stages:
            line = locate(["windows", index, "stage"])
            problems.append(f"{source}:{line}: {where}/stage: unknown stage {rule['stage']!r}")
        if rule.get("tenant") is not None and rule["tenant"] not in tenants:
            line = locate(["windows", index, "tenant"])
            problems.append(f"{source}:{line}: {where}/tenant: unknown tenant {rule['tenant']!r}")
        for number, text in enumerate(rule.get("open", [])):
            try:
                parse_window(text)
            except WindowError as exc:
                line = locate(["windows", index, "open", number])
                problems.append(f"{source}:{line}: {where}/open/{number}: {exc}")
        for number, item in enumerate(rule.get("freezes", [])):
            try:
                _freeze(item)
            except (WindowError, ValueError) as exc:
                line = locate(["windows", index, "freezes", number])
                problems.append(f"{source}:{line}: {where}/freezes/{number}: {exc}")
    return problems
