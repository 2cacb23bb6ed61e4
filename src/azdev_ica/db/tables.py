"""Tables, named after the seed's models (`azdev.pipeline.run` → `azdev_pipeline_run`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
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
    # The commit's time as the pipeline reported it at the start (migration 0013): lead time.
    commit_at: Mapped[datetime | None]

    attempts: Mapped[list[RunAttempt]] = relationship(
        back_populates="run", order_by="RunAttempt.attempt"
    )

    __table_args__ = (
        Index("ix_azdev_pipeline_run_listing", "start_time", "id"),
        Index("ix_azdev_pipeline_run_tenant_stage", "tenant", "stage"),
        # A pipeline's finished runs, newest last: the failure-streak alert (services/alerts.py).
        Index(
            "ix_azdev_pipeline_run_pipeline",
            "provider",
            "project_id",
            "pipeline_name",
            "end_time",
        ),
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
    # A deploy event's target and artifact (the event's own, else the run's), so the gate's
    # promotion and rollback rules read one target's deployments by index, not the fleet's
    # (domain/runs.py `deploy_target`). NULL for other phases.
    target_tenant: Mapped[str | None] = mapped_column(String(32))
    target_stage: Mapped[str | None] = mapped_column(String(32))
    target_digest: Mapped[str | None] = mapped_column(String(80))

    __table_args__ = (
        UniqueConstraint("run_pk", "event_id"),
        Index("ix_azdev_pipeline_event_target", "target_tenant", "target_stage", "target_digest"),
    )


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
    # None means every stage; otherwise a list of stage names (migration 0015).
    stages: Mapped[list[str] | None] = mapped_column(PortableJSON)


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


class PolicyVersion(Base):
    """An applied policy document; the latest row is the active policy."""

    __tablename__ = "azdev_policy_version"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime]
    applied_by: Mapped[str] = mapped_column(String(200))


# --- the audit ledger ------------------------------------------------------------------------
#
# Every action inserts one row into the inbox, in its own transaction. The sealer (one at a
# time, under a lease) turns inbox rows into numbered entries of a yearly shard's Merkle tree,
# stores the tree's nodes, and signs checkpoints. Everything but the lease and the personal
# data openings is append-only: the database refuses UPDATE, DELETE (and TRUNCATE, INSERT OR
# REPLACE); tampering by someone who bypasses that is caught by `ica audit verify`.


class AuditInbox(Base):
    """An action's audit record, waiting to be sealed into the ledger.

    `body` is the canonical JSON (RFC 8785) of the record without its position in the log;
    the sealer wraps it, byte for byte, into the entry. A row counts as sealed once an entry
    names it (`AuditEntry.inbox_id`, unique): nothing here is ever updated. `txid` is the
    PostgreSQL transaction id of the writer (0 on SQLite), which lets the sealer find rows
    that committed after rows with larger ids were sealed.
    """

    __tablename__ = "azdev_audit_inbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    txid: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class AuditShard(Base):
    """A yearly log: its origin (the checkpoint's first line) and the link to the year before."""

    __tablename__ = "azdev_audit_shard"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(300), unique=True)
    opened_at: Mapped[datetime]
    previous_checkpoint: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """Entry `idx` of a shard: its exact bytes (the leaf), and copies of fields for queries."""

    __tablename__ = "azdev_audit_entry"

    year: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(BigInteger)
    inbox_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    time: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str | None] = mapped_column(String(32))
    # RFC 6962 leaf hash, written with the entry (NULL on entries sealed before 0007_ledger_speed,
    # whose leaf hashes are rows of azdev_audit_node).
    leaf: Mapped[bytes | None] = mapped_column(LargeBinary(32))

    __table_args__ = (
        # On PostgreSQL the key's index also carries `leaf` (INCLUDE, migration 0031): a proof
        # reads the leaf hashes under its lower nodes from the index alone.
        PrimaryKeyConstraint("year", "idx"),
        Index("ix_azdev_audit_entry_time", "time"),
        # The filter indexes are declared with migration 0026 (below).
    )


class AuditNode(Base):
    """A stored node of a shard's tree, keyed by `merkle.stored_hash_index`: the nodes of level
    `jobs.sealer.STORED_LEVEL` and above (lower ones are folded from the entries' leaf hashes;
    shards sealed before 0007_ledger_speed also hold every lower node and the leaves)."""

    __tablename__ = "azdev_audit_node"

    year: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (PrimaryKeyConstraint("year", "seq"),)


