"""Microsoft Teams through a Workflows incoming webhook: POST a message with one Adaptive Card
attachment, the payload Microsoft documents for the "When a Teams webhook request is received"
trigger:

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                                  "type": "AdaptiveCard", "version": "1.4", "body": [...]}}]}

The card holds the summary, the facts (topic, severity, tenant, stage, run) and an
"Open in ICA" action when the notification has a link. The workflow answers 202 Accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azdev_ica.adapters.notify import message_text
from azdev_ica.adapters.notify._common import channel_config, post_json
from azdev_ica.adapters.notify.config import TeamsChannel

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
FACTS = (
    ("Topic", "topic"),
    ("Severity", "severity"),
    ("Tenant", "tenant"),
    ("Stage", "stage"),
    ("Run", "run_key"),
)


def card(payload: dict[str, Any]) -> dict[str, Any]:
    """The Teams message for a notification payload."""
    text = message_text({**payload, "link": None})
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": text, "wrap": True, "weight": "Bolder", "size": "Medium"}
    ]
    facts = [
        {"title": title, "value": str(payload[key])} for title, key in FACTS if payload.get(key)
    ]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    content: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
    }
    link = payload.get("link")
    if link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open in ICA", "url": str(link)}]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": content}],
    }


def send(message: OutboxMessage, settings: Settings) -> None:
    name, config = channel_config(message, settings, TeamsChannel)
    post_json(
        config.url.get_secret_value(),
        card(message.payload),
        timeout=config.timeout_seconds,
        what=f"teams {name}",
    )
