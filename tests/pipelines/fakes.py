"""The providers around a pipeline, on loopback, speaking their real protocols:

- Entra ID's token endpoint (`POST /{tenant}/oauth2/v2.0/token`): the client-credentials
  grant with a federated client assertion. It checks the assertion as Entra checks a federated
  credential (signed by Azure DevOps's issuer, subject `sc://org/project/connection`, audience
  `api://AzureADTokenExchange`) and answers with an access token for ICA's app, signed with a
  key ICA trusts (served by tests/support/oidc.py's discovery and key-set documents).
- Azure DevOps's OIDC token endpoint (`POST $(System.OidcRequestUri)?api-version=7.1-preview.1
  &serviceConnectionId=...` with `Authorization: Bearer $(System.AccessToken)`): a fresh
  federation assertion, `{"oidcToken": ...}`; without a valid access token Azure DevOps
  answers 203 with a sign-in page (HTML), as it does for anonymous calls.
- Token lifetimes as the services document them (an `idToken` lives about 10 minutes, an
  Entra access token about an hour), scaled down by a test through `id_token_seconds` and
  `access_token_seconds`.
- GitHub Actions' ID-token service (`GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the
  runner's request token): a signed OIDC token for the requested audience.
- A TCP relay in front of ICA that can be switched off (ICA "briefly unreachable").
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from tests.support.oidc import ENTRA_TENANT, SigningKey, entra_claims, github_claims

ADO_ORG_ID = "0d3c0e1a-9999-4c2b-9d1e-00000000org1"
ADO_ISSUER = f"https://vstoken.dev.azure.com/{ADO_ORG_ID}"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
CLIENT_ID = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"  # the service connection's app registration
CONNECTION_SUBJECT = "sc://fabrikam/registry/ica-deploy-wif"
RUNNER_REQUEST_TOKEN = "runner-request-token-not-a-jwt"
SERVICE_CONNECTION_ID = "5b1d2e3f-6666-4c2b-9d1e-000connection"
JOB_ACCESS_TOKEN = "system-access-token-of-the-job"


class TokenService:
    def __init__(self, *, entra_key: SigningKey, github_key: SigningKey, scope: str) -> None:
        self.ado_key = SigningKey.rsa("ado-oidc")
        self.entra_key = entra_key
        self.github_key = github_key
        self.scope = scope
        self.github_claims: dict[str, Any] = {}
        self.hits: Counter[str] = Counter()
        self.seen_forms: list[dict[str, str]] = []
        self.id_token_seconds = 600  # Azure DevOps: about 10 minutes
        self.access_token_seconds = 3599  # Entra ID: about an hour
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if "/oidctoken" in self.path:
                    status, page = service._ado_oidc(self.path, self.headers)
                    if isinstance(page, str):  # Azure DevOps's sign-in page
                        data = page.encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "text/html; charset=utf-8")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self._send(status, page)
                    return
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                status, body = service._token(self.path, form, self.headers)
                self._send(status, body)

            def do_GET(self) -> None:
                status, body = service._github(self.path, self.headers)
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> TokenService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # Azure DevOps's side: the federation assertion AzureCLI@2 puts in `idToken`.
    def ado_assertion(self, subject: str = CONNECTION_SUBJECT) -> str:
        now = int(time.time())
        claims = {
            "iss": ADO_ISSUER,
            "sub": subject,
            "aud": EXCHANGE_AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + self.id_token_seconds,
        }
        return self.ado_key.sign(claims)

    def oidc_request_uri(self) -> str:
        """System.OidcRequestUri of a job (the plan's job-level oidctoken resource)."""
        return (
            f"{self.url}/fabrikam/registry/_apis/distributedtask/hubs/build/plans/plan-1/jobs/"
            "job-1/oidctoken"
        )

    def _ado_oidc(self, path: str, headers: Any) -> tuple[int, dict[str, Any] | str]:
        self.hits["ado_oidc"] += 1
        query = parse_qs(urlsplit(path).query)
        if headers.get("Authorization") != f"Bearer {JOB_ACCESS_TOKEN}":
            return 203, "<html><head><title>Azure DevOps Services | Sign In</title></head></html>"
        if query.get("api-version") != ["7.1-preview.1"]:
            return 400, {"message": "api-version 7.1-preview.1 expected"}
        if query.get("serviceConnectionId") != [SERVICE_CONNECTION_ID]:
            return 404, {"message": "service connection not found"}
        return 200, {"oidcToken": self.ado_assertion()}

    def github_request_url(self) -> str:
        # The runner's URL already has a query string; the audience is appended with '&'.
        return f"{self.url}/_apis/distributedtask/idtoken?api-version=2.0"

    def _token(self, path: str, form: dict[str, str], headers: Any) -> tuple[int, dict[str, Any]]:
        self.hits["entra"] += 1
        self.seen_forms.append(form)
        if path != f"/{ENTRA_TENANT}/oauth2/v2.0/token":
            return 404, {"error": "invalid_request", "error_description": "AADSTS90002: tenant"}
        if headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return 400, {"error": "invalid_request", "error_description": "form expected"}
        expected = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        }
        if any(form.get(key) != value for key, value in expected.items()):
            return 400, {"error": "invalid_client", "error_description": "AADSTS7000216: grant"}
        if form.get("scope") != self.scope:
            return 400, {"error": "invalid_scope", "error_description": "AADSTS70011: scope"}
        try:
            claims = jwt.decode(
                form.get("client_assertion", ""),
                self.ado_key.private.public_key(),
                algorithms=["RS256"],
                audience=EXCHANGE_AUDIENCE,
                issuer=ADO_ISSUER,
            )
        except jwt.ExpiredSignatureError:
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS700024: Client assertion is not within its valid "
                "time range.",
            }
        except jwt.PyJWTError:
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS700211: No matching federated identity record found",
            }
        if claims.get("sub") != CONNECTION_SUBJECT:
            return 401, {"error": "invalid_client", "error_description": "AADSTS700213: subject"}
        now = datetime.now(UTC)
        access = self.entra_key.sign(
            entra_claims(
                now,
                azp=CLIENT_ID,
                iat=int(now.timestamp()),
                nbf=int(now.timestamp()),
                exp=int(now.timestamp()) + self.access_token_seconds,
            )
        )
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.access_token_seconds,
            "access_token": access,
        }

    def _github(self, path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        self.hits["github"] += 1
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        if parts.path != "/_apis/distributedtask/idtoken":
            return 404, {"message": "not found"}
        if headers.get("Authorization") != f"bearer {RUNNER_REQUEST_TOKEN}":
            return 401, {"message": "bad request token"}
        audience = query.get("audience", [""])[0]
        claims = github_claims(datetime.now(UTC), aud=audience, **self.github_claims)
        return 200, {"count": 1, "value": self.github_key.sign(claims)}


class Relay:
    """A TCP relay to `target_port`; while `down`, connections are refused (closed at once)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self.refused = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                client.close()  # a reset: what a restarting server looks like
                continue
            threading.Thread(target=self._pipe_pair, args=(client,), daemon=True).start()

    def _pipe_pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
