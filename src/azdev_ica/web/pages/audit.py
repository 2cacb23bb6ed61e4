"""The audit explorer (`audit:read`, as the API's audit routes): search the ledger, open an
entry whose inclusion proof `static/audit-proof.js` checks in the browser against the latest
checkpoint of its year (SHA-256 with WebCrypto over the RFC 6962/9162 leaf and node hashes),
the recent checkpoints with the witnesses' cosignatures, and a year's export bundle (what
`ica audit export` writes), streamed."""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from azdev_ica.api.deps import Ctx, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.audit.export import export_bundle
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.types import stored_bytes
from azdev_ica.errors import NotFound
from azdev_ica.jobs.sealer import checkpoint_store
from azdev_ica.queries.audit import (
    AuditFilter,
    entry_with_proof,
    query_entries,
    shard,
)
from azdev_ica.queries.console import audit_years, recent_checkpoints
from azdev_ica.web.pages.forms import day, day_end, day_start, field, next_page, positive
from azdev_ica.web.render import page

router = APIRouter(include_in_schema=False)

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Year = Annotated[int, Path(ge=2000, le=9999)]
Index = Annotated[int, Path(ge=0, le=2**53 - 1)]

PAGE_SIZE = 50
CHECKPOINTS_SHOWN = 20


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def may_export(principal: Principal) -> bool:
    """A bundle holds every entry of its year, of every tenant: auditors of all tenants only."""
    return principal.scope(Permission.AUDIT_READ) is None


@router.get("/audit", dependencies=[Depends(login_redirect)])
def audit_search(request: Request, ctx: Ctx, principal: Auditor) -> Response:
    since, until = day(request, "from"), day(request, "to")
    filters = AuditFilter(
        year=positive(request, "year", maximum=9999),
        time_from=day_start(since),
        time_to=day_end(until),
        actor=field(request, "actor"),
        action=field(request, "action"),
        subject_type=field(request, "subject_type"),
        subject_id=field(request, "subject_id"),
        tenant=field(request, "tenant"),
    )
    with ctx.read() as session:
        rows, cursor = query_entries(
            session,
            principal=principal,
            filters=filters,
            limit=PAGE_SIZE,
            cursor=field(request, "cursor"),
        )
        years = audit_years(session)
    return page(
        request,
        "audit.html",
        {
            "entries": rows,
            "filters": filters,
            "since": since,
            "until": until,
            "years": years,
            "pager": next_page(request, cursor),
            "may_export": may_export(principal),
        },
    )


@dataclass(frozen=True)
class ProofView:
    """What the page shows and what audit-proof.js recomputes (all base64 or numbers)."""

    origin: str
    year: int
    index: int
    text: str
    entry_b64: str
    leaf_hash: str
    tree_size: int | None
    proof: list[str]
    checkpoint: str | None

    @property
    def proof_attr(self) -> str:
        return " ".join(self.proof)


@router.get("/audit/entries/{year}/{index}", dependencies=[Depends(login_redirect)])
def audit_entry_page(
    request: Request, ctx: Ctx, principal: Auditor, year: Year, index: Index
) -> Response:
    with ctx.read() as session:
        found = entry_with_proof(session, principal=principal, year=year, index=index)
        raw = stored_bytes(found.entry.entry)
        view = ProofView(
            origin=found.origin,
            year=found.year,
            index=found.entry.idx,
            text=raw.decode("utf-8", errors="replace"),
            entry_b64=_b64(raw),
            leaf_hash=_b64(found.leaf_hash),
            tree_size=found.tree_size,
            proof=[_b64(h) for h in found.proof],
            checkpoint=found.note,
        )
        entry = found.entry
    return page(request, "audit_entry.html", {"view": view, "entry": entry})


@router.get("/audit/checkpoints", dependencies=[Depends(login_redirect)])
def audit_checkpoints(request: Request, ctx: Ctx, principal: Auditor) -> Response:
    year = positive(request, "year", maximum=9999)
    with ctx.read() as session:
        years = audit_years(session)
        chosen = year if year is not None else (years[0] if years else None)
        if chosen is not None and chosen not in years:
            raise NotFound(f"no audit shard {chosen}")
        origin = shard(session, chosen).origin if chosen is not None else None
        views = (
            recent_checkpoints(session, year=chosen, limit=CHECKPOINTS_SHOWN)
            if chosen is not None
            else []
        )
    return page(
        request,
        "audit_checkpoints.html",
        {"years": years, "year": chosen, "origin": origin, "checkpoints": views},
    )


@router.get("/audit/export/{year}", dependencies=[Depends(login_redirect)])
def audit_export(request: Request, ctx: Ctx, principal: Auditor, year: Year) -> Response:
    """The year's bundle as `ica audit export --year YEAR` writes it (it verifies offline
    with its own verify.py), written to a temporary file and streamed."""
    if not may_export(principal):
        raise NotFound(f"no export for {year}: a bundle holds every tenant's entries")
    scratch = FilePath(tempfile.mkdtemp(prefix="ica-export-"))
    out = scratch / f"ica-audit-{year}.tar.gz"
    try:
        export_bundle(ctx.db, checkpoint_store(ctx.ledger), year=year, out=out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return FileResponse(
        out,
        media_type="application/gzip",
        filename=out.name,
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )
