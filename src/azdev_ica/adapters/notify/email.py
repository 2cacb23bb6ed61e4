"""E-mail over SMTP (stdlib `smtplib`): one message per recipient (the row's `to`).

STARTTLS and AUTH are optional (`ICA_NOTIFY` `smtp.starttls`, `smtp.username`/`password`).
A 5xx answer (mailbox unknown, relaying refused) is permanent; 4xx and connection failures
are retried.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import TYPE_CHECKING

from azdev_ica.adapters.notify import DeliveryError, message_text
from azdev_ica.adapters.notify._common import channel_config
from azdev_ica.adapters.notify.config import EmailChannel

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings


def compose(message: OutboxMessage, sender: str, recipient: str) -> EmailMessage:
    text = message_text(message.payload)
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = text.splitlines()[0][:200]
    mail["Message-ID"] = f"<ica-outbox-{message.id}@{sender.rsplit('@', 1)[-1]}>"
    mail.set_content(text + "\n")
    return mail


def send(message: OutboxMessage, settings: Settings) -> None:
    name, _ = channel_config(message, settings, EmailChannel)
    smtp = settings.notify.smtp
    recipient = str(message.payload.get("to", ""))
    if smtp is None or not recipient:
        raise DeliveryError(f"email {name}: no SMTP relay or no recipient", permanent=True)
    mail = compose(message, smtp.from_address, recipient)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username:
                password = smtp.password.get_secret_value() if smtp.password else ""
                client.login(smtp.username, password)
            client.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(
            f"email {name}: recipient refused (SMTP {codes[0] if codes else '?'})",
            permanent=all(code >= 500 for code in codes),
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"email {name}: SMTP {exc.smtp_code}", permanent=exc.smtp_code >= 500
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"email {name}: {type(exc).__name__}") from None