class AuditTree(Base):
    """The tree after each sealed batch: size, root and right edge (the sealer resumes from the
    largest). The primary key makes two sealers that race for one size fail, not fork."""

    __tablename__ = "azdev_audit_tree"

    year: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    edge: Mapped[bytes] = mapped_column(LargeBinary)
    # Where the sealer got to in the inbox: the largest inbox id sealed, and (PostgreSQL) the
    # transaction id below which every inbox row is sealed. See jobs/sealer.py.
    inbox_cursor: Mapped[int] = mapped_column(BigInteger)
    inbox_floor: Mapped[int] = mapped_column(BigInteger)
    sealed_at: Mapped[datetime]

    __table_args__ = (PrimaryKeyConstraint("year", "size"),)


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) of a shard at a tree size."""

    __tablename__ = "azdev_audit_checkpoint"

    year: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    key_name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(8))
    signed_at: Mapped[datetime]

    __table_args__ = (PrimaryKeyConstraint("year", "size"),)


class AuditKey(Base):
    """A public key of the log. A key is valid from `valid_from` until the next key's."""

    __tablename__ = "azdev_audit_key"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(8))
    vkey: Mapped[str] = mapped_column(String(300), unique=True)
    valid_from: Mapped[datetime]
    registered_at: Mapped[datetime]


class PersonalDataOpening(Base):
    """What a salted hash in the ledger stands for. Erasable by design: deleting the row
    leaves only an unopenable hash in the ledger, and the ledger still verifies."""

    __tablename__ = "azdev_audit_personal"

    commitment: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("kind", "value"),)


class Incident(Base):
    """An incident (seed 000 §6.2 `azdev.incident`): opened from a failed deployment or by
    hand, worked through a timeline, closed only with a root-cause analysis."""

    __tablename__ = "azdev_incident"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("azdev_pipeline_run.id"))
    run_key: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(200))
    detected_at: Mapped[datetime]
    restore_due_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    rca: Mapped[str | None] = mapped_column(Text)
    rca_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_azdev_incident_tenant_status", "tenant", "status"),)


class IncidentNote(Base):
    """One line of an incident's timeline (append-only): a note, a status change, the RCA."""

    __tablename__ = "azdev_incident_note"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("azdev_incident.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # note | status | rca | task
    text: Mapped[str] = mapped_column(Text)


class IncidentTask(Base):
    """A follow-up task of an incident (seed: "create follow-up tasks"); it may outlive the
    incident's closure."""

    __tablename__ = "azdev_incident_task"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("azdev_incident.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    done_at: Mapped[datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(200))


class BackupRecord(Base):
    """Evidence of one backup (seed 000 §9.1): what, when, how big, its checksum, whether it
    is encrypted, where it went. Append-only: evidence is never edited."""

    __tablename__ = "azdev_backup"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))  # database | filestore | audit | ...
    taken_at: Mapped[datetime]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    encrypted: Mapped[bool] = mapped_column(Boolean)
    location: Mapped[str] = mapped_column(String(400))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_azdev_backup_target", "tenant", "stage", "taken_at"),)


class DrDrill(Base):
    """A disaster-recovery drill (seed 000 §9.1 "quarterly restore test"): a restore of a
    backup, its measured RTO and RPO against the targets. Append-only."""

    __tablename__ = "azdev_dr_drill"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    backup_id: Mapped[int] = mapped_column(ForeignKey("azdev_backup.id"))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    succeeded: Mapped[bool] = mapped_column(Boolean)
    rto_seconds: Mapped[int] = mapped_column(BigInteger)
    rpo_seconds: Mapped[int] = mapped_column(BigInteger)
    rto_target_seconds: Mapped[int] = mapped_column(BigInteger)
    rpo_target_seconds: Mapped[int] = mapped_column(BigInteger)
    notes: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_azdev_dr_drill_target", "tenant", "finished_at"),)


