"""A `deploy` event for a target the gate never allowed for the run is an unauthorised
change: recorded, audited and alerted in the event's own transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.db.tables import AuditInbox, OutboxMessage, UnauthorisedChange
from tests.gates.conftest import API, gate, new_run


@pytest.fixture
def devops(make_key: Any) -> str:
    return str(make_key("azdev_devops"))


def deploy(client: Any, key: str, run_key: str, **data: Any) -> None:
    response = client.post(
        f"{API}/run/event",
        json={"run_key": run_key, "phase": "deploy", "data": data},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text


def findings(ctx: Any) -> list[tuple[str, str | None, str | None]]:
    with ctx.read() as session:
        rows = session.scalars(select(UnauthorisedChange).order_by(UnauthorisedChange.id))
        return [(row.run_key, row.tenant, row.stage) for row in rows]


def alerts(ctx: Any) -> list[OutboxMessage]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(OutboxMessage).where(OutboxMessage.topic == "gate.unauthorised_deploy")
            )
        )


def test_a_deploy_without_an_allow_is_recorded_and_alerts(ctx, client, devops):
    run_key = new_run(ctx, stage="staging")
    deploy(client, devops, run_key)
    assert findings(ctx) == [(run_key, "to", "staging")]
    [alert] = alerts(ctx)
    assert (alert.channel, alert.tenant, alert.payload["severity"]) == ("notify", "to", "critical")
    assert alert.payload["run_key"] == run_key
    with ctx.read() as session:
        actions = list(session.scalars(select(AuditInbox.action).order_by(AuditInbox.id)))
    assert actions[-2:] == ["run.event", "gate.unauthorised_deploy"]


def test_a_deploy_after_an_allow_is_not(ctx, client, devops):
    run_key = new_run(ctx, stage="staging")
    assert gate(client, devops, run_key)["status"] == "allow"
    deploy(client, devops, run_key)
    deploy(client, devops, run_key, status="succeeded")
    assert findings(ctx) == []
    assert alerts(ctx) == []


def test_a_pending_or_denied_answer_authorises_nothing(ctx, client, devops):
    run_key = new_run(ctx, stage="staging", coverage=50)
    assert gate(client, devops, run_key)["status"] == "deny"
    deploy(client, devops, run_key)
    assert len(findings(ctx)) == 1


def test_an_allow_for_one_target_does_not_cover_another(ctx, client, devops):
    run_key = new_run(ctx, stage="staging")
    gate(client, devops, run_key)
    deploy(client, devops, run_key, tenant="to", stage="production")
    assert findings(ctx) == [(run_key, "to", "production")]
