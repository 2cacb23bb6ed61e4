"""Tables, named after the seed's models (`azdev.pipeline.run` → `azdev_pipeline_run`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from azdev_ica.db.types import BigId, PortableJSON, UTCDateTime

# Deterministic constraint names: Alembic's SQLite batch mode needs them, and they make
# migration diffs stable across dialects.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: PortableJSON,
    }


class PipelineRun(Base):
    """One pipeline run (seed 000 §1.3), identified by its run key."""

    __tablename__ = "azdev_pipeline_run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(8))
    project_id: Mapped[str] = mapped_column(String(100))
    project: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(64))
    pipeline_name: Mapped[str] = mapped_column(String(200))
    branch: Mapped[str | None] = mapped_column(String(400))
    commit: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    tenant: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    requested_for: Mapped[str | None] = mapped_column(String(200))
    requested_for_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    attempts: Mapped[list[RunAttempt]] = relationship(
        back_populates="run", order_by="RunAttempt.attempt"
    )

    __table_args__ = (
        Index("ix_azdev_pipeline_run_listing", "start_time", "id"),
        Index("ix_azdev_pipeline_run_tenant_stage", "tenant", "stage"),
    )


class RunAttempt(Base):
    """One attempt of a run: a re-run reopens the run under a higher attempt number."""

    __tablename__ = "azdev_pipeline_run_attempt"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    provider_status: Mapped[str | None] = mapped_column(String(32))

    run: Mapped[PipelineRun] = relationship(back_populates="attempts")

    __table_args__ = (UniqueConstraint("run_pk", "attempt"),)


class PipelineEvent(Base):
    """A phase marker of a run (seed 000 §1.3: build, test, deploy, ...)."""

    __tablename__ = "azdev_pipeline_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]

    __table_args__ = (UniqueConstraint("run_pk", "event_id"),)


class ApiKey(Base):
    """A machine credential: shown once, stored as an HMAC-SHA-256 digest."""

    __tablename__ = "azdev_api_key"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(40))
    # None means every tenant; otherwise a list of tenant codes.
    tenants: Mapped[list[str] | None] = mapped_column(PortableJSON)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The stored answer to a POST made with an Idempotency-Key, replayed on retries."""

    __tablename__ = "azdev_idempotency"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(200))
    idem_key: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("principal", "idem_key"),)


class AuditRecord(Base):
    """An append-only audit record: who did what, when, on what, with which data.

    `record` holds the canonical JSON (RFC 8785) of the whole record, stored byte for byte;
    the other columns are copies for querying. Triggers refuse UPDATE and DELETE.
    """

    __tablename__ = "azdev_audit_record"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str | None] = mapped_column(String(32))
    record: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_azdev_audit_record_subject", "subject_type", "subject_id"),
        Index("ix_azdev_audit_record_time", "recorded_at"),
    )


class PolicyVersion(Base):
    """An applied policy document; the latest row is the active policy."""

    __tablename__ = "azdev_policy_version"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime]
    applied_by: Mapped[str] = mapped_column(String(200))


APPEND_ONLY_TABLES = ("azdev_audit_record", "azdev_policy_version")