class JobLease(Base):
    """Who runs a single-instance job (the sealer) until when. Mutable: taken and renewed
    with conditional writes."""

    __tablename__ = "azdev_job_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Person(Base):
    """A person who signs in, approves or is named as the requester of a run.

    Personal values (name, e-mail) live here and may be erased; the ledger only ever holds
    salted commitments to them."""

    __tablename__ = "azdev_person"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Lower-cased sign-in name (usually the e-mail or UPN); stable, unique.
    login: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class RoleGrant(Base):
    """A role held by a person, for one tenant or for all (`tenant` NULL), possibly until a
    time (delegation). Revoking stamps `revoked_at`; history stays."""

    __tablename__ = "azdev_role_grant"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    role: Mapped[str] = mapped_column(String(40))
    tenant: Mapped[str | None] = mapped_column(String(32))
    granted_at: Mapped[datetime]
    granted_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]
    # Set when a person delegated one of their own grants (issue 5: time-limited delegation).
    delegated_from: Mapped[int | None] = mapped_column(ForeignKey("azdev_role_grant.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    # None means every stage; otherwise a list of stage names (migration 0015).
    stages: Mapped[list[str] | None] = mapped_column(PortableJSON)


class PersonLink(Base):
    """A provider's user id that is this person (Azure DevOps, GitHub, Entra, OIDC subject),
    so "the requester" and "the signer" compare as people, not strings."""

    __tablename__ = "azdev_person_link"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_user_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("provider", "provider_user_id"),)


class PersonToken(Base):
    """A short-lived personal API token: the person's own grants, from a CLI or script."""

    __tablename__ = "azdev_person_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Credential(Base):
    """A person's local sign-in secrets (the embedded default, no identity provider): an
    argon2id password hash, and a TOTP secret encrypted with a key derived from the server
    secret. `totp_last_step` is the last accepted time step: a code is good once."""

    __tablename__ = "azdev_credential"

    person_id: Mapped[int] = mapped_column(
        ForeignKey("azdev_person.id"), primary_key=True, autoincrement=False
    )
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_set_at: Mapped[datetime | None]
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enrolled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class SignInThrottle(Base):
    """Failed sign-ins per login, keyed by an HMAC of the login so unknown logins are
    throttled exactly like known ones (no enumeration through lockout behaviour)."""

    __tablename__ = "azdev_signin_throttle"

    login_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]
    # Requests refused while locked and not yet recorded, and the first one's time: the
    # ledger gets one entry per lockout period with the count (migration 0017), so anonymous
    # traffic cannot grow the permanent ledger request by request.
    refused: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    refused_since: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser. Only a hash of the session id is stored; idle and absolute
    expiry are checked on every request. `extra_grants` holds the roles an identity
    provider's groups gave for this session only ([[role, tenant or null], ...])."""

    __tablename__ = "azdev_web_session"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # password | oidc
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    extra_grants: Mapped[list[list[str | None]] | None] = mapped_column(PortableJSON)
    ended_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(32))
    # The last fresh second factor in this session (a TOTP code at sign-in or at step-up):
    # signing an approval or an override asks for one within a few minutes.
    stepped_up_at: Mapped[datetime | None]


class Approval(Base):
    """A dual-approval request for one run and one target (tenant x stage), bound to the
    exact scope it was asked for (seed 000 §1.4). Its state is a projection of the ledger."""

    __tablename__ = "azdev_approval"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"), index=True)
    run_key: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    # The bound scope: any later mismatch at the gate voids the approval.
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    commit: Mapped[str | None] = mapped_column(String(64))
    # Money in minor units (cents) of `currency`: exact on both databases.
    cost_impact_minor: Mapped[int | None] = mapped_column(BigInteger)
    budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(24))
    # Set while the request is open (f"{run_pk}:{tenant}:{stage}"), NULL once closed: a
    # unique column that lets at most one open request exist per run and target.
    open_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    requested_by: Mapped[str] = mapped_column(String(200))  # the principal id that asked
    # The person who triggered the run (DESIGN.md "Identity and roles"), when known.
    requester_person_id: Mapped[int | None] = mapped_column(ForeignKey("azdev_person.id"))
    requester_provider: Mapped[str | None] = mapped_column(String(16))
    requester_provider_id: Mapped[str | None] = mapped_column(String(200))
    policy_hash: Mapped[str] = mapped_column(String(64))
    # Bound from the policy when asked: may the business half sign before the technical one.
    business_first: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    sla_warning_due_at: Mapped[datetime]
    sla_due_at: Mapped[datetime]
    sla_warned_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_azdev_approval_target", "tenant", "stage", "status"),)


