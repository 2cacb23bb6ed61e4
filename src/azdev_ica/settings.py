"""Settings, read from `ICA_*` environment variables; never built at import time."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from azdev_ica.adapters.notify.config import NotifyConfig
from azdev_ica.adapters.siem_config import SiemDestination
from azdev_ica.auth.oidc_login import OidcLoginConfig
from azdev_ica.auth.trust import OidcTrust

DEFAULT_DATA_DIR = Path("var")
# A directory of secret files, one per setting, named like its variable (`ica_database_url`,
# `ica_secret_key`, ...): what Compose secrets and a Key Vault CSI mount provide. A variable
# set in the environment wins over a file.
SECRETS_DIR_ENV = "ICA_SECRETS_DIR"


class WitnessSetting(BaseModel):
    """A witness ICA submits its checkpoints to (C2SP tlog-witness): its URL prefix (the
    requests go to `<url>/add-checkpoint` and `<url>/open-origin`) and its verifier key
    (`ica witness key` prints it: `<name>+<key id>+<base64(0x04 || key)>`)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    vkey: str

    @field_validator("vkey")
    @classmethod
    def _check_vkey(cls, value: str) -> str:
        from azdev_ica.ledger.cosignature import CosignatureVerifier
        from azdev_ica.ledger.note import NoteError

        try:
            CosignatureVerifier.from_key_string(value)
        except NoteError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()


