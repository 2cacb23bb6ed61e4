"""The `ICA-Audit-Ref` response header: the references of the audit records a request wrote.

Every write appends its audit record to the ledger's inbox; the sealer gives it a place in the
log a moment later. A caller that wants proof of its write reads the header's references and
asks `GET /api/v1/azdev/audit/receipt/{ref}?wait=N` (docs: README "Audit ledger"). A header
rather than a body field: it comes with every write route alike, without changing each
route's answer, and a replayed idempotent write (which records nothing new) carries none.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from azdev_ica.services.audit import collect_audit_refs

AUDIT_REF_HEADER = "ICA-Audit-Ref"


class AuditRefMiddleware:
    """Collect the inbox ids of the audit records committed while a request is handled and
    send them as ``ICA-Audit-Ref: 17, 18`` (in the order written)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with collect_audit_refs() as refs:
            scope.setdefault("state", {})["ica_audit_refs"] = refs

            async def send_with_refs(message: Message) -> None:
                if message["type"] == "http.response.start" and refs:
                    value = ", ".join(str(ref) for ref in refs).encode("ascii")
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", []),
                            (AUDIT_REF_HEADER.lower().encode("ascii"), value),
                        ],
                    }
                await send(message)

            await self.app(scope, receive, send_with_refs)
