"""Answers every route gets alike: JSON text that can be stored, and safe response headers.

A JSON string may spell a lone UTF-16 surrogate (`"\\ud800"`): it is valid JSON text, Python
decodes it to a `str`, and then nothing can encode it (UTF-8, PostgreSQL, the ledger's
canonical JSON), so it used to surface as a 500 deep inside a write. It is refused here,
once, for every JSON body, before any route reads it: a 422 problem naming where it was.

Every answer says `X-Content-Type-Options: nosniff` (a browser never second-guesses a JSON
or problem document as HTML) and, unless the route chose otherwise or it is a vendored
static file, `Cache-Control: no-store`: ICA's answers carry run, approval and audit data
that no shared or browser cache should keep.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from azdev_ica.api.problems import problem_response
from azdev_ica.web.render import STATIC_PREFIX

# A \uD800-\uDFFF escape, whatever the case of its hex digits: only bodies that spell one
# are parsed here (a surrogate can reach Python's json only through such an escape).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_MAX_REPORTED = 5


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            kind, _, subtype = media.partition(b"/")
            return bool(
                kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))
            )
    return False


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def lone_surrogates(value: Any, pointer: str = "") -> list[str]:
    """JSON pointers (RFC 6901) of the strings (values or member names) in `value` that
    hold a lone surrogate; a proper pair was already joined into one character by the
    parser, so any surrogate left is lone."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(pointer, value)]
    while stack and len(found) < _MAX_REPORTED:
        where, item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                found.append(where)
        elif isinstance(item, dict):
            for key, member in item.items():
                escaped = key.replace("~", "~0").replace("/", "~1")
                if _has_surrogate(key):
                    found.append(where)
                else:
                    stack.append((f"{where}/{escaped}", member))
        elif isinstance(item, list):
            stack.extend((f"{where}/{index}", member) for index, member in enumerate(item))
    return sorted(found)


class JsonTextMiddleware:
    """Refuse JSON bodies holding a lone surrogate with a 422 problem (see the module doc).
    Sits inside the body-size limit, so the body it reads is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break  # the client went away; the route sees an empty body
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the body-size limit
            response = problem_response(
                status=exc.status_code,
                slug="payload-too-large",
                title="The request body is too large",
                detail=str(exc.detail),
                instance=scope.get("path"),
            )
            await response(scope, receive, send)
            return
        body = b"".join(chunks)
        if _SURROGATE_ESCAPE.search(body):
            pointers = self._lone_surrogates(body)
            if pointers:
                response = problem_response(
                    status=422,
                    slug="validation",
                    title="The request is not valid",
                    detail="; ".join(f"{p or '/'}: a lone surrogate" for p in pointers)
                    + " (text must be Unicode scalar values)",
                    instance=scope.get("path"),
                    extensions={
                        "errors": [
                            {
                                "pointer": pointer,
                                "in": "body",
                                "detail": "a lone UTF-16 surrogate is not text",
                            }
                            for pointer in pointers
                        ]
                    },
                )
                await response(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _lone_surrogates(body: bytes) -> list[str]:
        try:
            parsed = json.loads(body)
        except ValueError:
            return []  # not JSON: the route answers its own 400
        return lone_surrogates(parsed)


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` on every answer; `Cache-Control: no-store` unless
    the route set its own Cache-Control."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # Vendored static files carry no data and are cached (web/render.py says how long).
        static = str(scope.get("path", "")).startswith(STATIC_PREFIX + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if b"cache-control" not in names and not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def client_address(request: Any) -> str:
    """The address of the client that sent `request`: the socket's peer, unless the peer is
    one of the trusted proxies (ICA_TRUSTED_PROXIES), in which case X-Forwarded-For is read
    from the right, skipping trusted proxies: the first address no trusted proxy vouches
    for is the client. A client cannot forge its address by sending the header itself: the
    proxy appends the address it saw, and only the proxy's addition is believed."""
    import ipaddress

    peer = request.client.host if request.client is not None else "unknown"
    trusted = [
        ipaddress.ip_network(str(network), strict=False)
        for network in request.app.state.settings.trusted_proxies
    ]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or not is_trusted(peer):
        return str(peer)
    hops = [
        hop.strip()
        for value in request.headers.getlist("x-forwarded-for")
        for hop in value.split(",")
    ]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage before a trusted hop: believe no further
        client = hop
        if not is_trusted(hop):
            break
    return str(client)
