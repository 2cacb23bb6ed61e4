"""PagerDuty Events API v2: `POST {base_url}/v2/enqueue`, event_action `trigger`.

The dedup key is stable per notification (`ica:<subject>:<topic>`): a retried or repeated
trigger updates the same PagerDuty alert instead of paging twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azdev_ica.adapters.notify import message_text
from azdev_ica.adapters.notify._common import channel_config, post_json
from azdev_ica.adapters.notify.config import PagerDutyChannel

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

# The Events API's severities; an alert's own severity (services/alerts.py) pages as itself.
SEVERITIES = frozenset({"critical", "error", "warning", "info"})

_DETAILS = ("topic", "tenant", "stage", "run_key", "status", "approval_id", "sla_due_at")


def event(message: OutboxMessage, config: PagerDutyChannel) -> dict[str, Any]:
    """The Events API v2 body for one message."""
    payload = message.payload
    summary = message_text({**payload, "link": None}).removeprefix("[ICA] ")
    # A critical alert pages as critical: the channel's severity is only for messages that
    # carry none of their own (reminders, requests).
    own = str(payload.get("severity") or "").lower()
    severity = own if own in SEVERITIES else config.severity
    body: dict[str, Any] = {
        "routing_key": config.routing_key.get_secret_value(),
        "event_action": "trigger",
        "dedup_key": f"ica:{message.subject_type}:{message.subject_id}:{message.topic}"[:255],
        "payload": {
            "summary": summary[:1024],
            "source": config.source,
            "severity": severity,
            "component": str(payload.get("stage") or "ica"),
            "group": str(payload.get("tenant") or "ica"),
            "class": message.topic,
            "custom_details": {k: payload[k] for k in _DETAILS if k in payload},
        },
    }
    if payload.get("link"):
        body["links"] = [{"href": str(payload["link"]), "text": "Open in ICA"}]
    return body


def send(message: OutboxMessage, settings: Settings) -> None:
    name, config = channel_config(message, settings, PagerDutyChannel)
    post_json(
        config.base_url.rstrip("/") + "/v2/enqueue",
        event(message, config),
        timeout=config.timeout_seconds,
        what=f"pagerduty {name}",
    )
