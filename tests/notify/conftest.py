"""Listeners on loopback and helpers to queue and deliver outbox rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.notify.listeners import HttpRecorder, SmtpListener


@pytest.fixture
def http_listener() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture
def smtp_listener() -> Iterator[SmtpListener]:
    listener = SmtpListener().start()
    yield listener
    listener.stop()


def with_notify(settings: Any, config: dict[str, Any], **more: Any) -> Any:
    """The test settings with `ICA_NOTIFY` = `config` (validated like the environment is)."""
    from azdev_ica.adapters.notify.config import NotifyConfig

    return settings.model_copy(update={"notify": NotifyConfig.model_validate(config), **more})


def queue(
    ctx: Any,
    *,
    topic: str = "approval.requested",
    tenant: str | None = "ws",
    channel: str = "notify",
    **payload: Any,
) -> int:
    """Queue one outbox row as a service would; return its id."""
    from azdev_ica.services.outbox import enqueue

    body = {
        "topic": topic,
        "tenant": tenant,
        "stage": "production",
        "summary": f"{topic} for {tenant}",
        "link": "https://ica.localhost/approvals/7",
        "roles": ["azdev_approver_tech"],
        **payload,
    }

    def action(session: Any) -> int:
        row = enqueue(
            session,
            topic=topic,
            channel=channel,
            subject_type="approval",
            subject_id="7",
            tenant=tenant,
            payload=body,
            at=ctx.clock.now(),
        )
        session.flush()
        return int(row.id)

    return int(ctx.run_action(action))


def rows(ctx: Any) -> list[Any]:
    from sqlalchemy import select

    from azdev_ica.db.tables import OutboxMessage

    with ctx.read() as session:
        found = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        for row in found:
            session.expunge(row)
        return found
