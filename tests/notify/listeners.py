"""Real listeners on loopback for delivery tests: an HTTP recorder and an SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    """Answers every request with the next scripted (status, headers) or 200/202 after the
    script runs out, and records what it was sent."""

    ok_status: int = 200
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> HttpRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                recorder.requests.append(
                    Recorded(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                status, headers = (
                    recorder.script.pop(0) if recorder.script else (recorder.ok_status, {})
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.refuse_next = 0  # answer 451 (temporary) this many times

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        self.messages.append(envelope)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SmtpListener:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.mailbox = _Mailbox()
        self.logins: list[str] = []
        auth: dict[str, Any] = {}
        if credentials is not None:

            def check(
                server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
            ) -> AuthResult:
                login, password = data.login.decode(), data.password.decode()
                self.logins.append(login)
                return AuthResult(success=(login, password) == credentials)

            auth = {"authenticator": check, "auth_require_tls": False}
        # aiosmtpd connects to its own port to check it started: give it a real one.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=free, **auth)

    def start(self) -> SmtpListener:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def messages(self) -> list[Envelope]:
        return self.mailbox.messages

    def stop(self) -> None:
        self.controller.stop()
