"""Loopback SIEM receivers for the audit-stream tests: a syslog server over TLS (RFC 5425,
octet-counting framing) with a throwaway CA (tests/support/tls.py), and an HTTP
collector that answers like Splunk's HTTP Event Collector. Both can go down and come back on
the same port."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.tls import free_port, make_certificates

__all__ = ["free_port", "make_ca"]


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it:
    (ca.pem, cert.pem, key.pem)."""
    made = make_certificates(folder, ca_name="ICA test SIEM CA")
    return made.ca, made.cert, made.key


def read_frames(data: bytes) -> list[bytes]:
    """Split an RFC 5425 octet-counted stream (`LEN SP MSG`...) into messages; raises on any
    malformed framing, so a framing bug fails the test instead of being papered over."""
    messages, at = [], 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space].decode("ascii"))
        if length <= 0 or not data[at:space].isdigit():
            raise ValueError(f"bad frame length at {at}")
        start = space + 1
        if start + length > len(data):
            raise ValueError("truncated frame")
        messages.append(data[start : start + length])
        at = start + length
    return messages


class SyslogTlsReceiver:
    """A syslog-over-TLS server on 127.0.0.1:`port`: every connection is read to its end and
    split into messages, kept in arrival order."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        self.port = port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.messages: list[bytes] = []
        self.connections = 0
        self._changed = threading.Condition()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SyslogTlsReceiver:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, args=(listener,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            # One connection at a time, read to its end: the sender's order is kept.
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    chunks = []
                    while True:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
            except (OSError, ssl.SSLError):
                continue
            frames = read_frames(b"".join(chunks))
            with self._changed:
                self.connections += 1
                self.messages.extend(frames)
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[bytes]:
        """The messages once at least `count` arrived (raises if they never do)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"{len(self.messages)} syslog messages, expected {count}")
            return list(self.messages)


class HecReceiver:
    """An HTTP collector in Splunk HEC shape on 127.0.0.1:`port`: checks `Authorization:
    Splunk <token>`, parses the batch (concatenated JSON event objects) and keeps it; while
    `failing` it answers 503 as Splunk does when its queue is full, keeping nothing."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.failing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/collector/event"

    def start(self) -> HecReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/services/collector/event":
                    self._answer(404, {"text": "Not found", "code": 404})
                    return
                if self.headers.get("Authorization") != f"Splunk {receiver.token}":
                    self._answer(403, {"text": "Invalid token", "code": 4})
                    return
                if receiver.failing:
                    self._answer(503, {"text": "Server is busy", "code": 9})
                    return
                decoder, events, at = json.JSONDecoder(), [], 0
                text = body.decode("utf-8")
                while at < len(text):
                    while at < len(text) and text[at] in " \r\n\t":
                        at += 1
                    if at >= len(text):
                        break
                    event, at = decoder.raw_decode(text, at)
                    events.append(event)
                receiver.raw.append(body)
                receiver.events.extend(events)
                self._answer(200, {"text": "Success", "code": 0})

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


class AzureMonitorStandIn:
    """Entra ID's token endpoint and Azure Monitor's Logs Ingestion endpoint on loopback, as
    their documentation describes them: `POST /{tenant}/oauth2/v2.0/token` (client
    credentials, scope `https://monitor.azure.com//.default`) answers a bearer token; `POST
    /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01` needs that token (401
    without), takes a JSON array and answers 204 with no body; 503 while `failing`."""

    def __init__(self, port: int, *, tenant: str, client_id: str, secret: str) -> None:
        self.port = port
        self.tenant, self.client_id, self.secret = tenant, client_id, secret
        self.records: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self.failing = False
        self._token = "at-" + secret[::-1]
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AzureMonitorStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                if data:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                parts = urlsplit(self.path)
                if parts.path == f"/{stand_in.tenant}/oauth2/v2.0/token":
                    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    if (
                        form.get("grant_type") != "client_credentials"
                        or form.get("client_id") != stand_in.client_id
                        or form.get("client_secret") != stand_in.secret
                        or form.get("scope") != "https://monitor.azure.com//.default"
                    ):
                        self._answer(401, {"error": "invalid_client"})
                        return
                    stand_in.tokens_issued += 1
                    self._answer(
                        200,
                        {
                            "token_type": "Bearer",
                            "expires_in": 3599,
                            "access_token": stand_in._token,
                        },
                    )
                    return
                if not parts.path.startswith("/dataCollectionRules/") or parse_qs(parts.query).get(
                    "api-version"
                ) != ["2023-01-01"]:
                    self._answer(404, {"error": {"code": "NotFound"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {stand_in._token}":
                    self._answer(401, {"error": {"code": "InvalidToken"}})
                    return
                if stand_in.failing:
                    self._answer(503, {"error": {"code": "ServiceUnavailable"}})
                    return
                records = json.loads(body)
                assert isinstance(records, list)
                stand_in.records.extend(records)
                self._answer(204)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
