"""Bearer JWTs from pipelines (Microsoft Entra ID and GitHub Actions OIDC), and from people
with a delegated Entra ID token when the issuer accepts them (`user_scopes`).

A token is accepted when, in this order: its `iss` is one configured exactly; its header
names a pinned asymmetric algorithm and a `kid` found in that issuer's key set (read from
the issuer's OpenID discovery document); its signature verifies; its `aud` is one of the
issuer's audiences; `exp`, `iat` (and `nbf` when present) hold against the injected clock
with a small leeway; the provider's own checks pass (Entra: `tid` is the configured tenant,
an app-only token with an `oid`; GitHub: a `repository_id`); and one configured identity's
claim rules all match. The first failures are a 401, the last (a valid token nobody mapped)
a 403. The caller learns nothing more; the precise reason is logged here.

Key sets are cached per issuer for `jwks_ttl_seconds`. An unknown `kid` triggers a refetch,
but at most one fetch per issuer per `jwks_refetch_cooldown_seconds`, so a flood of made-up
key ids cannot turn ICA into a load generator against the identity provider. When a refresh
fails, the last good key set stays in use.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from azdev_ica.auth.principal import PIPELINE, Principal
from azdev_ica.auth.trust import EntraIssuer, GitHubIssuer, OidcTrust, TrustedIdentity
from azdev_ica.clock import Clock

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# Claims kept on the principal for later decisions (the requester of a run is GitHub's
# `actor_id`); all are ids or names, none is a secret.
_KEPT_CLAIMS = {
    "entra": ("iss", "ver", "tid", "oid", "appid", "azp"),
    "github": (
        "iss",
        "repository_id",
        "repository",
        "repository_owner_id",
        "ref",
        "environment",
        "job_workflow_ref",
        "workflow_ref",
        "event_name",
        "run_id",
        "run_attempt",
        "sha",
        "actor_id",
        "actor",
    ),
}


@dataclass(frozen=True)
class EntraUser:
    """A person's delegated Entra ID token, verified: the caller maps `oid` (in `tenant_id`)
    to the person linked to it (`api/deps.py`), who acts with their own grants."""

    issuer_name: str
    tenant_id: str
    oid: str


class TokenRejected(Exception):
    """The token is not valid (401). The message is for the server log only."""


class IdentityNotAuthorised(Exception):
    """The token is valid but maps to no configured identity (403). For the log only."""


class KeysUnavailable(Exception):
    """No key set could ever be read for the token's issuer (503). For the log only."""


class FetchError(Exception):
    """A discovery document or key set could not be read."""


Fetch = Callable[[str, float], Any]


def looks_like_jwt(value: str) -> bool:
    """Three dot-separated base64url parts: a JWS compact token (API keys have no dots)."""
    return len(value) <= MAX_TOKEN_CHARS and bool(_JWT_RE.match(value))


def fetch_json(url: str, timeout: float) -> Any:
    """GET a JSON document: no redirects, explicit timeout, bounded size."""
    import httpx2

    try:
        with (
            httpx2.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"GET {url}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise FetchError(f"GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx2.HTTPError as exc:
        raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
    try:
        return json.loads(bytes(body))
    except ValueError:
        raise FetchError(f"GET {url}: not JSON") from None


def _url_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS


def _key_fits(algorithm: str, key: Any) -> bool:
    """Whether the key's type is the one the (pinned) algorithm needs."""
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    curves = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
    curve = curves.get(algorithm)
    return (
        curve is not None
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, curve)
    )


