"""Microsoft Teams through a Workflows incoming webhook, against a loopback receiver: the
payload is the documented message with one Adaptive Card attachment, and a refusal is handled
like any webhook's (4xx permanent, 429/5xx retried)."""

from __future__ import annotations

from typing import Any

from azdev_ica.jobs.delivery import deliver_due
from tests.notify.conftest import queue, rows, with_notify

WORKFLOW_PATH = "/workflows/3f1d8a6e/triggers/manual/paths/invoke?sig=s3cr3t"


def teams(settings: Any, recorder: Any) -> Any:
    return with_notify(
        settings,
        {
            "channels": {"team": {"type": "teams", "url": recorder.url + WORKFLOW_PATH}},
            "routes": [{"topics": ["approval.*"], "channels": ["team"]}],
        },
    )


def test_a_notification_posts_an_adaptive_card(ctx, settings, http_listener):
    http_listener.ok_status = 202  # what a Workflows trigger answers
    queue(
        ctx,
        summary="Approval 7 for ws/production awaits you",
        severity="warning",
        stage="production",
        run_key="ado:p:7",
    )
    report = deliver_due(ctx, teams(settings, http_listener))
    assert (report.fanned_out, report.delivered) == (1, 1)
    [request] = http_listener.requests
    assert request.method == "POST"
    assert request.path == WORKFLOW_PATH
    assert request.headers["content-type"] == "application/json"
    message = request.json()
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["version"].startswith("1.")
    title, facts = card["body"]
    assert title["type"] == "TextBlock"
    assert title["text"] == "[ICA] Approval 7 for ws/production awaits you"
    assert facts["type"] == "FactSet"
    assert {fact["title"]: fact["value"] for fact in facts["facts"]} == {
        "Topic": "approval.requested",
        "Severity": "warning",
        "Tenant": "ws",
        "Stage": "production",
        "Run": "ado:p:7",
    }
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open in ICA",
            "url": "https://ica.localhost/approvals/7",
        }
    ]
    assert {row.channel: row.state for row in rows(ctx)} == {
        "notify": "delivered",
        "teams": "delivered",
    }


def test_a_refused_card_is_not_retried_and_names_no_secret(ctx, settings, http_listener):
    http_listener.script = [(400, {})]
    queue(ctx)
    report = deliver_due(ctx, teams(settings, http_listener))
    assert report.failed == 1
    [child] = [row for row in rows(ctx) if row.channel == "teams"]
    assert child.state == "failed"
    assert child.last_error == "teams team answered HTTP 400"
    assert "s3cr3t" not in (child.last_error or "")
