"""Settings, read from `ICA_*` environment variables; never built at import time."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from azdev_ica.auth.trust import OidcTrust

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    """Server settings. Build one with `Settings()` (environment) or pass values in tests."""

    model_config = SettingsConfigDict(env_prefix="ICA_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    # The pepper of API-key digests. Read from `secret_key` or, when that is empty, from
    # `secret_key_file` (created by `ica init`, mode 0600). Without one the server refuses
    # to start: a digest made with a well-known default would be worthless.
    secret_key: SecretStr = SecretStr("")
    secret_key_file: Path | None = None
    # A published host name, used in links and in the ledger's origin (`<host>/audit/<year>`).
    public_host: str = Field(default="ica.localhost", pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$")
    api_key_touch_seconds: int = Field(default=60, ge=0)
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
    ledger_seal_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    ledger_checkpoint_interval_seconds: float = Field(default=5.0, gt=0, le=86_400)
    ledger_batch_size: int = Field(default=1000, ge=1, le=100_000)
    ledger_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Bearer JWTs from pipelines (Entra ID, GitHub Actions OIDC): issuers, audiences and the
    # identities each vouches for, as JSON in ICA_OIDC_TRUST. See docs/identity.md.
    oidc_trust: OidcTrust = Field(default_factory=OidcTrust)

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, value: str) -> str:
        # psycopg 3 is the only PostgreSQL driver we ship; accept the plain URL forms too.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

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
