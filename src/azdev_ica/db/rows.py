"""A run and an event as plain rows: their columns as read, with no session behind them.

`run/event` is the pipelines' hottest write. It reads its run with a Core statement and writes
its event with a prebuilt INSERT, so neither needs what the ORM gives (identity map, change
tracking, lazy loading): building a mapped object costs tens of microseconds, a dataclass
about one. Changes to a run (a re-run, a build's digest) are still made on the mapped
`PipelineRun` or by an explicit UPDATE; a `RunRow` is a snapshot, never written back.

The fields are the tables' columns, in order (tests/db/test_rows.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azdev_ica.db.tables import PipelineEvent, PipelineRun


@dataclass(frozen=True, slots=True)
class RunRow:
    """The columns of an `azdev_pipeline_run` row."""

    id: int
    run_key: str
    provider: str
    project_id: str
    project: str | None
    run_id: str
    pipeline_name: str
    branch: str | None
    commit: str | None
    status: str
    flagged: bool
    attempt: int
    start_time: datetime
    end_time: datetime | None
    tenant: str | None
    stage: str | None
    artifact_digest: str | None
    requested_for: str | None
    requested_for_email: str | None
    created_at: datetime
    updated_at: datetime
    commit_at: datetime | None

    @classmethod
    def of(cls, run: PipelineRun) -> RunRow:
        """The row of a mapped run, as it stands (after a flush, as stored)."""
        return cls(**{name: getattr(run, name) for name in RUN_FIELDS})


@dataclass(frozen=True, slots=True)
class EventRow:
    """The columns of an `azdev_pipeline_event` row."""

    id: int
    run_pk: int
    event_id: str
    attempt: int
    phase: str
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    target_tenant: str | None
    target_stage: str | None
    target_digest: str | None

    @classmethod
    def of(cls, event: PipelineEvent) -> EventRow:
        return cls(**{name: getattr(event, name) for name in EVENT_FIELDS})


RUN_FIELDS = tuple(RunRow.__dataclass_fields__)
EVENT_FIELDS = tuple(EventRow.__dataclass_fields__)
