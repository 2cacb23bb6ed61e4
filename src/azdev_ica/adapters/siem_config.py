"""Where the audit stream goes: the SIEM destinations of `ICA_SIEM` (JSON, a list).

Each destination receives every sealed ledger entry, in order, once (`jobs/siem.py`). Like
`ICA_NOTIFY`, this is a setting and not part of the policy file: a collector's token is a
credential, and the policy file is hashed, versioned and shown to every reader. Example::

    [
      {"name": "soc-syslog", "type": "syslog", "host": "siem.example.org", "port": 6514,
       "ca_file": "/etc/ica/siem-ca.pem"},
      {"name": "splunk", "type": "hec",
       "url": "https://splunk.example.org:8088/services/collector/event",
       "token_file": "/run/secrets/hec-token", "index": "ica-audit"}
    ]

A destination's `name` keys its cursor in the database: renaming it starts a new stream from
the ledger's first entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DESTINATION_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=DESTINATION_NAME)
    # Entries per send (one TLS connection, or one HTTP request).
    batch_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class SyslogDestination(_Destination):
    """Syslog (RFC 5424) over TLS (RFC 5425: octet-counting framing), one message per entry.

    The server's certificate is checked against `ca_file` (default: the system's trust store)
    and the host name (`server_name`, default `host`). `cert_file`/`key_file`: a client
    certificate, for collectors that require mutual TLS.
    """

    type: Literal["syslog"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=6514, ge=1, le=65535)
    ca_file: Path | None = None
    server_name: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # RFC 5424 facility (13: log audit) and the HOSTNAME field (default: ICA_PUBLIC_HOST).
    facility: int = Field(default=13, ge=0, le=23)
    hostname: str | None = Field(default=None, pattern=r"^[!-~]{1,255}$")

    @model_validator(mode="after")
    def _pair(self) -> SyslogDestination:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HecDestination(_Destination):
    """An HTTP collector in the shape of Splunk's HTTP Event Collector: POST `url` with
    `Authorization: Splunk <token>` and a batch of event objects, one per entry."""

    type: Literal["hec"]
    url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    token: SecretStr | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    index: str | None = Field(default=None, max_length=200)
    sourcetype: str = Field(default="_json", max_length=200)
    source: str = Field(default="ica:audit", max_length=200)

    @model_validator(mode="after")
    def _token(self) -> HecDestination:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token and token_file")
        return self

    def token_value(self) -> str:
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None
        return self.token_file.read_text().strip()


class AzureMonitorDestination(_Destination):
    """Azure Monitor's Logs Ingestion API: POST `{endpoint}/dataCollectionRules/{dcr_id}/
    streams/{stream}?api-version=2023-01-01` with a JSON array of records and an Entra ID token
    for `https://monitor.azure.com//.default` (client credentials of an app registration that
    holds *Monitoring Metrics Publisher* on the data collection rule); 204 when taken."""

    type: Literal["azure_monitor"]
    endpoint: str = Field(pattern=r"^https?://[^\s/?#]+/?$")
    dcr_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,100}$")
    stream: str = Field(default="Custom-ICAAudit_CL", pattern=r"^[A-Za-z0-9_-]{1,100}$")
    tenant_id: str = Field(pattern=r"^[A-Za-z0-9.-]{1,100}$")
    client_id: str = Field(min_length=1, max_length=100)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    authority: str = Field(
        default="https://login.microsoftonline.com", pattern=r"^https?://[^\s/?#]+/?$"
    )
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> AzureMonitorDestination:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("give exactly one of client_secret and client_secret_file")
        return self

    def secret_value(self) -> str:
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        assert self.client_secret_file is not None
        return self.client_secret_file.read_text().strip()


SiemDestination = Annotated[
    SyslogDestination | HecDestination | AzureMonitorDestination, Field(discriminator="type")
]
