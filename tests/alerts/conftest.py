"""Shared set-up for the seed 000 §7.2 alerts: runs of one pipeline, the alerts queued in the
outbox, their audit entries, and routing to a real webhook listener on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AuditInbox, OutboxMessage
from azdev_ica.domain.runs import Phase, Provider
from azdev_ica.services.outbox import NOTIFY_CHANNEL
from azdev_ica.services.runs import FinishRun, RecordEvent, StartRun, finish_run, record_event
from azdev_ica.services.runs import start_run as start
from tests.notify.conftest import with_notify
from tests.notify.listeners import HttpRecorder

API = "/api/v1/azdev"
PROJECT = "6c3f0e1a-2222-4c2b-9d1e-0123456789ab"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)
_run_ids = itertools.count(1000)


def start_run(
    ctx: Any,
    *,
    pipeline: str = "registry-deploy",
    tenant: str = "to",
    stage: str = "production",
    project_id: str = PROJECT,
) -> str:
    """Start a run of `pipeline`; return its key."""
    outcome = start(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id=project_id,
            run_id=str(next(_run_ids)),
            pipeline_name=pipeline,
            commit=COMMIT,
            tenant=tenant,
            stage=stage,
            artifact_digest=DIGEST,
        ),
    )
    return str(outcome.run.run_key)


def finish(ctx: Any, run_key: str, status: str, *, attempt: int | None = None) -> None:
    finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key, status, attempt=attempt))


def event(ctx: Any, run_key: str, phase: Phase, data: dict[str, Any], attempt: int = 1) -> None:
    record_event(
        ctx, principal=PIPELINE, command=RecordEvent(run_key, phase, attempt=attempt, data=data)
    )


def alerts(ctx: Any, topic: str) -> list[OutboxMessage]:
    """The `notify` rows of `topic`, oldest first."""
    with ctx.read() as session:
        found = list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.topic == topic, OutboxMessage.channel == NOTIFY_CHANNEL)
                .order_by(OutboxMessage.id)
            )
        )
        for row in found:
            session.expunge(row)
        return found


def audited(ctx: Any, action: str) -> list[tuple[str, str]]:
    """(subject type, subject id) of the audit records of `action`, oldest first."""
    with ctx.read() as session:
        return [
            (row.subject_type, row.subject_id)
            for row in session.scalars(
                select(AuditInbox).where(AuditInbox.action == action).order_by(AuditInbox.id)
            )
        ]


@pytest.fixture
def webhook() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder().start()
    yield recorder
    recorder.stop()


def routed(settings: Any, webhook: HttpRecorder, *topics: str) -> Any:
    """The settings with `topics` routed to the loopback webhook."""
    return with_notify(
        settings,
        {
            "channels": {"ops-chat": {"type": "webhook", "url": webhook.url + "/hook"}},
            "routes": [{"topics": list(topics), "channels": ["ops-chat"]}],
        },
    )
