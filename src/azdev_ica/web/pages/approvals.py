"""The approval page (`/approvals/{id}`, the link in every approval notification): exactly
what is being approved, and the form that signs it through the approval service the API
uses. A refusal is a sentence on the page; after signing, the receipt of the signature's
audit record (its ledger index, then "included" once a signed checkpoint covers it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx, read_form, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Approval
from azdev_ica.domain.approvals import Decision, Half
from azdev_ica.errors import ApprovalRefused, ValidationProblem
from azdev_ica.queries.audit import receipt
from azdev_ica.queries.pages import approval_page
from azdev_ica.services.approvals import sign_approval, sign_options
from azdev_ica.services.audit import collect_audit_refs
from azdev_ica.services.context import ServiceContext
from azdev_ica.web.render import page, redirect
from azdev_ica.web.stepup import require_fresh_second_factor

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.APPROVAL_READ))]
Signer = Annotated[Principal, Depends(require(Permission.APPROVAL_SIGN))]
Self = Annotated[Principal, Depends(require(Permission.SELF))]
ApprovalId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Ref = Annotated[int, Path(ge=1, le=2**63 - 1)]
COMMENT_MAX = 2000


def _context(ctx: ServiceContext, principal: Principal, approval_id: int) -> dict[str, Any]:
    now = ctx.clock.now()
    with ctx.read() as session:
        found = approval_page(
            session,
            approval_id=approval_id,
            principal=principal,
            policy=ctx.policies.active(session),
            now=now,
        )
        row = session.get(Approval, approval_id)
        assert row is not None  # approval_page found it
        options = sign_options(session, row=row, principal=principal, now=now)
    approval = found.view.approval
    return {
        "page": found,
        "approval": approval,
        "status": found.view.status.value,
        "halves": [half.value for half in options.halves],
        "cannot_sign": options.refusal,
        "now": now,
        "sla_seconds": (approval.sla_due_at - now).total_seconds(),
        "over_budget": (
            approval.cost_impact_minor is not None
            and approval.budget_minor is not None
            and approval.cost_impact_minor > approval.budget_minor
        ),
    }


def _show(
    request: Request,
    ctx: ServiceContext,
    principal: Principal,
    approval_id: int,
    *,
    status: int = 200,
    **extra: Any,
) -> Response:
    context = _context(ctx, principal, approval_id)
    context.update(extra)
    return page(request, "approval.html", context, status=status)


@router.get("/approvals/{approval_id}", dependencies=[Depends(login_redirect)])
def approval(
    request: Request,
    ctx: Ctx,
    principal: Reader,
    approval_id: ApprovalId,
    receipt_ref: Annotated[int | None, Query(alias="receipt", ge=1, le=2**63 - 1)] = None,
) -> Response:
    return _show(request, ctx, principal, approval_id, receipt_ref=receipt_ref)


@router.post(
    "/approvals/{approval_id}/sign",
    dependencies=[Depends(read_form), Depends(login_redirect)],
)
def approval_sign(
    request: Request, ctx: Ctx, principal: Signer, approval_id: ApprovalId
) -> Response:
    # A fresh second factor first (step-up): checked here, after the permission has read the
    # session; without one the browser goes to the step-up page and back to this page.
    require_fresh_second_factor(request, ctx)
    form: dict[str, str] = request.state.form
    comment = form.get("comment", "").strip()
    try:
        decision = Decision(form.get("decision", ""))
        half = Half(form["half"]) if form.get("half") else None
        if len(comment) > COMMENT_MAX:
            raise ValidationProblem(f"a comment has at most {COMMENT_MAX} characters")
        with collect_audit_refs() as refs:
            sign_approval(
                ctx,
                principal=principal,
                approval_id=approval_id,
                decision=decision,
                half=half,
                comment=comment or None,
            )
    except ValueError:
        return _show(
            request,
            ctx,
            principal,
            approval_id,
            status=422,
            refusal="Choose to approve or to reject, and which half you sign.",
        )
    except (ApprovalRefused, ValidationProblem) as refused:
        detail = refused.detail or refused.title
        return _show(
            request,
            ctx,
            principal,
            approval_id,
            status=refused.status,
            refusal=detail[:1].upper() + detail[1:] + ".",
            comment=comment,
        )
    where = f"/approvals/{approval_id}"
    return redirect(f"{where}?receipt={refs[-1]}" if refs else where)


@router.get("/approvals/{approval_id}/receipt/{ref}", dependencies=[Depends(login_redirect)])
def approval_receipt(
    request: Request, ctx: Ctx, principal: Self, approval_id: ApprovalId, ref: Ref
) -> Response:
    """The receipt fragment the page polls (htmx) until the record is included."""
    with ctx.read() as session:
        found = receipt(session, principal=principal, ref=ref)
        index = found.found.entry.idx if found.found is not None else None
        year = found.found.year if found.found is not None else None
    return page(
        request,
        "_receipt.html",
        {
            "approval_id": approval_id,
            "ref": ref,
            "state": found.status,
            "index": index,
            "year": year,
        },
    )