class Settings(BaseSettings):
    """Server settings. Build one with `Settings()` (environment) or pass values in tests."""

    model_config = SettingsConfigDict(env_prefix="ICA_", extra="ignore")

    # Where ICA writes its files: the embedded SQLite database, the server secret and the
    # ledger key unless set below, the copies of the signed checkpoints (the container
    # image's one volume).
    data_dir: Path = DEFAULT_DATA_DIR
    # The database (postgresql://user:password@host/db, or sqlite:///path). Default: the
    # SQLite file <data_dir>/ica.db, for one machine and one server process.
    database_url: str = ""
    # The pepper of API-key digests. Read from `secret_key` or, when that is empty, from
    # `secret_key_file` (created by `ica init`, mode 0600). Without one the server refuses
    # to start: a digest made with a well-known default would be worthless.
    secret_key: SecretStr = SecretStr("")
    secret_key_file: Path | None = None
    # A published host name, used in links and in the ledger's origin (`<host>/audit/<year>`).
    public_host: str = Field(default="ica.localhost", pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$")
    # The base URL people open ICA at (links in notifications and approval answers), e.g.
    # https://ica.example.org. Default: https://<public_host>.
    public_url: str = Field(default="", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")
    # Hosts an Azure DevOps check's PlanUrl may name (callback mode): ICA posts the check's
    # own token there, so only Azure DevOps itself by default. ".x" matches any subdomain.
    ado_callback_hosts: list[str] = Field(default=["dev.azure.com", ".visualstudio.com"])
    # GitHub custom deployment protection rule (docs/github.md): the GitHub App that answers
    # the rule (its id and RS256 private key, PEM), the secret its webhook is signed with, and
    # GitHub's REST API. ICA posts the installation token only to that API's host: a
    # webhook's callback URL on any other host is never called.
    github_app_id: int | None = Field(default=None, ge=1)
    github_app_private_key_file: Path | None = None
    github_webhook_secret: SecretStr = SecretStr("")
    github_api_url: str = Field(
        default="https://api.github.com", pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
    )
    # An API key's "last used" time is written at most this often (0: at every use).
    api_key_touch_seconds: int = Field(default=60, ge=0)
    # Database connections each server process keeps (PostgreSQL), and how long a SQLite
    # writer waits for the file's lock before it gives up.
    db_pool_size: int = Field(default=10, ge=1)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    # The audit ledger. The signing key file (`ica keys init`, mode 0600) is shared by every
    # replica; without it the server refuses to seal. Default: <data_dir>/ledger.key.
    ledger_key_file: Path | None = None
    # Every signed checkpoint is also written here, outside the database.
    # Default: <data_dir>/checkpoints.
    ledger_store_dir: Path | None = None
    # Run the sealer in this server process (one process seals at a time, under a lease).
    ledger_sealer: bool = True
    # How often the sealer looks for new records; after passes that found none, it waits up
    # to 4 intervals, until a record is appended in its own process.
    ledger_seal_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    # A checkpoint is signed at most this often while the log grows; records per sealing
    # transaction; how long the sealer's lease lasts unless renewed.
    ledger_checkpoint_interval_seconds: float = Field(default=5.0, gt=0, le=86_400)
    ledger_batch_size: int = Field(default=1000, ge=1, le=100_000)
    ledger_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Witnesses (docs/ledger.md, README "Witnesses"): JSON in ICA_WITNESSES, a list of
    # {"url": "https://witness.example/w1", "vkey": "<the witness's verifier key>"}. Every
    # signed checkpoint goes to each; their cosignatures are published with it. One that
    # does not answer is retried, with a warning alert after ICA_WITNESS_ALERT_MINUTES; one
    # that refuses (history was rewritten) stops the sealer with a critical alert.
    witnesses: list[WitnessSetting] = Field(default_factory=list)
    witness_alert_minutes: float = Field(default=15.0, gt=0, le=7 * 24 * 60)
    witness_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # The ledger counts as stalled (`/ready`'s body, `ica audit verify`'s exit code 4) once
    # the oldest unsealed audit record is older than this.
    ledger_stall_after_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # Bearer JWTs from pipelines (Entra ID, GitHub Actions OIDC): issuers, audiences and the
    # identities each vouches for, as JSON in ICA_OIDC_TRUST. See docs/identity.md.
    oidc_trust: OidcTrust = Field(default_factory=OidcTrust)
    # People signing in to the web UI (docs/identity.md, "People"). Local passwords are
    # argon2id; "cheapest" is for test suites only.
    password_hash_profile: Literal["rfc9106_low_memory", "cheapest"] = "rfc9106_low_memory"  # noqa: S105
    # Failed sign-ins per login before a lockout, and the lockout's back-off (doubling from
    # the first to the cap).
    signin_max_failures: int = Field(default=5, ge=1, le=1000)
    signin_lockout_seconds: float = Field(default=30, gt=0, le=86_400)
    signin_lockout_max_seconds: float = Field(default=3600, gt=0, le=7 * 86_400)
    # Sign-in attempts a client address, and a login, may make per minute in this process
    # (beyond them 429 with Retry-After, nothing written); and how many password hashes
    # (argon2id: 64 MiB each) may be computed at once (beyond it 429 with Retry-After).
    signin_rate_per_address: int = Field(default=30, ge=1, le=100_000)
    signin_rate_per_login: int = Field(default=10, ge=1, le=100_000)
    signin_hash_concurrency: int = Field(default=4, ge=1, le=256)
    # Proxies whose X-Forwarded-For is believed (CIDR list, JSON or comma-separated in
    # ICA_TRUSTED_PROXIES): the client address is taken from the forwarded header only when
    # the connection comes from one of them, otherwise it is the socket's peer.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    # Browser sessions end after this long without a request, and this long after sign-in.
    session_idle_minutes: float = Field(default=30, gt=0, le=24 * 60)
    session_lifetime_hours: float = Field(default=12, gt=0, le=24 * 30)
    # Enrolment links (a new person, or after a reset) are good once, for this long.
    enrolment_link_hours: float = Field(default=72, gt=0, le=14 * 24)
    # Signing an approval or an override in the console needs a TOTP code this recent.
    step_up_minutes: float = Field(default=5, gt=0, le=60)
    # OpenID Connect sign-in for people, as JSON in ICA_OIDC_LOGIN (None: local users only).
    oidc_login: OidcLoginConfig | None = None
    # Background jobs (outbox delivery, approval SLA and expiry, override reviews): run the
    # scheduler in this server process. Each job runs in one process at a time, under a
    # database lease; docs/notifications.md.
    jobs_scheduler: bool = True
    jobs_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    jobs_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    # Outbox delivery: attempts before a message is marked failed, exponential back-off with
    # jitter from the first delay to the cap, and how long a claimed message stays claimed.
    outbox_max_attempts: int = Field(default=8, ge=1, le=100)
    outbox_backoff_seconds: float = Field(default=30.0, gt=0, le=86_400)
    outbox_backoff_max_seconds: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    outbox_claim_seconds: float = Field(default=300.0, ge=1, le=86_400)
    outbox_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Notification channels and routes, as JSON in ICA_NOTIFY (adapters/notify/config.py).
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    # The audit stream (docs/observe.md): sealed ledger entries forwarded, in order and once,
    # to each destination of ICA_SIEM (JSON list; adapters/siem_config.py). A destination
    # that fails is retried with back-off (from the first delay to the cap), nothing
    # skipped; a warning alert `siem.stalled` once it has failed for ICA_SIEM_ALERT_MINUTES.
    siem: list[SiemDestination] = Field(default_factory=list)
    siem_alert_minutes: float = Field(default=15.0, gt=0, le=7 * 24 * 60)
    siem_backoff_seconds: float = Field(default=5.0, gt=0, le=86_400)
    siem_backoff_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Batches one destination may send in one pass of the job (a backlog drains over passes).
    siem_batches_per_pass: int = Field(default=20, ge=1, le=10_000)

    @field_validator("siem")
    @classmethod
    def _unique_siem_names(cls, value: list[Any]) -> list[Any]:
        names = [destination.name for destination in value]
        if len(names) != len(set(names)):
            raise ValueError("two SIEM destinations share a name")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values passed in, then `ICA_*` variables, then the files of ICA_SECRETS_DIR."""
        import os

        directory = os.environ.get(SECRETS_DIR_ENV, "").strip()
        if not directory:
            return (init_settings, env_settings, dotenv_settings, file_secret_settings)
        if not Path(directory).is_dir():
            raise MissingSecretError(f"{SECRETS_DIR_ENV} is not a directory: {directory}")
        secrets_source = SecretsSettingsSource(settings_cls, secrets_dir=directory)
        return (init_settings, env_settings, dotenv_settings, secrets_source)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        # `10.0.0.0/8, 192.168.1.7` or a JSON list; a bare address is a /32 (or /128).
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, value: str) -> str:
        # psycopg 3 is the only PostgreSQL driver we ship; accept the plain URL forms too.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    def resolved_public_url(self) -> str:
        """The base URL for links to ICA's pages, without a trailing slash."""
        return self.public_url.rstrip("/") or f"https://{self.public_host}"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ica.db').as_posix()}"

    def resolved_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    def resolved_ledger_key_file(self) -> Path:
        return self.ledger_key_file or self.data_dir / "ledger.key"

    def resolved_ledger_store_dir(self) -> Path:
        return self.ledger_store_dir or self.data_dir / "checkpoints"

    def pepper(self) -> bytes:
        """The server secret used to digest API keys; raises when none is provisioned."""
        value = self.secret_key.get_secret_value()
        if value:
            return value.encode()
        path = self.resolved_secret_key_file()
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise MissingSecretError(
                f"no server secret: set ICA_SECRET_KEY or run `ica init` to create {path}"
            ) from None
        if len(text) < 32:
            raise MissingSecretError(f"the server secret in {path} is too short (< 32 chars)")
        return text.encode()


class MissingSecretError(RuntimeError):
    """The server secret has not been provisioned."""


def create_secret_key_file(path: Path) -> bool:
    """Write a new random secret to `path` (mode 0600) unless it exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two concurrent `ica init` never overwrite each other's secret.
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return True
