"""GitHub's webhook for the custom deployment protection rule (docs/github.md).

The route takes no caller credentials: GitHub signs each delivery with the webhook secret
(`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>`), checked in constant time before
anything is read. It answers at once (GitHub wants a reply within seconds); the decision is
posted back later, through the outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field

from azdev_ica.api.deps import Ctx, signed
from azdev_ica.errors import MalformedRequest, Unauthenticated
from azdev_ica.services.github_reviews import parse_protection_rule, receive_protection_rule

log = logging.getLogger(__name__)

router = APIRouter(tags=["github"])

PROTECTION_RULE_EVENT = "deployment_protection_rule"


async def github_signature(
    request: Request,
    signature: Annotated[
        str | None, Header(alias="X-Hub-Signature-256", include_in_schema=False)
    ] = None,
) -> bytes:
    """The raw body, once its signature by the webhook secret is verified."""
    secret = request.app.state.settings.github_webhook_secret.get_secret_value()
    if not secret:
        log.error("GitHub webhook refused: ICA_GITHUB_WEBHOOK_SECRET is not set")
        raise Unauthenticated("this server takes no GitHub webhooks")
    if not signature:
        raise Unauthenticated("the webhook is not signed (X-Hub-Signature-256)")
    body = await request.body()
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        log.warning(
            "GitHub webhook refused: bad signature (delivery %s)",
            request.headers.get("x-github-delivery", "?")[:64],
        )
        raise Unauthenticated("the webhook signature does not match")
    return body


SignedBody = Annotated[bytes, Depends(signed(github_signature))]


class GithubReviewOut(BaseModel):
    """What ICA made of a `deployment_protection_rule` delivery."""

    delivery_id: str
    run_key: str
    approval_id: int | None = Field(description="The approval the rule waits for, if any")
    status: Literal["waiting", "approved", "rejected"] = Field(
        description="waiting: the answer is posted when the approval is decided; otherwise "
        "the answer already queued for GitHub"
    )
    duplicate: bool = Field(description="The delivery had been received before")


@router.post(
    "/github/webhook",
    status_code=202,
    response_model=GithubReviewOut,
    responses={
        200: {"model": GithubReviewOut, "description": "A delivery received before"},
        204: {"description": "An event ICA does not act on (e.g. ping)"},
    },
)
def github_webhook(
    body: SignedBody,
    ctx: Ctx,
    response: Response,
    event: Annotated[str | None, Header(alias="X-GitHub-Event")] = None,
    delivery: Annotated[str | None, Header(alias="X-GitHub-Delivery")] = None,
) -> Any:
    """GitHub App webhook: a `deployment_protection_rule` delivery opens or reuses the run's
    approval for the environment's target; any other event is acknowledged and ignored."""
    if event != PROTECTION_RULE_EVENT:
        return Response(status_code=204)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest(
            "the webhook body is not JSON (content type application/json)"
        ) from None
    if not isinstance(payload, dict) or payload.get("action") != "requested":
        return Response(status_code=204)
    outcome = receive_protection_rule(ctx, parse_protection_rule(delivery, payload))
    response.status_code = 200 if outcome.duplicate else 202
    status: Literal["waiting", "approved", "rejected"] = "waiting"
    if outcome.answer is not None:
        status = "approved" if outcome.answer == "approved" else "rejected"
    return GithubReviewOut(
        delivery_id=outcome.delivery_id,
        run_key=outcome.run_key,
        approval_id=outcome.approval_id,
        status=status,
        duplicate=outcome.duplicate,
    )