class ApprovalSignature(Base):
    """One signature on an approval (append-only): who, which half, which decision."""

    __tablename__ = "azdev_approval_signature"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("azdev_approval.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"))
    half: Mapped[str] = mapped_column(String(16))  # technical | business | override ...
    role: Mapped[str] = mapped_column(String(40))  # the role held at signing time
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    comment: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("approval_id", "half"),)


class ApprovalCallback(Base):
    """An Azure DevOps check waiting in callback mode for an approval's decision: where to post
    `TaskCompleted`, and the check's AuthToken, encrypted (`auth/secretbox.py`), never logged,
    never in the ledger. The token lives 48 hours; approvals expire before that."""

    __tablename__ = "azdev_approval_callback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    approval_id: Mapped[int] = mapped_column(ForeignKey("azdev_approval.id"), index=True)
    plan_url: Mapped[str] = mapped_column(String(2000))
    project_id: Mapped[str] = mapped_column(String(100))
    hub_name: Mapped[str] = mapped_column(String(64))
    plan_id: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[str] = mapped_column(String(100))
    timeline_id: Mapped[str | None] = mapped_column(String(100))
    task_instance_id: Mapped[str] = mapped_column(String(100))
    # NULL once the callback is delivered (migration 0017): a token is kept no longer than
    # it is needed.
    token_sealed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    token_expires_at: Mapped[datetime]
    notified_at: Mapped[datetime | None]

    __table_args__ = (
        # Named by hand: the conventional name is longer than PostgreSQL's 63 characters.
        UniqueConstraint(
            "approval_id",
            "plan_id",
            "job_id",
            "task_instance_id",
            name="uq_azdev_approval_callback",
        ),
    )


class OutboxMessage(Base):
    """A side effect (notification, provider callback) queued in the same transaction as
    the action that caused it, and delivered later by a job with retries and back-off."""

    __tablename__ = "azdev_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    # What happened, e.g. approval.requested, approval.sla_warning, gate.unauthorised_deploy.
    topic: Mapped[str] = mapped_column(String(64))
    # How it goes out: webhook | pagerduty | email | ado_callback | github_review ...
    channel: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str | None] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_azdev_outbox_due", "state", "next_attempt_at"),)


# --- gates, deployment locks, emergency overrides (issue 5) ------------------------------------


class DeployLock(Base):
    """The deployment lock of one target (tenant x stage): at most one run holds it, until its
    lease ends, the run finishes, or an administrator releases it. Mutable; every change is
    an audit entry (lock.acquire, lock.release, lock.expire)."""

    __tablename__ = "azdev_deploy_lock"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    holder_run_pk: Mapped[int | None] = mapped_column(ForeignKey("azdev_pipeline_run.id"))
    holder_run_key: Mapped[str | None] = mapped_column(String(200))
    acquired_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # Bumped by every change of the lock or of its queue (services/locks.py): a statement that
    # read the queue in its snapshot and then locked the row knows whether it is still current.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))

    __table_args__ = (UniqueConstraint("tenant", "stage"),)


class LockWaiter(Base):
    """A run waiting for a target's lock, first come first served (`id` orders the queue)."""

    __tablename__ = "azdev_lock_waiter"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"))
    run_key: Mapped[str] = mapped_column(String(200))
    queued_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("tenant", "stage", "run_pk"),)


class GateEvaluation(Base):
    """One answer of the gate (append-only): what was asked, what was answered, and why."""

    __tablename__ = "azdev_gate_decision"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("azdev_pipeline_run.id"))
    run_key: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    commit: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    codes: Mapped[list[str]] = mapped_column(PortableJSON)
    approval_id: Mapped[int | None] = mapped_column(BigInteger)
    override_id: Mapped[int | None] = mapped_column(BigInteger)
    policy_hash: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime]
    decided_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_azdev_gate_decision_run", "run_pk", "tenant", "stage", "status"),)


