"""The audit ledger for auditors (seed 000 §3.2, §4): query, checkpoint, proofs, public keys.

Every answer can be checked without trusting ICA: entries come as their exact bytes, proofs
as RFC 9162 audit paths, checkpoints as C2SP signed notes verifiable with the public keys.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from azdev_ica.api.deps import Ctx, json_body, require
from azdev_ica.api.schemas import Code, Instant, JsonInt, Str, Strict
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import AuditCheckpoint, AuditEntry
from azdev_ica.db.types import stored_bytes
from azdev_ica.queries.audit import (
    AuditFilter,
    LedgerEntry,
    Receipt,
    consistency,
    cosigned_note,
    entry_with_proof,
    latest_checkpoint,
    public_keys,
    query_entries,
    receipt,
    shard,
)
from azdev_ica.services.audit import rfc3339
from azdev_ica.services.context import ServiceContext

router = APIRouter(prefix="/audit", tags=["audit"])

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Year = Annotated[
    int | None,
    Query(ge=2000, le=9999, description="The yearly shard (default: the latest)"),
]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- schemas ---------------------------------------------------------------------------------


class AuditQuery(Strict):
    time_from: Instant | None = Field(default=None, description="Entries at or after (RFC 3339)")
    time_to: Instant | None = Field(default=None, description="Entries before (RFC 3339)")
    actor: Annotated[Str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Actor id, e.g. `apikey:ica_abcdefghij`"
    )
    action: Annotated[Str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Action type, e.g. `run.start`"
    )
    subject_type: Annotated[Str, Field(min_length=1, max_length=32)] | None = None
    subject_id: Annotated[Str, Field(min_length=1, max_length=200)] | None = None
    tenant: Code | None = None
    year: Annotated[JsonInt, Field(ge=2000, le=9999)] | None = None
    limit: Annotated[JsonInt, Field(ge=1, le=500)] = 100
    cursor: Annotated[Str, Field(max_length=200)] | None = None


class AuditEntryOut(BaseModel):
    origin: str
    year: int
    index: int
    time: str
    action: str
    actor_kind: str
    actor_id: str
    subject_type: str
    subject_id: str
    tenant: str | None
    entry: str = Field(
        description="The entry exactly as stored and hashed (canonical JSON, UTF-8): "
        "leaf hash = SHA-256(0x00 || entry)"
    )


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class EntryProofOut(AuditEntryOut):
    status: Literal["included", "pending"] = Field(
        description="`pending`: sealed, but no signed checkpoint covers it yet (retry shortly)"
    )
    leaf_hash: str = Field(description="base64 SHA-256(0x00 || entry)")
    tree_size: int | None = Field(description="Size of the checkpoint the proof leads to")
    inclusion_proof: list[str] = Field(description="RFC 9162 audit path, base64 hashes")
    checkpoint: str | None = Field(description="The signed checkpoint note (C2SP)")


class ConsistencyOut(BaseModel):
    origin: str
    year: int
    from_size: int
    to_size: int
    from_root: str
    to_root: str
    proof: list[str] = Field(description="RFC 9162 consistency proof, base64 hashes")
    from_checkpoint: str | None
    to_checkpoint: str | None


class PublicKeyOut(BaseModel):
    name: str
    key_id: str
    vkey: str = Field(description="C2SP verifier key <name>+<hex id>+<base64(0x01 || key)>")
    valid_from: str
    valid_until: str | None = Field(description="Null while the key is current")


def _entry_fields(origin: str, row: AuditEntry | LedgerEntry) -> dict[str, object]:
    return {
        "origin": origin,
        "year": row.year,
        "index": row.idx,
        "time": rfc3339(row.time),
        "action": row.action,
        "actor_kind": row.actor_kind,
        "actor_id": row.actor_id,
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "tenant": row.tenant,
        "entry": stored_bytes(row.entry).decode("utf-8", errors="replace"),
    }


def _note(session: Session, checkpoint: AuditCheckpoint | None) -> str | None:
    """The signed note with the witnesses' cosignatures (C2SP tlog-cosignature)."""
    return cosigned_note(session, checkpoint) if checkpoint is not None else None


# --- routes ----------------------------------------------------------------------------------


@router.post("/query", response_model=AuditPage, dependencies=[Depends(json_body)])
def audit_query(body: AuditQuery, ctx: Ctx, principal: Auditor) -> AuditPage:
    """Audit entries in log order, filtered by time range, actor, action, subject and tenant;
    follow `next_cursor` for more."""
    filters = AuditFilter(
        year=body.year,
        time_from=body.time_from,
        time_to=body.time_to,
        actor=body.actor,
        action=body.action,
        subject_type=body.subject_type,
        subject_id=body.subject_id,
        tenant=body.tenant,
    )
    with ctx.read() as session:
        rows, next_cursor = query_entries(
            session, principal=principal, filters=filters, limit=body.limit, cursor=body.cursor
        )
        origins = {year: shard(session, year).origin for year in sorted({row.year for row in rows})}
        items = [AuditEntryOut.model_validate(_entry_fields(origins[r.year], r)) for r in rows]
    return AuditPage(items=items, next_cursor=next_cursor)


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "A C2SP signed note"}},
)
def audit_checkpoint(ctx: Ctx, _: Auditor, year: Year = None) -> PlainTextResponse:
    """The latest signed checkpoint of a yearly shard (C2SP tlog-checkpoint signed note), with
    the cosignatures (C2SP tlog-cosignature) the witnesses of `ICA_WITNESSES` returned for it."""
    with ctx.read() as session:
        note = cosigned_note(session, latest_checkpoint(session, year))
    return PlainTextResponse(note, media_type="text/plain; charset=utf-8")


