"""A real OpenID provider's public side on loopback: discovery documents and JWK sets.

`OidcServer` is a stdlib HTTP server in a thread. Tests register issuers on it (an Entra
tenant's v1 and v2 documents, GitHub's), sign tokens with keys generated in the test, count
the key-set fetches, rotate keys, and make the server fail on demand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from azdev_ica.auth.trust import ENTRA_V1_ISSUER, ENTRA_V2_ISSUER, GITHUB_ISSUER

ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0b7e7c44-0c55-4f5c-9d1a-6f0c4e3b8a21"
APP_ID = "3f1d8a6e-2b4c-4e8f-9a1b-7c6d5e4f3a2b"
APP_URI = f"api://{APP_ID}"
SP_OID = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
GITHUB_AUDIENCE = "https://ica.example"


@dataclass
class SigningKey:
    kid: str
    private: Any
    algorithm: str

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        algorithm = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
        data.update(kid=self.kid, use="sig")
        return data

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        algorithm = headers.pop("alg", self.algorithm)
        return jwt.encode(claims, self.private, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An `alg: none` token (PyJWT will not make one with a key in play)."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def hmac_with_public_key(claims: dict[str, Any], key: SigningKey) -> str:
    """The classic confusion attack: HS256 with the issuer's *public* key as the secret."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(claims).encode())
    mac = hmac.new(key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


@dataclass
class Issuer:
    """One issuer served by the test server: its `iss`, its documents' paths, its keys."""

    iss: str
    discovery_path: str
    jwks_path: str
    keys: list[SigningKey] = field(default_factory=list)
    # When set, served as the key set instead of `keys` (malformed or unsuitable entries).
    raw_keys: list[dict[str, Any]] | None = None


class OidcServer:
    def __init__(self) -> None:
        self.issuers: dict[str, Issuer] = {}
        self.hits: Counter[str] = Counter()
        self.failing = False
        self.discovery_overrides: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server._answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> OidcServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def add(self, iss: str, prefix: str, keys: list[SigningKey]) -> Issuer:
        issuer = Issuer(
            iss=iss,
            discovery_path=f"{prefix}/.well-known/openid-configuration",
            jwks_path=f"{prefix}/keys",
            keys=list(keys),
        )
        self.issuers[iss] = issuer
        return issuer

    def add_entra(self, tenant: str, keys: list[SigningKey]) -> tuple[Issuer, Issuer]:
        # The paths Entra uses under the authority; the `issuer` values are the real ones.
        v1 = self.add(ENTRA_V1_ISSUER.format(tid=tenant), f"/{tenant}", keys)
        v2 = self.add(ENTRA_V2_ISSUER.format(tid=tenant), f"/{tenant}/v2.0", keys)
        return v1, v2

    def add_github(self, keys: list[SigningKey]) -> Issuer:
        return self.add(GITHUB_ISSUER, "/github", keys)

    def github_discovery(self) -> str:
        return f"{self.base_url}/github/.well-known/openid-configuration"

    def jwks_fetches(self, iss: str) -> int:
        return self.hits[self.issuers[iss].jwks_path]

    def _answer(self, path: str) -> tuple[int, Any]:
        with self._lock:
            self.hits[path] += 1
            if self.failing:
                return 503, {"error": "temporarily_unavailable"}
            for issuer in self.issuers.values():
                if path == issuer.discovery_path:
                    document = {
                        "issuer": issuer.iss,
                        "jwks_uri": self.base_url + issuer.jwks_path,
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                    document.update(self.discovery_overrides.get(issuer.iss, {}))
                    return 200, document
                if path == issuer.jwks_path:
                    if issuer.raw_keys is not None:
                        return 200, {"keys": issuer.raw_keys}
                    return 200, {"keys": [key.jwk() for key in issuer.keys]}
        return 404, {"error": "not_found"}


def ts(at: datetime) -> int:
    return int(at.timestamp())


def entra_claims(now: datetime, *, version: str = "2.0", **overrides: Any) -> dict[str, Any]:
    """An app-only Entra access token's claims, as a pipeline's service principal gets it."""
    tenant = overrides.pop("tenant", ENTRA_TENANT)
    template = ENTRA_V2_ISSUER if version == "2.0" else ENTRA_V1_ISSUER
    claims: dict[str, Any] = {
        "aud": APP_ID if version == "2.0" else APP_URI,
        "iss": template.format(tid=tenant),
        "iat": ts(now) - 60,
        "nbf": ts(now) - 60,
        "exp": ts(now) + 3600,
        "tid": tenant,
        "oid": SP_OID,
        "sub": SP_OID,
        "ver": version,
        "idtyp": "app",
        "roles": ["Deploy.Gate"],
        ("azp" if version == "2.0" else "appid"): "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d",
    }
    claims.update(overrides)
    return claims


def github_claims(now: datetime, **overrides: Any) -> dict[str, Any]:
    """A GitHub Actions OIDC token's claims for a deploy job of `pacific/farmer-registry`."""
    claims: dict[str, Any] = {
        "jti": "0c6f3f3e-6b1d-4a57-9d7e-1e7b7a6c5d4f",
        "sub": "repo:pacific/farmer-registry:environment:production",
        "aud": GITHUB_AUDIENCE,
        "iss": GITHUB_ISSUER,
        "iat": ts(now) - 30,
        "nbf": ts(now) - 30,
        "exp": ts(now) + 300,
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "environment": "production",
        "repository": "pacific/farmer-registry",
        "repository_id": "123456789",
        "repository_owner": "pacific",
        "repository_owner_id": "987654",
        "job_workflow_ref": "pacific/automation/.github/workflows/deploy.yml@refs/heads/main",
        "workflow_ref": "pacific/farmer-registry/.github/workflows/release.yml@refs/heads/main",
        "event_name": "push",
        "run_id": "9876543210",
        "run_attempt": "1",
        "sha": "a" * 40,
        "actor": "mele",
        "actor_id": "5550001",
        "runner_environment": "github-hosted",
    }
    claims.update(overrides)
    return claims
