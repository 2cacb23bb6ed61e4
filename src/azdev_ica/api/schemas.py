"""Request and response bodies. Strict: unknown fields refused, no coercion of booleans or
strings into numbers, sizes bounded."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from azdev_ica.domain.runs import FINISH_STATUSES, Phase, Provider


def _reject_bool_and_str(value: Any) -> Any:
    # Pydantic's lax mode takes `true` and "5" as integers; JSON Schema does not. Floats
    # with an integral value (5.0) are valid JSON Schema integers and stay accepted.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


def _reject_bool_and_str_number(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000 (SQLite can): refuse it at the door, on
    # both backends alike, rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _in_utc(value: datetime) -> datetime:
    # 9999-12-31T23:59:59-12:00 is valid RFC 3339 but past datetime's range in UTC.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


_RFC3339_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _rfc3339_text(value: Any) -> Any:
    # Lax mode would read a JSON number, or a query's "1700000000", as Unix seconds; a
    # date-time field takes RFC 3339 text only.
    if not isinstance(value, str) or not _RFC3339_START.match(value):
        raise ValueError("must be an RFC 3339 time (a string such as 2026-11-02T09:00:00Z)")
    return value


JsonInt = Annotated[int, BeforeValidator(_reject_bool_and_str)]
# JSON has no NaN or Infinity (Python's parser takes them anyway); refuse them.
JsonNumber = Annotated[
    float, BeforeValidator(_reject_bool_and_str_number), Field(allow_inf_nan=False)
]
# Free text; the patterned strings below exclude U+0000 by their pattern already.
Str = Annotated[StrictStr, AfterValidator(_no_nul)]
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_in_utc)]
Attempt = Annotated[JsonInt, Field(ge=1, le=1000)]
Count = Annotated[JsonInt, Field(ge=0, le=10_000_000)]
Name = Annotated[Str, Field(min_length=1, max_length=200)]
ShortText = Annotated[Str, Field(max_length=2000)]
Code = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")]
Digest = Annotated[StrictStr, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
CommitSha = Annotated[StrictStr, Field(pattern=r"^[0-9a-fA-F]{7,64}$")]
ProviderId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
BuildId = Annotated[StrictStr, Field(pattern=r"^[0-9]{1,20}$")]
RunKey = Annotated[StrictStr, Field(pattern=r"^(ado|gh):[A-Za-z0-9._-]{1,100}:[0-9]{1,20}$")]
EventId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
Url = Annotated[StrictStr, Field(pattern=r"^https?://", max_length=2000), AfterValidator(_no_nul)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- run/start -------------------------------------------------------------------------


class RunStartRequest(Strict):
    provider: Provider = Field(description="`ado` (Azure Pipelines) or `gh` (GitHub Actions)")
    project_id: ProviderId = Field(
        description="Azure DevOps project id (System.TeamProjectId) or GitHub repository id"
    )
    run_id: BuildId = Field(description="Build.BuildId or GITHUB_RUN_ID")
    attempt: Attempt = 1
    pipeline_name: Name
    project: Name | None = Field(default=None, description="Project or repository name")
    branch: Annotated[Str, Field(max_length=400)] | None = None
    commit: CommitSha | None = None
    tenant: Code | None = None
    stage: Code | None = None
    artifact_digest: Digest | None = None
    requested_for: Name | None = Field(
        default=None, description="Provider user id of who triggered the run"
    )
    requested_for_email: Annotated[Str, Field(max_length=320)] | None = None
    start_time: Instant | None = None
    commit_at: Instant | None = Field(
        default=None,
        description="The commit's time (RFC 3339 with offset, e.g. git's %cI); not in the "
        "future. Lead time for changes runs from it to the production deployment.",
    )


# --- run/event -------------------------------------------------------------------------


class BuildData(Strict):
    artifact_digest: Digest | None = None
    image: Annotated[Str, Field(max_length=400)] | None = None
    passed: StrictBool | None = None
    notes: ShortText | None = None


class TestData(Strict):
    passed: StrictBool
    coverage_percent: Annotated[JsonNumber, Field(ge=0, le=100)] | None = None
    total: Count | None = None
    failed: Count | None = None
    notes: ShortText | None = None


class Findings(Strict):
    critical: Count = 0
    high: Count = 0
    medium: Count = 0
    low: Count = 0


class ScanData(Strict):
    passed: StrictBool
    tool: Annotated[Str, Field(max_length=100)] | None = None
    findings: Findings = Field(default_factory=Findings)
    notes: ShortText | None = None


class ApprovalData(Strict):
    approval_id: Annotated[Str, Field(max_length=100)] | None = None
    status: Annotated[Str, Field(max_length=40)] | None = None
    notes: ShortText | None = None


class DeployData(Strict):
    tenant: Code | None = None
    stage: Code | None = None
    artifact_digest: Digest | None = None
    version: Annotated[Str, Field(max_length=100)] | None = None
    status: Literal["started", "succeeded", "failed"] = "started"
    notes: ShortText | None = None


class Check(Strict):
    name: Annotated[Str, Field(min_length=1, max_length=200)]
    passed: StrictBool


class VerifyData(Strict):
    passed: StrictBool
    checks: Annotated[list[Check], Field(max_length=100)] = Field(default_factory=list)
    notes: ShortText | None = None


class RollbackData(Strict):
    reason: ShortText | None = None
    to_version: Annotated[Str, Field(max_length=100)] | None = None
    to_artifact_digest: Digest | None = None
    passed: StrictBool | None = None
    notes: ShortText | None = None


class MonitorData(Strict):
    trigger: Literal["error_rate", "crash_loop", "control_plane_unreachable", "alert", "other"]
    value: JsonNumber | None = None
    threshold: JsonNumber | None = None
    notes: ShortText | None = None


PHASE_DATA: dict[Phase, type[Strict]] = {
    Phase.BUILD: BuildData,
    Phase.TEST: TestData,
    Phase.SCAN: ScanData,
    Phase.APPROVAL: ApprovalData,
    Phase.DEPLOY: DeployData,
    Phase.VERIFY: VerifyData,
    Phase.ROLLBACK_INITIATED: RollbackData,
    Phase.ROLLBACK_COMPLETED: RollbackData,
    Phase.MONITOR: MonitorData,
}


class RunEventRequest(Strict):
    """A phase event. The seed's shape `{"run_id": ..., "event": ...}` is accepted too, with
    `run_id` holding the run key."""

    run_key: RunKey | None = None
    run_id: RunKey | None = Field(default=None, description="Alias of run_key (original name)")
    phase: Phase | None = None
    event: Phase | None = Field(default=None, description="Alias of phase (original name)")
    attempt: Attempt = 1
    event_id: EventId | None = Field(
        default=None, description="Client-chosen id; a repeated id is answered, not duplicated"
    )
    occurred_at: Instant | None = None
    data: dict[str, Any] = Field(
        default_factory=dict, description="Phase payload; its shape depends on the phase"
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> RunEventRequest:
        if (self.run_key is None) == (self.run_id is None):
            raise ValueError("give exactly one of run_key and run_id")
        if (self.phase is None) == (self.event is None):
            raise ValueError("give exactly one of phase and event")
        model = PHASE_DATA[self.the_phase]
        self.data = model.model_validate(self.data).model_dump(exclude_none=True)
        return self

    @property
    def the_run_key(self) -> str:
        return self.run_key or self.run_id or ""

    @property
    def the_phase(self) -> Phase:
        found = self.phase or self.event
        assert found is not None
        return found


# --- run/finish ------------------------------------------------------------------------

FinishStatusName = Literal[
    "success",
    "failed",
    "cancelled",
    "Succeeded",
    "SucceededWithIssues",
    "Failed",
    "Canceled",
    "failure",
]
assert set(get_args(FinishStatusName)) == set(FINISH_STATUSES)


class RunFinishRequest(Strict):
    run_key: RunKey
    status: FinishStatusName = Field(
        description="ICA (success/failed/cancelled), Azure Agent.JobStatus or GitHub job.status"
    )
    attempt: Attempt | None = Field(default=None, description="Default: the current attempt")
    end_time: Instant | None = None


# --- responses -------------------------------------------------------------------------


class EventOut(BaseModel):
    event_id: str
    attempt: int
    phase: Phase
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]


class AttemptOut(BaseModel):
    attempt: int
    status: str
    provider_status: str | None
    started_at: datetime
    finished_at: datetime | None


class RunOut(BaseModel):
    run_key: str
    provider: Provider
    project_id: str
    project: str | None
    run_id: str
    pipeline_name: str
    branch: str | None
    commit: str | None
    status: Literal["running", "success", "failed", "cancelled"]
    flagged: bool = Field(description="True for Azure's SucceededWithIssues")
    attempt: int
    start_time: datetime
    end_time: datetime | None
    tenant: str | None
    stage: str | None
    artifact_digest: str | None
    requested_for: str | None
    commit_at: datetime | None = Field(default=None, description="The commit's time, if reported")


class RunDetailOut(RunOut):
    attempts: list[AttemptOut]
    events: list[EventOut]


class RollbackOut(BaseModel):
    """The rollback a failed deployment calls for: the target's last good version."""

    available: bool = Field(description="false when the target has no earlier good version")
    tenant: str
    stage: str
    artifact_digest: str | None = Field(description="the last good version's artifact digest")
    version: str | None
    run_key: str | None = Field(description="the run that deployed the last good version")
    without_approval: bool = Field(
        description="whether the policy lets this rollback go without a fresh approval"
    )


class EventRecordedOut(BaseModel):
    run: RunOut
    event: EventOut
    deployment_failed: bool = Field(
        default=False,
        description="the event (a failed `verify`, a monitoring trigger) failed its target's "
        "deployment: the alert is raised, an incident opened, and `rollback` says what to run",
    )
    rollback: RollbackOut | None = None


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok"]


class LedgerBacklogOut(BaseModel):
    count: int = Field(description="audit records not sealed yet")
    oldest_at: datetime | None = Field(description="when the oldest of them was written")
    oldest_age_seconds: float | None


class LedgerStallOut(BaseModel):
    source: str = Field(description="who stopped the ledger: sealer, backlog, witness, ...")
    reason: str
    since: datetime


class LedgerStatusOut(BaseModel):
    """Whether the audit ledger seals. While it is `stalled`, writes are still accepted (the
    inbox is durable) and `/ready` still answers 200."""

    state: Literal["ok", "stalled", "unknown"]
    reason: str | None = None
    reasons: list[LedgerStallOut] = []
    backlog: LedgerBacklogOut | None = None


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
    ledger: LedgerStatusOut
