"""Promotion through stages (seed 002): what a version needs to enter a stage. Pure, no I/O.

A version (identified by its artifact digest) may enter a stage of a tenant only after it
passed the previous promotable stage *of the same tenant* with the same digest, and with
every sign-off the transition requires, each bound to that tenant, target stage and digest.
A major release (a semantic-version major bump over what runs in the tenant's production)
also needs the major-release approver. Stages with `promotion: false` (DR) are not steps
of the chain: they mirror production and are entered from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

SEMVER_RE = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+].*)?$")


class SignoffKind(StrEnum):
    """Sign-offs of seed 002, each given by the role of the same name."""

    CI = "ci"  # a green CI run with unit tests: recorded from the run, not signed by a person
    QA = "qa"
    UAT = "uat"
    DATA_MIGRATION = "data"
    MAJOR_RELEASE = "major"

    @property
    def role(self) -> str | None:
        return {
            SignoffKind.QA: "azdev_signoff_qa",
            SignoffKind.UAT: "azdev_signoff_uat",
            SignoffKind.DATA_MIGRATION: "azdev_signoff_data",
            SignoffKind.MAJOR_RELEASE: "azdev_approver_major",
        }.get(self)


class PromotionCode(StrEnum):
    UNKNOWN_STAGE = "unknown_stage"
    PREVIOUS_STAGE_NOT_PASSED = "previous_stage_not_passed"
    SIGNOFF_MISSING = "signoff_missing"
    MAJOR_RELEASE_APPROVAL_MISSING = "major_release_approval_missing"


@dataclass(frozen=True)
class StageRule:
    name: str
    promotion: bool = True
    requires: frozenset[SignoffKind] = frozenset()


@dataclass(frozen=True)
class Deployment:
    """A deployment that succeeded (and was verified) in a tenant's stage."""

    tenant: str
    stage: str
    digest: str
    version: str | None = None


@dataclass(frozen=True)
class Signoff:
    tenant: str
    stage: str
    digest: str
    kind: SignoffKind


@dataclass(frozen=True)
class Missing:
    code: PromotionCode
    message: str


@dataclass(frozen=True)
class PromotionCheck:
    missing: tuple[Missing, ...]

    @property
    def allowed(self) -> bool:
        return not self.missing


def is_major_bump(new: str | None, current: str | None) -> bool:
    """True when `new`'s major version is above `current`'s (unknown versions: False)."""
    if new is None or current is None:
        return False
    new_match, current_match = SEMVER_RE.match(new), SEMVER_RE.match(current)
    if new_match is None or current_match is None:
        return False
    return int(new_match[1]) > int(current_match[1])


def check_promotion(
    *,
    stages: Sequence[StageRule],
    tenant: str,
    stage: str,
    digest: str,
    version: str | None,
    deployments: Iterable[Deployment],
    signoffs: Iterable[Signoff],
    production_stage: str = "production",
) -> PromotionCheck:
    """What is missing for `digest` (at `version`) to enter `stage` of `tenant`."""
    by_name = {rule.name: rule for rule in stages}
    rule = by_name.get(stage)
    if rule is None:
        return PromotionCheck((Missing(PromotionCode.UNKNOWN_STAGE, f"no stage {stage!r}"),))
    deployments = [d for d in deployments if d.tenant == tenant]
    signed = {s.kind for s in signoffs if (s.tenant, s.stage, s.digest) == (tenant, stage, digest)}
    missing: list[Missing] = []

    previous = _previous(stages, rule, production_stage)
    if previous is not None and not any(
        d.stage == previous and d.digest == digest for d in deployments
    ):
        missing.append(
            Missing(
                PromotionCode.PREVIOUS_STAGE_NOT_PASSED,
                f"{digest[:19]} has not passed {previous} in tenant {tenant}",
            )
        )
    for kind in sorted(rule.requires - signed):
        missing.append(
            Missing(
                PromotionCode.SIGNOFF_MISSING,
                f"the {kind.value} sign-off for {tenant}/{stage} of this artifact is missing",
            )
        )
    if stage == production_stage:
        running = [d for d in deployments if d.stage == production_stage]
        current = running[-1].version if running else None
        if is_major_bump(version, current) and SignoffKind.MAJOR_RELEASE not in signed:
            missing.append(
                Missing(
                    PromotionCode.MAJOR_RELEASE_APPROVAL_MISSING,
                    f"{version} is a major release over {current}: the major-release "
                    "approver must sign",
                )
            )
    return PromotionCheck(tuple(missing))


def _previous(stages: Sequence[StageRule], rule: StageRule, production_stage: str) -> str | None:
    """The stage a version must have passed before `rule`'s, or None for the first stage."""
    if not rule.promotion:
        return production_stage
    chain = [stage.name for stage in stages if stage.promotion]
    position = chain.index(rule.name)
    return chain[position - 1] if position > 0 else None
