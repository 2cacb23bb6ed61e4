"""Mattermost/Slack-style incoming webhooks: POST `{"text": "..."}` to the channel's URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azdev_ica.adapters.notify import message_text
from azdev_ica.adapters.notify._common import channel_config, post_json
from azdev_ica.adapters.notify.config import WebhookChannel

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings


def send(message: OutboxMessage, settings: Settings) -> None:
    name, config = channel_config(message, settings, WebhookChannel)
    post_json(
        config.url.get_secret_value(),
        {"text": message_text(message.payload)},
        timeout=config.timeout_seconds,
        what=f"webhook {name}",
    )