class Override(Base):
    """An emergency override of the gate for one run and target: a reason, an override
    signer's signature (two when the policy asks), an alert, and a review after the fact."""

    __tablename__ = "azdev_override"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"), index=True)
    run_key: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | signed | rejected
    signatures_required: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    signed_at: Mapped[datetime | None]
    policy_hash: Mapped[str] = mapped_column(String(64))
    review_due_at: Mapped[datetime | None]
    review_escalated_at: Mapped[datetime | None]
    reviewed_at: Mapped[datetime | None]
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("azdev_person.id"))
    review_findings: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_azdev_override_target", "tenant", "stage", "status"),)


class OverrideSignature(Base):
    """One override signer's signature on an override (append-only)."""

    __tablename__ = "azdev_override_signature"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    override_id: Mapped[int] = mapped_column(ForeignKey("azdev_override.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    comment: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("override_id", "person_id"),)


class UnauthorisedChange(Base):
    """A `deploy` event for a target the run had no allow decision for (append-only)."""

    __tablename__ = "azdev_unauthorised_change"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"), index=True)
    run_key: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    detected_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("run_pk", "event_id"),)


# --- GitHub custom deployment protection rule (migration 0010) ---


class GithubReview(Base):
    """One GitHub `deployment_protection_rule` webhook (one delivery) and the answer ICA owes
    the waiting workflow run: the approval it opened or reused, and when the answer was queued
    for the outbox (`adapters/notify/github_review.py`). No secret is kept: ICA mints its own
    installation token to answer. Integration state, like `azdev_approval_callback`; every
    delivery is also in the ledger (`github.review`)."""

    __tablename__ = "azdev_github_review"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)  # X-GitHub-Delivery
    received_at: Mapped[datetime]
    run_key: Mapped[str] = mapped_column(String(200))
    repository: Mapped[str] = mapped_column(String(200))  # owner/name
    environment: Mapped[str] = mapped_column(String(255))
    installation_id: Mapped[int] = mapped_column(BigInteger)
    callback_url: Mapped[str] = mapped_column(String(2000))
    tenant: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(32))
    approval_id: Mapped[int | None] = mapped_column(ForeignKey("azdev_approval.id"), index=True)
    answer: Mapped[str | None] = mapped_column(String(16))  # approved | rejected
    answered_at: Mapped[datetime | None]


# --- Promotion: sign-offs and data refresh requests (migration 0011) ---


class Signoff(Base):
    """A sign-off (seed 002: QA, UAT, data migration, major release) bound to one tenant,
    target stage and artifact digest, by a person holding the kind's role for that tenant
    when signing. Append-only; one per (tenant, stage, digest, kind)."""

    __tablename__ = "azdev_signoff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    artifact_digest: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(8))  # qa | uat | data | major
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"))
    role: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("tenant", "stage", "artifact_digest", "kind"),)


class RefreshRequest(Base):
    """A request to copy a tenant's production data into a lower stage (seed 002
    cross-environment policy): masking evidence, an approval by someone other than the
    requester, then completion. requested -> approved | rejected; approved -> completed."""

    __tablename__ = "azdev_refresh_request"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    source_stage: Mapped[str] = mapped_column(String(32))
    target_stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    evidence_sha256: Mapped[str] = mapped_column(String(64))
    evidence_uri: Mapped[str] = mapped_column(String(2000))
    evidence_description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_comment: Mapped[str | None] = mapped_column(Text)
    completed_by: Mapped[str | None] = mapped_column(String(200))
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_azdev_refresh_request_tenant", "tenant", "status"),)


# --- Governed policy changes (migration 0012) ---


class PolicyProposal(Base):
    """A proposed policy version (seed 000 §8.1): it takes effect only when two approvers
    (people holding `policy:sign` for every tenant, not the proposer) have signed it, and
    only while the version it was based on is still the active one."""

    __tablename__ = "azdev_policy_proposal"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    # The active version when proposed (None: no policy yet); activation needs it still active.
    base_version_id: Mapped[int | None] = mapped_column(BigInteger)
    base_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | active | rejected | withdrawn
    signatures_required: Mapped[int] = mapped_column(Integer)
    proposed_by: Mapped[str] = mapped_column(String(200))
    proposed_at: Mapped[datetime]
    version_id: Mapped[int | None] = mapped_column(BigInteger)  # the version it became
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(200))
    close_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_azdev_policy_proposal_status", "status", "id"),)