class KeyCache:
    """The key set of one issuer: fetched through discovery, cached, refreshed with a cooldown."""

    def __init__(
        self,
        *,
        issuer: str,
        discovery_url: str,
        algorithms: list[str],
        clock: Clock,
        fetch: Fetch,
        ttl: timedelta,
        cooldown: timedelta,
        timeout: float,
    ) -> None:
        self.issuer = issuer
        self.discovery_url = discovery_url
        self._algorithms = frozenset(algorithms)
        self._clock = clock
        self._fetch = fetch
        self._ttl = ttl
        self._cooldown = cooldown
        self._timeout = timeout
        # One lock per issuer: concurrent requests that need a refresh wait for the one
        # fetch in flight instead of each starting their own.
        self._lock = threading.Lock()
        self._keys: dict[str, Any] | None = None
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None

    def key(self, kid: str) -> Any:
        """The public key named `kid`; TokenRejected when unknown, KeysUnavailable when none."""
        with self._lock:
            now = self._clock.now()
            if self._keys is None or self._expired(now) or kid not in self._keys:
                self._refresh_unless_cooling(now)
            if self._keys is None:
                raise KeysUnavailable(f"no key set for {self.issuer} could be read yet")
            found = self._keys.get(kid)
        if found is None:
            raise TokenRejected(f"unknown key id {kid!r} for {self.issuer}")
        return found

    def _expired(self, now: datetime) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self._ttl

    def _refresh_unless_cooling(self, now: datetime) -> None:
        if self._attempted_at is not None:
            since = now - self._attempted_at
            # A clock that went backwards (since < 0) does not block refreshes for ever.
            if timedelta(0) <= since < self._cooldown:
                return
        self._attempted_at = now
        try:
            keys = self._load()
        except FetchError as exc:
            kept = "keeping the previous key set" if self._keys is not None else "no key set"
            log.warning("key set refresh for %s failed (%s): %s", self.issuer, kept, exc)
            return
        self._keys = keys
        self._fetched_at = now

    def _load(self) -> dict[str, Any]:
        discovery = self._fetch(self.discovery_url, self._timeout)
        if not isinstance(discovery, dict):
            raise FetchError(f"{self.discovery_url}: not a discovery document")
        if discovery.get("issuer") != self.issuer:
            # The document must speak for the issuer we trust (OpenID Discovery §4.3).
            raise FetchError(f"{self.discovery_url}: names issuer {discovery.get('issuer')!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _url_allowed(jwks_uri):
            raise FetchError(f"{self.discovery_url}: no usable jwks_uri")
        document = self._fetch(jwks_uri, self._timeout)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise FetchError(f"{jwks_uri}: not a JWK set")
        keys: dict[str, Any] = {}
        for entry in entries:
            parsed = self._parse_key(entry)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        if not keys:
            raise FetchError(f"{jwks_uri}: no usable signing key")
        return keys

    def _parse_key(self, entry: Any) -> tuple[str, Any] | None:
        if not isinstance(entry, dict):
            return None
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("kty") not in ("RSA", "EC"):
            return None
        if entry.get("use", "sig") != "sig":
            return None
        alg = entry.get("alg")
        if alg is not None and alg not in self._algorithms:
            return None
        try:
            return kid, jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class _Accepts:
    """What one exact `iss` value maps to."""

    config: EntraIssuer | GitHubIssuer
    version: str | None  # the Entra token version of this issuer URL
    keys: KeyCache


class JwtVerifier:
    """Turns a bearer JWT into a pipeline Principal, or raises one of the refusals above."""

    def __init__(self, trust: OidcTrust, *, clock: Clock, fetch: Fetch = fetch_json) -> None:
        self._trust = trust
        self._clock = clock
        self._leeway = timedelta(seconds=trust.leeway_seconds)
        self._by_issuer: dict[str, _Accepts] = {}
        for config in trust.issuers:
            if isinstance(config, EntraIssuer):
                for version, url in config.issuer_urls().items():
                    self._add(config, url, config.discovery_url(version), version, fetch)
            else:
                self._add(config, config.issuer, config.discovery_url(), None, fetch)

    def _add(
        self,
        config: EntraIssuer | GitHubIssuer,
        issuer: str,
        discovery_url: str,
        version: str | None,
        fetch: Fetch,
    ) -> None:
        keys = KeyCache(
            issuer=issuer,
            discovery_url=discovery_url,
            algorithms=list(config.algorithms),
            clock=self._clock,
            fetch=fetch,
            ttl=timedelta(seconds=self._trust.jwks_ttl_seconds),
            cooldown=timedelta(seconds=self._trust.jwks_refetch_cooldown_seconds),
            timeout=self._trust.fetch_timeout_seconds,
        )
        self._by_issuer[issuer] = _Accepts(config=config, version=version, keys=keys)

    @property
    def enabled(self) -> bool:
        return bool(self._by_issuer)

    def verify(self, token: str) -> Principal | EntraUser:
        if not looks_like_jwt(token):
            raise TokenRejected("not a compact JWS")
        header, unverified = _unverified_parts(token)
        issuer = unverified.get("iss")
        accepts = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if accepts is None:
            raise TokenRejected(f"unknown issuer {str(issuer)[:200]!r}")
        config = accepts.config
        algorithm = header.get("alg")
        if algorithm not in config.algorithms:
            raise TokenRejected(f"algorithm {str(algorithm)[:20]!r} is not allowed for {issuer}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise TokenRejected("no key id in the header")
        key = accepts.keys.key(kid)
        if not _key_fits(algorithm, key):
            raise TokenRejected(f"key {kid!r} does not fit algorithm {algorithm}")
        claims = self._decode(token, key, accepts)
        self._check_times(claims)
        if isinstance(config, EntraIssuer):
            principal_id = self._check_entra(claims, config, accepts.version)
            if principal_id is None:
                return EntraUser(config.name, config.tenant_id, str(claims["oid"]))
        else:
            principal_id = self._check_github(claims)
        identity = _first_match(config.identities, claims)
        if identity is None:
            raise IdentityNotAuthorised(f"{principal_id} from {config.name} maps to no identity")
        kept = sorted(
            (name, text)
            for name in _KEPT_CLAIMS[config.kind]
            if (text := _claim_text(claims.get(name))) is not None
        )
        return Principal.with_role(
            kind=PIPELINE,
            id=principal_id,
            name=f"{config.name}/{identity.name}",
            role=identity.role,
            tenants=identity.tenant_scope(),
            stages=identity.stage_scope(),
            claims=tuple(kept),
        )

    def _decode(self, token: str, key: Any, accepts: _Accepts) -> dict[str, Any]:
        config = accepts.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(config.algorithms),
                audience=list(config.audiences),
                issuer=accepts.keys.issuer,
                # Time claims are checked below against the injected clock.
                options={
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["iss", "aud", "exp", "iat"],
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"audience not accepted by {config.name}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenRejected(f"undecodable token: {type(exc).__name__}") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now().timestamp()
        leeway = self._leeway.total_seconds()
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None and name == "nbf":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TokenRejected(f"{name} is not a number")
            times[name] = float(value)
        if times["exp"] <= now - leeway:
            raise TokenRejected("expired")
        if "nbf" in times and times["nbf"] > now + leeway:
            raise TokenRejected("not yet valid (nbf)")
        if times["iat"] > now + leeway:
            raise TokenRejected("issued in the future (iat)")

    def _check_entra(
        self, claims: Mapping[str, Any], config: EntraIssuer, version: str | None
    ) -> str | None:
        """The pipeline's principal id for an application token; None for a person's
        delegated token that the issuer accepts (`user_scopes`, v2.0 only)."""
        tid = claims.get("tid")
        if not isinstance(tid, str) or tid.lower() != config.tenant_id:
            raise TokenRejected(f"tid {str(tid)[:60]!r} is not tenant {config.tenant_id}")
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid or len(oid) > 64:
            raise TokenRejected("no oid")
        ver = claims.get("ver")
        if ver is not None and ver != version:
            raise TokenRejected(f"ver {str(ver)[:10]!r} does not match the issuer ({version})")
        # A pipeline is an application: a delegated (user) token has `scp`, and an
        # optional `idtyp` says which it is. A person's token never becomes a pipeline.
        if "scp" in claims or claims.get("idtyp", "app") != "app":
            if not config.user_scopes:
                raise TokenRejected("a delegated (user) token, not an application token")
            if version != "2.0":
                raise TokenRejected("a delegated token is accepted from the v2.0 issuer only")
            scopes = claims.get("scp")
            if not isinstance(scopes, str) or not set(scopes.split()) & set(config.user_scopes):
                raise TokenRejected("a delegated token without an accepted scope")
            if claims.get("idtyp", "user") != "user":
                raise TokenRejected("a delegated token whose idtyp is not user")
            return None
        return f"entra:{config.tenant_id}:{oid.lower()}"

    def _check_github(self, claims: Mapping[str, Any]) -> str:
        repository_id = _claim_text(claims.get("repository_id"))
        if repository_id is None or not repository_id.isdigit():
            raise TokenRejected("no repository_id")
        if not isinstance(claims.get("sub"), str):
            raise TokenRejected("no sub")
        return f"github:{repository_id}"


def _b64_json(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRejected("undecodable header or payload") from None
    if not isinstance(value, dict):
        raise TokenRejected("header or payload is not a JSON object")
    return value


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    # Read only to choose the issuer and the key; every value is verified afterwards.
    header_part, payload_part, _ = token.split(".")
    return _b64_json(header_part), _b64_json(payload_part)


def _claim_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _rule_holds(identity: TrustedIdentity, name: str, value: Any) -> bool:
    allowed = identity.allowed(name)
    if isinstance(value, list):
        # A list claim (Entra `roles`) holds when it contains one of the allowed values.
        return any(_claim_text(item) in allowed for item in value)
    text = _claim_text(value)
    return text is not None and text in allowed


def _first_match(
    identities: list[TrustedIdentity], claims: Mapping[str, Any]
) -> TrustedIdentity | None:
    for identity in identities:
        if all(
            name in claims and _rule_holds(identity, name, claims[name]) for name in identity.claims
        ):
            return identity
    return None
