"""Where notifications go: named channels, routes from (topic, tenant) to channels, SMTP.

Read from the `ICA_NOTIFY` setting (JSON), not from the policy file: channel URLs and keys
are secrets (a Mattermost/Slack incoming-webhook URL is its own credential, a PagerDuty
routing key lets anyone page the on-call), and the policy file is hashed, versioned and
shown to every reader. Example::

    {
      "channels": {
        "ops-chat": {"type": "webhook", "url": "https://chat.example.org/hooks/abc"},
        "on-call": {"type": "pagerduty", "routing_key": "R0UT1NGKEY", "severity": "error"},
        "mail": {"type": "email"}
      },
      "routes": [
        {"topics": ["approval.*"], "channels": ["ops-chat", "mail"]},
        {"topics": ["approval.sla_escalation", "override.*"], "tenants": ["bank"],
         "channels": ["on-call"]}
      ],
      "smtp": {"host": "smtp.example.org", "port": 587, "starttls": true,
               "username": "ica", "password": "...", "from_address": "ica@example.org"}
    }

An `email` channel writes to the people who hold one of the notified roles (the message's
`roles`) for the message's tenant and have an e-mail address, plus any fixed `to` addresses.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

CHANNEL_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_ADDRESS = r"^[^@\s<>]+@[^@\s<>]+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookChannel(_Model):
    """A Mattermost or Slack incoming webhook: POST `{"text": ...}`. The URL is the secret."""

    type: Literal["webhook"]
    url: SecretStr
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class TeamsChannel(_Model):
    """A Microsoft Teams channel through a Workflows incoming webhook ("Post to a channel when
    a webhook request is received"): POST a message carrying an Adaptive Card. The URL (with
    its signature) is the secret."""

    type: Literal["teams"]
    url: SecretStr
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class PagerDutyChannel(_Model):
    """PagerDuty Events API v2: POST `{base_url}/v2/enqueue` with the routing key."""

    type: Literal["pagerduty"]
    routing_key: SecretStr
    base_url: str = Field(default="https://events.pagerduty.com", pattern=r"^https?://\S+$")
    # For messages without a severity of their own; an alert pages with its own severity.
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    source: str = Field(default="ica", min_length=1, max_length=200)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class EmailChannel(_Model):
    """E-mail over the SMTP relay of `smtp`, one message per recipient."""

    type: Literal["email"]
    # Also write to the persons holding the message's notified roles for its tenant.
    to_role_holders: bool = True
    to: tuple[Annotated[str, Field(pattern=_ADDRESS, max_length=320)], ...] = ()


Channel = Annotated[
    WebhookChannel | TeamsChannel | PagerDutyChannel | EmailChannel, Field(discriminator="type")
]


class Route(_Model):
    """Messages whose topic matches one of `topics` and whose tenant matches one of `tenants`
    (shell-style patterns: `approval.*`; a message without tenant matches only `*`) go to
    every channel in `channels`."""

    topics: tuple[str, ...] = ("*",)
    tenants: tuple[str, ...] = ("*",)
    channels: tuple[Annotated[str, Field(pattern=CHANNEL_NAME)], ...] = Field(min_length=1)

    def matches(self, topic: str, tenant: str | None) -> bool:
        if not any(fnmatchcase(topic, pattern) for pattern in self.topics):
            return False
        if tenant is None:
            return "*" in self.tenants
        return any(fnmatchcase(tenant, pattern) for pattern in self.tenants)


class SmtpConfig(_Model):
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    # Upgrade the connection with STARTTLS before anything else (and before AUTH).
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = Field(pattern=_ADDRESS, max_length=320)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class NotifyConfig(_Model):
    channels: dict[Annotated[str, Field(pattern=CHANNEL_NAME)], Channel] = Field(
        default_factory=dict
    )
    routes: tuple[Route, ...] = ()
    smtp: SmtpConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> NotifyConfig:
        for index, route in enumerate(self.routes):
            unknown = [name for name in route.channels if name not in self.channels]
            if unknown:
                raise ValueError(f"routes[{index}] names unknown channels: {', '.join(unknown)}")
        if self.smtp is None and any(isinstance(c, EmailChannel) for c in self.channels.values()):
            raise ValueError("an email channel needs the smtp section")
        return self

    def destinations(self, topic: str, tenant: str | None) -> list[str]:
        """The channel names a message goes to, each once, in the order routes name them."""
        names: dict[str, None] = {}
        for route in self.routes:
            if route.matches(topic, tenant):
                names.update(dict.fromkeys(route.channels))
        return list(names)