class PolicySignature(Base):
    """One approver's signature (approve or reject) on a policy proposal (append-only)."""

    __tablename__ = "azdev_policy_signature"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("azdev_policy_proposal.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    comment: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("proposal_id", "person_id"),)


class DrillOverdueWarning(Base):
    """One warning that a tenant's DR drill is overdue, per overdue period: the period is
    named by the tenant's last passed drill (`since`: its finish time, or "never"). The unique
    key makes the daily job warn once per tenant and period, even from two processes."""

    __tablename__ = "azdev_dr_overdue_warning"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(32))
    since: Mapped[str] = mapped_column(String(40))
    warned_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("tenant", "since"),)


# --- Scope (migration 0015) ---
# No new table: `stages` columns on azdev_api_key and azdev_role_grant (above).


# --- Ledger trust (migration 0016) ---


class LedgerStall(Base):
    """Why the ledger stopped sealing, one row per source (`sealer`, `witness`, ...), set and
    cleared by `services/ledger_status.py`. Mutable: a row exists exactly while its source
    refuses; `alerted_at` marks the critical alert raised (once per stall)."""

    __tablename__ = "azdev_ledger_stall"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime]
    updated_at: Mapped[datetime]
    alerted_at: Mapped[datetime | None]


# --- Hardening (migration 0017) ---
# Columns only: SignInThrottle.refused/refused_since, ApprovalCallback.token_sealed nullable.


# --- Web console (migration 0018) ---


# --- Pipelines (migration 0019) ---


# --- Witnesses (migration 0020) ---


class WitnessCosignature(Base):
    """A witness's cosignature (C2SP tlog-cosignature) of a signed checkpoint, verified with the
    witness's key from `ICA_WITNESSES` before it was stored. Append-only."""

    __tablename__ = "azdev_witness_cosignature"

    year: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    witness: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(8))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]

    __table_args__ = (PrimaryKeyConstraint("year", "size", "witness"),)


class WitnessStatus(Base):
    """Whether a witness answers: failing since when, why, and whether that was alerted."""

    __tablename__ = "azdev_witness_status"

    witness: Mapped[str] = mapped_column(String(200), primary_key=True)
    failing_since: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_success_at: Mapped[datetime | None]


class WitnessRefusal(Base):
    """A witness refused a checkpoint as inconsistent with what it cosigned before: history was
    rewritten. While one is unresolved the sealer neither seals nor signs."""

    __tablename__ = "azdev_witness_refusal"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    witness: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution: Mapped[str | None] = mapped_column(Text)


# --- Accounts (migration 0021) ---


class EnrolmentLink(Base):
    """A single-use, short-lived link with which a person sets their own password and TOTP
    (a new person, or after an administrator's reset). Only a keyed hash of the link's
    secret is stored; a newer link revokes the older ones."""

    __tablename__ = "azdev_enrolment_link"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # enrol | reset
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RecoveryCode(Base):
    """A one-time recovery code (instead of a TOTP code at sign-in), stored as a keyed hash."""

    __tablename__ = "azdev_recovery_code"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("azdev_person.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


# --- Pipelines, part two (migration 0022) ---


class RunRequester(Base):
    """Who triggered one attempt of a run, as the provider says (a person-link provider and
    its user id): the requester of a run is everyone who triggered any of its attempts, and
    none of them signs its approval (DESIGN.md "Identity and roles")."""

    __tablename__ = "azdev_pipeline_run_requester"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("azdev_pipeline_run.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(16))
    # Personal (a provider user id): cleared by erasure, as the run's `requested_for` is.
    provider_user_id: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("run_pk", "attempt"),)


# --- Observe (migration 0023) ---


class SiemCursor(Base):
    """How far the audit stream has reached one SIEM destination (`jobs/siem.py`): the last
    entry it acknowledged (year, idx; NULL before the first), moved in the transaction that
    records the send. Mutable; also whether the destination is failing, since when, and when
    it is tried next (back-off)."""

    __tablename__ = "azdev_siem_cursor"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int | None] = mapped_column(Integer)
    idx: Mapped[int | None] = mapped_column(BigInteger)
    forwarded: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    last_sent_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)


