"""Administration → policy: the policy versions with a readable diff between any two,
proposing a new version (paste or load a YAML file), and a proposal's page (the link in every
policy notification) with the two signatures it needs.

Same permissions and services as the API's `/policy` routes (`services/policy_changes.py`):
reading needs `policy:read`, proposing `policy:propose` for every tenant, signing
`policy:sign` for every tenant, as a person, never the proposer. A refusal is a sentence on
the page. Signing asks for a fresh second factor (step-up), as signing an approval does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy import select

from azdev_ica.api.deps import Ctx, read_form, require
from azdev_ica.api.routes.ui import login_redirect
from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Permission
from azdev_ica.db.tables import Person
from azdev_ica.errors import IcaError, NotFound, ValidationProblem
from azdev_ica.policy.diff import PolicyDiff
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.policy_changes import (
    PENDING,
    diff_refs,
    get_proposal,
    list_proposals,
    list_versions,
    propose_policy,
    sign_proposal,
    withdraw_proposal,
)
from azdev_ica.web.render import page, redirect
from azdev_ica.web.stepup import require_fresh_second_factor

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.POLICY_READ))]
Proposer = Annotated[Principal, Depends(require(Permission.POLICY_PROPOSE))]
Signer = Annotated[Principal, Depends(require(Permission.POLICY_SIGN))]
ProposalId = Annotated[int, Path(ge=1, le=2**53)]
# As the API's `/policy/diff`: a version id, a sha256 (prefix of 7+ hex digits), `proposal:ID`.
REF = re.compile(r"^([0-9]{1,6}|[0-9a-fA-F]{7,64}|proposal:[0-9]{1,16})$")
POLICY = "/policy"
DOCUMENT_MAX = 250_000
TEXT_MAX = 2000


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = getattr(request.state, "form", {})
    return form


def _sentence(exc: IcaError) -> str:
    detail = (exc.detail or exc.title).strip()
    detail = detail[:1].upper() + detail[1:]
    return detail if detail.endswith((".", "!", "?")) else detail + "."


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add | del | hunk | head | same
    text: str


def diff_lines(diff: PolicyDiff) -> list[DiffLine]:
    """The unified diff's lines, each with its kind for the page's colours."""
    lines = []
    for text in diff.unified.splitlines():
        if text.startswith(("+++", "---")):
            kind = "head"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append(DiffLine(kind, text))
    return lines


def _logins(session: Any, person_ids: set[int]) -> dict[int, str]:
    if not person_ids:
        return {}
    rows = session.execute(select(Person.id, Person.login).where(Person.id.in_(person_ids)))
    return {row.id: row.login for row in rows}


def _actor_name(value: str | None, logins: dict[str, str]) -> str:
    """A stored actor id (`person:7`, `operator:cli`, ...) as a person would read it."""
    if value is None:
        return ""
    return logins.get(value, value)


def _person_actor_logins(session: Any, values: list[str | None]) -> dict[str, str]:
    ids = {}
    for value in values:
        if value and value.startswith("person:") and value[7:].isdigit():
            ids[value] = int(value[7:])
    found = _logins(session, set(ids.values()))
    return {value: found[pid] for value, pid in ids.items() if pid in found}


# --- the versions and the diff ---------------------------------------------------------------


@router.get(POLICY, dependencies=[Depends(login_redirect)])
def policy_home(request: Request, ctx: Ctx, principal: Reader) -> Response:
    with ctx.read() as session:
        versions = list_versions(session)
        proposals = list_proposals(session, limit=50)
        actors: list[str | None] = [v.applied_by for v in versions]
        actors += [p.proposal.proposed_by for p in proposals]
        logins = _person_actor_logins(session, actors)
    rows = [
        {
            "version": version,
            "active": index == 0,
            "applied_by": _actor_name(version.applied_by, logins),
        }
        for index, version in enumerate(versions)
    ]
    return page(
        request,
        "policy.html",
        {
            "versions": rows,
            "proposals": [
                {"view": view, "proposed_by": _actor_name(view.proposal.proposed_by, logins)}
                for view in proposals
            ],
            "may_propose": principal.can(Permission.POLICY_PROPOSE),
            "default_from": versions[1].id if len(versions) > 1 else None,
            "default_to": versions[0].id if versions else None,
        },
    )


def _ref(value: str | None, what: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if not REF.match(value):
        raise ValidationProblem(
            f"the {what} version is a version number, a sha256 (7 or more hex digits) "
            "or proposal:NUMBER"
        )
    return value


@router.get(POLICY + "/diff", dependencies=[Depends(login_redirect)])
def policy_diff(request: Request, ctx: Ctx, principal: Reader) -> Response:
    params = request.query_params
    from_ref = _ref(params.get("from"), "first")
    to_ref = _ref(params.get("to"), "second")
    with ctx.read() as session:
        diff = diff_refs(session, from_ref=from_ref, to_ref=to_ref)
    return page(
        request, "policy_diff.html", {"diff": diff, "lines": diff_lines(diff), "title": None}
    )


# --- proposing -------------------------------------------------------------------------------


def _propose_page(
    request: Request,
    *,
    document: str = "",
    reason: str = "",
    error: str | None = None,
    problems: list[str] | None = None,
    status: int = 200,
) -> Response:
    return page(
        request,
        "policy_propose.html",
        {
            "document": document,
            "reason": reason,
            "error": error,
            "problems": problems or [],
            "document_max": DOCUMENT_MAX,
        },
        status=status,
    )


@router.get(POLICY + "/propose", dependencies=[Depends(login_redirect)])
def propose_form(request: Request, ctx: Ctx, principal: Proposer) -> Response:
    return _propose_page(request)


@router.post(POLICY + "/propose", dependencies=[Depends(read_form), Depends(login_redirect)])
def propose(request: Request, ctx: Ctx, principal: Proposer) -> Response:
    form = _form(request)
    # Browsers send a textarea's line breaks as CRLF: the document is stored as written.
    document = form.get("document", "").replace("\r\n", "\n")
    reason = form.get("reason", "").strip()
    try:
        if not document.strip():
            raise ValidationProblem("paste the policy file (YAML) or load it from a file")
        if len(document) > DOCUMENT_MAX:
            raise ValidationProblem(f"the policy file has at most {DOCUMENT_MAX} characters")
        outcome = propose_policy(ctx, principal=principal, document=document, reason=reason)
    except IcaError as exc:
        problems = exc.extensions.get("problems")
        return _propose_page(
            request,
            document=document[:DOCUMENT_MAX],
            reason=reason[:TEXT_MAX],
            error=_sentence(exc) if not problems else "The policy file is not valid:",
            problems=[str(p) for p in problems] if problems else None,
            status=exc.status,
        )
    return redirect(f"{POLICY}/proposals/{outcome.proposal.id}")


# --- a proposal and its signatures -----------------------------------------------------------


def _proposal_page(
    request: Request,
    ctx: ServiceContext,
    principal: Principal,
    proposal_id: int,
    *,
    refusal: str | None = None,
    notice: str | None = None,
    comment: str = "",
    status: int = 200,
) -> Response:
    with ctx.read() as session:
        view = get_proposal(session, proposal_id)
        row = view.proposal
        signers = _logins(session, {s.person_id for s in view.signatures})
        logins = _person_actor_logins(session, [row.proposed_by, row.closed_by])
        try:
            diff: PolicyDiff | None = diff_refs(
                session, from_ref=None, to_ref=f"proposal:{proposal_id}"
            )
        except NotFound:
            diff = None  # the first policy ever proposed: nothing to compare with
    approvals = sum(1 for s in view.signatures if s.decision == "approve")
    pending = row.status == PENDING
    return page(
        request,
        "policy_proposal.html",
        {
            "view": view,
            "proposal": row,
            "proposed_by": _actor_name(row.proposed_by, logins),
            "closed_by": _actor_name(row.closed_by, logins),
            "signatures": [
                {"signature": s, "login": signers.get(s.person_id, f"person {s.person_id}")}
                for s in view.signatures
            ],
            "approvals": approvals,
            "may_sign": pending and principal.can(Permission.POLICY_SIGN),
            "may_withdraw": pending
            and (
                principal.id == row.proposed_by
                or (
                    principal.can(Permission.POLICY_PROPOSE)
                    and principal.scope(Permission.POLICY_PROPOSE) is None
                )
            ),
            "diff": diff,
            "lines": diff_lines(diff) if diff is not None else [],
            "refusal": refusal,
            "notice": notice,
            "comment": comment,
        },
        status=status,
    )


@router.get(POLICY + "/proposals/{proposal_id}", dependencies=[Depends(login_redirect)])
def proposal(request: Request, ctx: Ctx, principal: Reader, proposal_id: ProposalId) -> Response:
    signed = request.query_params.get("signed")
    notice = {"approve": "Signed: approved.", "reject": "Signed: rejected."}.get(signed or "")
    return _proposal_page(request, ctx, principal, proposal_id, notice=notice)


@router.post(
    POLICY + "/proposals/{proposal_id}/sign",
    dependencies=[Depends(read_form), Depends(login_redirect)],
)
def proposal_sign(
    request: Request, ctx: Ctx, principal: Signer, proposal_id: ProposalId
) -> Response:
    # Signing asks for a fresh second factor, as signing an approval does (docs/console.md).
    require_fresh_second_factor(request, ctx)
    form = _form(request)
    comment = form.get("comment", "").strip()
    decision = form.get("decision", "")
    try:
        if decision not in ("approve", "reject"):
            raise ValidationProblem("choose to approve or to reject")
        if len(comment) > TEXT_MAX:
            raise ValidationProblem(f"a comment has at most {TEXT_MAX} characters")
        sign_proposal(
            ctx,
            principal=principal,
            proposal_id=proposal_id,
            approve=decision == "approve",
            comment=comment or None,
        )
    except NotFound:
        raise
    except IcaError as exc:
        return _proposal_page(
            request,
            ctx,
            principal,
            proposal_id,
            refusal=_sentence(exc),
            comment=comment[:TEXT_MAX],
            status=exc.status,
        )
    return redirect(f"{POLICY}/proposals/{proposal_id}?signed={decision}")


@router.post(
    POLICY + "/proposals/{proposal_id}/withdraw",
    dependencies=[Depends(read_form), Depends(login_redirect)],
)
def proposal_withdraw(
    request: Request, ctx: Ctx, principal: Proposer, proposal_id: ProposalId
) -> Response:
    reason = _form(request).get("reason", "").strip()
    try:
        withdraw_proposal(ctx, principal=principal, proposal_id=proposal_id, reason=reason)
    except NotFound:
        raise
    except IcaError as exc:
        return _proposal_page(
            request, ctx, principal, proposal_id, refusal=_sentence(exc), status=exc.status
        )
    return redirect(f"{POLICY}/proposals/{proposal_id}")