@router.get("/entry/{index}", response_model=EntryProofOut)
def audit_entry(
    index: Annotated[int, Path(ge=0, le=2**53 - 1)],
    ctx: Ctx,
    principal: Auditor,
    year: Year = None,
) -> EntryProofOut:
    """One entry with its inclusion proof in the latest checkpoint that covers it."""
    with ctx.read() as session:
        found = entry_with_proof(session, principal=principal, year=year, index=index)
        return EntryProofOut.model_validate(
            {
                **_entry_fields(found.origin, found.entry),
                "status": "included" if found.tree_size is not None else "pending",
                "leaf_hash": _b64(found.leaf_hash),
                "tree_size": found.tree_size,
                "inclusion_proof": [_b64(h) for h in found.proof],
                "checkpoint": found.note,
            }
        )


@router.get("/consistency", response_model=ConsistencyOut)
def audit_consistency(
    ctx: Ctx,
    _: Auditor,
    from_size: Annotated[int, Query(alias="from", ge=1, le=2**53 - 1)],
    to_size: Annotated[int, Query(alias="to", ge=1, le=2**53 - 1)],
    year: Year = None,
) -> ConsistencyOut:
    """Proof that the tree of size `to` extends the tree of size `from` (RFC 9162 §2.1.4)."""
    with ctx.read() as session:
        found = consistency(session, year=year, size1=from_size, size2=to_size)
        return ConsistencyOut(
            origin=found.origin,
            year=found.year,
            from_size=found.size1,
            to_size=found.size2,
            from_root=_b64(found.root1),
            to_root=_b64(found.root2),
            proof=[_b64(h) for h in found.proof],
            from_checkpoint=_note(session, found.checkpoint1),
            to_checkpoint=_note(session, found.checkpoint2),
        )


MAX_RECEIPT_WAIT = 30.0
"""The longest a caller may ask to wait for its receipt, in seconds."""
_POLL = 0.1


class ReceiptOut(BaseModel):
    ref: int = Field(description="The audit reference (from the write's `ICA-Audit-Ref` header)")
    status: Literal["pending", "sealed", "included"] = Field(
        description="`pending`: not in the log yet; `sealed`: in the log, no signed checkpoint "
        "covers it yet; `included`: with its inclusion proof and the checkpoint (retry the "
        "others, or ask to `wait`)"
    )
    origin: str | None = None
    year: int | None = None
    index: int | None = None
    entry: str | None = Field(default=None, description="The entry exactly as stored and hashed")
    leaf_hash: str | None = Field(default=None, description="base64 SHA-256(0x00 || entry)")
    tree_size: int | None = Field(default=None, description="Size of the checkpoint")
    inclusion_proof: list[str] = Field(default=[], description="RFC 9162 audit path, base64")
    checkpoint: str | None = Field(default=None, description="The signed checkpoint (C2SP)")


def _receipt_out(found: Receipt) -> ReceiptOut:
    proof = found.found
    if proof is None:
        return ReceiptOut(ref=found.ref, status="pending")
    return ReceiptOut.model_validate(
        {
            "ref": found.ref,
            "status": found.status,
            "origin": proof.origin,
            "year": proof.year,
            "index": proof.entry.idx,
            "entry": stored_bytes(proof.entry.entry).decode("utf-8", errors="replace"),
            "leaf_hash": _b64(proof.leaf_hash),
            "tree_size": proof.tree_size,
            "inclusion_proof": [_b64(h) for h in proof.proof],
            "checkpoint": proof.note,
        }
    )


def _read_receipt(ctx: ServiceContext, principal: Principal, ref: int) -> ReceiptOut:
    with ctx.read() as session:
        return _receipt_out(receipt(session, principal=principal, ref=ref))


@router.get("/receipt/{ref}", response_model=ReceiptOut)
async def audit_receipt(
    ref: Annotated[int, Path(ge=1, le=2**63 - 1)],
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(require(Permission.SELF))],
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_RECEIPT_WAIT,
            description="Seconds to wait for the record to be sealed and covered by a signed "
            f"checkpoint (at most {MAX_RECEIPT_WAIT:g}); 0 answers at once",
        ),
    ] = 0,
) -> ReceiptOut:
    """The receipt of an audit record: its entry, leaf hash, inclusion proof and the signed
    checkpoint that covers it, once sealed. For auditors of its tenant and for the caller who
    wrote it. Waits at most `wait` seconds; then answers with what there is (200 `pending` or
    `sealed`): nothing else in ICA waits for the ledger."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    asked = False
    while True:
        found = await run_in_threadpool(_read_receipt, ctx, principal, ref)
        remaining = deadline - loop.time()
        if found.status == "included" or remaining <= 0:
            return found
        sealer = getattr(request.app.state, "sealer", None)
        if found.status == "sealed" and not asked and sealer is not None:
            sealer.request_checkpoint()  # a checkpoint on demand, not at the next interval
            asked = True
        await asyncio.sleep(min(_POLL, remaining))


@router.get("/keys", response_model=list[PublicKeyOut])
def audit_keys(ctx: Ctx, _: Auditor) -> list[PublicKeyOut]:
    """The log's public keys with their validity periods, oldest first."""
    with ctx.read() as session:
        keys = public_keys(session)
    return [
        PublicKeyOut(
            name=k.name,
            key_id=k.key_id,
            vkey=k.vkey,
            valid_from=rfc3339(k.valid_from),
            valid_until=rfc3339(k.valid_until) if k.valid_until is not None else None,
        )
        for k in keys
    ]
