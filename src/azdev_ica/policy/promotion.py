"""The policy's `promotion` section (seed 002): what a version needs to enter each stage, where
a major release needs the major-release approver, whether a rollback to the last good version
needs a fresh approval, and who approves a copy of production data into a lower stage.

A policy without the section has no promotion rules: the gate behaves as before (a run may
deploy to any stage), and a rollback is evaluated like any other deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azdev_ica.domain.promotion import SignoffKind, StageRule

DEFAULT_REFRESH_APPROVER = "azdev_approver_tech"


@dataclass(frozen=True)
class PromotionPolicy:
    requires: dict[str, frozenset[SignoffKind]]
    major_release_stage: str = "production"
    rollback_default: bool = False
    rollback_stages: tuple[tuple[str, bool], ...] = ()
    refresh_approver_role: str = DEFAULT_REFRESH_APPROVER

    def rollback_without_approval(self, stage: str) -> bool:
        """Whether a rollback to the last good version of `stage` needs no fresh approval."""
        return dict(self.rollback_stages).get(stage, self.rollback_default)

    def stage_rules(self, stages: Any) -> list[StageRule]:
        """The stages of the policy, in order, with what each requires (for the domain)."""
        return [
            StageRule(
                name=stage.name,
                promotion=stage.promotion,
                requires=self.requires.get(stage.name, frozenset()),
            )
            for stage in stages
        ]


def promotion_policy(content: dict[str, Any]) -> PromotionPolicy | None:
    """The `promotion` section of a validated policy document, or None when absent."""
    section = content.get("promotion")
    if section is None:
        return None
    rollback = section.get("rollback_without_approval", False)
    per_stage: tuple[tuple[str, bool], ...]
    if isinstance(rollback, bool):
        default, per_stage = rollback, ()
    else:
        default, per_stage = False, tuple(sorted((k, bool(v)) for k, v in rollback.items()))
    return PromotionPolicy(
        requires={
            stage: frozenset(SignoffKind(kind) for kind in kinds)
            for stage, kinds in section.get("requires", {}).items()
        },
        major_release_stage=section.get("major_release_stage", "production"),
        rollback_default=default,
        rollback_stages=per_stage,
        refresh_approver_role=section.get("refresh_approver_role", DEFAULT_REFRESH_APPROVER),
    )


def promotion_problems(content: dict[str, Any], locate: Any, source: str) -> list[str]:
    """Stages named in the section must exist; the first stage of the chain cannot require a
    sign-off of a stage before it (it has none). `locate(path)` gives the line of a path."""
    section = content.get("promotion")
    if not section:
        return []
    stages = {stage["name"] for stage in content["stages"]}
    problems: list[str] = []
    for stage in section.get("requires", {}):
        if stage not in stages:
            line = locate(["promotion", "requires", stage])
            problems.append(
                f"{source}:{line}: /promotion/requires/{stage}: unknown stage {stage!r}"
            )
    major = section.get("major_release_stage")
    if major is not None and major not in stages:
        line = locate(["promotion", "major_release_stage"])
        problems.append(f"{source}:{line}: /promotion/major_release_stage: unknown stage {major!r}")
    rollback = section.get("rollback_without_approval")
    if isinstance(rollback, dict):
        for stage in rollback:
            if stage not in stages:
                line = locate(["promotion", "rollback_without_approval", stage])
                problems.append(
                    f"{source}:{line}: /promotion/rollback_without_approval/{stage}: "
                    f"unknown stage {stage!r}"
                )
    return problems
