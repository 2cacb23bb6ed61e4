"""What every action needs: the database, the clock, the server secret, the policy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from azdev_ica.clock import Clock
from azdev_ica.db.engine import CoreTransaction, Database
from azdev_ica.db.tables import PolicyVersion
from azdev_ica.errors import NoPolicy
from azdev_ica.policy import Policy, parse_policy

if TYPE_CHECKING:
    from azdev_ica.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class LedgerConfig:
    """How this process seals the audit ledger (see `jobs/sealer.py`)."""

    public_host: str = "ica.localhost"
    key_file: Path | None = None
    store_dir: Path | None = None
    batch_size: int = 1000
    seal_interval: float = 0.25
    checkpoint_interval: float = 5.0
    lease_seconds: float = 30.0
    # Stalled once the oldest unsealed record is older than this (services/ledger_status.py).
    stall_after: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LedgerConfig:
        return cls(
            public_host=settings.public_host,
            key_file=settings.resolved_ledger_key_file(),
            store_dir=settings.resolved_ledger_store_dir(),
            batch_size=settings.ledger_batch_size,
            seal_interval=settings.ledger_seal_interval_seconds,
            checkpoint_interval=settings.ledger_checkpoint_interval_seconds,
            lease_seconds=settings.ledger_lease_seconds,
            stall_after=settings.ledger_stall_after_seconds,
        )

    @property
    def key_name(self) -> str:
        """The name of the log's signing key (one key signs every yearly shard)."""
        return f"{self.public_host}/audit"

    def origin(self, year: int) -> str:
        """The origin of a yearly shard: the first line of its checkpoints."""
        return f"{self.public_host}/audit/{year}"


@dataclass
class PolicyCache:
    """Parses each applied policy version once; one indexed read per call finds the latest."""

    _parsed: dict[str, Policy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def active(self, session: Session) -> Policy:
        row = session.execute(
            select(PolicyVersion.sha256, PolicyVersion.id)
            .order_by(PolicyVersion.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise NoPolicy("no policy has been applied: run `ica policy apply FILE`")
        return self.version(session, row[0], row[1])

    def version(self, session: Session, sha256: str, version_id: int) -> Policy:
        """The applied policy version `version_id` (hash `sha256`), parsed once."""
        with self._lock:
            cached = self._parsed.get(sha256)
        if cached is not None:
            return cached
        document = session.scalars(
            select(PolicyVersion.document).where(PolicyVersion.id == version_id)
        ).one()
        policy = parse_policy(document, source=f"policy {sha256[:12]}")
        with self._lock:
            self._parsed[sha256] = policy
        return policy


@dataclass
class ServiceContext:
    db: Database
    clock: Clock
    pepper: bytes
    policies: PolicyCache = field(default_factory=PolicyCache)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    # Base URL of ICA's pages, for links in notifications (Settings.resolved_public_url).
    public_url: str = "https://ica.localhost"

    def run_action(self, action: Callable[[Session], T], *, retries: int = 3) -> T:
        """Run `action` in one write transaction, retrying when a concurrent writer won a race.

        A unique-constraint violation means another transaction created the same natural key
        first; on retry the action sees that row and answers with it. PostgreSQL may also
        abort a transaction on a serialisation conflict or deadlock; those are retried too,
        as is a pooled connection found dead at its first statement (no pool ping precedes
        it; the pool then renews its older connections), since nothing of it committed.
        """
        for attempt in range(retries + 1):
            try:
                with self.db.write() as session:
                    return action(session)
            except (IntegrityError, OperationalError) as exc:
                if attempt == retries or not _retryable(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def run_core(self, action: Callable[[CoreTransaction], T], *, retries: int = 3) -> T:
        """`run_action` for an action written with Core statements only (`Database.run_core`:
        straight through the driver on PostgreSQL), retried on the same conditions."""
        for attempt in range(retries + 1):
            try:
                return self.db.run_core(action)
            except (IntegrityError, OperationalError) as exc:
                if attempt == retries or not _retryable(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.db.read() as session:
            yield session


def _retryable(exc: IntegrityError | OperationalError) -> bool:
    if isinstance(exc, IntegrityError) or exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    # 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
    return code in {"40001", "40P01", "55P03"} or "database is locked" in str(exc.orig)