class MonthlyReportRecord(Base):
    """The monthly compliance report the scheduler kept for a month (fleet-wide, every
    tenant), as built on the 1st of the month after: its JSON and its HTML, once per month."""

    __tablename__ = "azdev_monthly_report"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    generated_at: Mapped[datetime]
    json_text: Mapped[str] = mapped_column(Text)
    html_text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))


# --- Console, part two (migration 0024) ---


# --- First hour (migration 0025) ---


# --- Performance (migration 0026) ---
# Audit queries answer in log order, (year, idx), with a limit. Each equality filter has an
# index that ends with (year, idx), so the database reads the matching entries already in
# that order and stops at the limit, instead of walking the primary key and filtering.
Index("ix_azdev_audit_entry_actor", AuditEntry.actor_id, AuditEntry.year, AuditEntry.idx)
Index(
    "ix_azdev_audit_entry_subject",
    AuditEntry.subject_type,
    AuditEntry.subject_id,
    AuditEntry.year,
    AuditEntry.idx,
)
Index("ix_azdev_audit_entry_action", AuditEntry.action, AuditEntry.year, AuditEntry.idx)
Index("ix_azdev_audit_entry_tenant", AuditEntry.tenant, AuditEntry.year, AuditEntry.idx)


# --- Pipelines: a deploy needs a successful build of its artifact (migration 0027) ---
# The runs whose artifact is a digest: the gate finds an earlier build of what a promotion run
# deploys (services/gates.py `_build`) by digest and tenant.
Index("ix_azdev_pipeline_run_digest", PipelineRun.artifact_digest, PipelineRun.tenant)


# --- The gate at the database's speed (migration 0028) ---


# --- Ledger: inclusion proofs and audit windows at ten million entries (migration 0029) ---
# Audit queries answer in log order; a time filter is on the action's own time, which follows
# the log order only roughly (an entry is sealed after its action, stragglers later). Each
# complete block of `AUDIT_BLOCK_SIZE` entries records the earliest and latest time in it, so
# a window maps to the span of blocks that can hold its entries (plus the incomplete block at
# the end), and the query reads that span in log order through the usual index and stops at
# its limit, instead of reading every entry of the window and sorting them.
AUDIT_BLOCK_BITS = 12
AUDIT_BLOCK_SIZE = 1 << AUDIT_BLOCK_BITS


class AuditTimeBlock(Base):
    """Entries ``[block * AUDIT_BLOCK_SIZE, (block + 1) * AUDIT_BLOCK_SIZE)`` of a shard (all
    sealed): the earliest and latest action time among them. Written by the sealer when a
    batch completes the block; never changed."""

    __tablename__ = "azdev_audit_time_block"

    year: Mapped[int] = mapped_column(Integer)
    block: Mapped[int] = mapped_column(BigInteger)
    min_time: Mapped[datetime]
    max_time: Mapped[datetime]

    __table_args__ = (PrimaryKeyConstraint("year", "block"),)


# --- Pipelines' leftovers (migration 0030) ---


# Append-only tables, with the columns that identify a row (INSERT OR REPLACE guard on SQLite).
APPEND_ONLY_TABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "azdev_policy_version": (("id",),),
    "azdev_audit_inbox": (("id",),),
    "azdev_audit_shard": (("year",), ("origin",)),
    "azdev_audit_entry": (("year", "idx"), ("inbox_id",)),
    "azdev_audit_node": (("year", "seq"),),
    "azdev_audit_tree": (("year", "size"),),
    "azdev_audit_time_block": (("year", "block"),),
    "azdev_audit_checkpoint": (("year", "size"),),
    "azdev_audit_key": (("id",), ("vkey",)),
    "azdev_approval_signature": (("id",), ("approval_id", "half")),
    "azdev_incident_note": (("id",),),
    "azdev_backup": (("id",),),
    "azdev_dr_drill": (("id",),),
    "azdev_gate_decision": (("id",),),
    "azdev_override_signature": (("id",), ("override_id", "person_id")),
    "azdev_unauthorised_change": (("id",), ("run_pk", "event_id")),
    "azdev_signoff": (("id",), ("tenant", "stage", "artifact_digest", "kind")),
    "azdev_policy_signature": (("id",), ("proposal_id", "person_id")),
    "azdev_witness_cosignature": (("year", "size", "witness"),),
}
