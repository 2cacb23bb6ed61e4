"""OpenID Connect sign-in for people: authorization code flow with PKCE (S256), state and
nonce, the ID token verified against the provider's key set (issuer, audience, expiry).

The browser carries the pending sign-in (state, nonce, PKCE verifier, where to go next) in a
short-lived cookie sealed with AES-GCM under a key derived from the server secret: nothing
is stored server-side, any replica can finish the flow, and the verifier never leaves ICA
in clear. The caller of a failed step learns only that sign-in failed; the reason is logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from azdev_ica.auth.jwt_bearer import FetchError, KeyCache, TokenRejected, _key_fits, fetch_json
from azdev_ica.auth.principal import Grant
from azdev_ica.auth.roles import Role
from azdev_ica.auth.trust import _https_or_loopback
from azdev_ica.clock import Clock

log = logging.getLogger(__name__)

PENDING_COOKIE = "__Host-ica_oidc"
PENDING_TTL = timedelta(minutes=10)
_ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")


class GroupRole(BaseModel):
    """Members of `group` (a value of the groups claim) hold `role` for `tenants`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1, max_length=256)
    role: Role
    tenants: Literal["*"] | list[str] = "*"

    def grants(self) -> list[Grant]:
        if self.tenants == "*":
            return [Grant(self.role, None)]
        return [Grant(self.role, tenant) for tenant in self.tenants]


class OidcLoginConfig(BaseModel):
    """`ICA_OIDC_LOGIN`: the identity provider people sign in with (docs/identity.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretStr | None = None
    # Where the provider sends the browser back: https://<ICA host>/ui/auth/callback
    redirect_uri: str
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    # Which link the subject becomes (`entra` for Entra ID's object id, `oidc` otherwise)
    # and which claim is the subject (Entra: `oid`, stable across applications).
    provider: Literal["oidc", "entra"] = "oidc"
    subject_claim: str = "sub"
    login_claim: str = "email"
    name_claim: str = "name"
    groups_claim: str = "groups"
    group_roles: list[GroupRole] = Field(default_factory=list)
    # Create a person on first sign-in (linked to the subject). An existing person with the
    # same login is never linked automatically: an operator links them (`ica user link`).
    create_persons: bool = True
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = Field(default=60, ge=0, le=300)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _https_or_loopback(value, "issuer").rstrip("/")

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, value: str) -> str:
        return _https_or_loopback(value, "redirect_uri")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(_ALLOWED_ALGORITHMS)
        if unknown or not value:
            raise ValueError(f"algorithms must be among {', '.join(_ALLOWED_ALGORITHMS)}")
        return value

    def grants_for(self, groups: list[str]) -> tuple[Grant, ...]:
        held = set(groups)
        found: list[Grant] = []
        for mapping in self.group_roles:
            if mapping.group in held:
                found.extend(mapping.grants())
        return tuple(dict.fromkeys(found))


class LoginRefused(Exception):
    """An OpenID sign-in step failed; the message is for the log only."""


# --- the pending sign-in, sealed into a cookie --------------------------------------------


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    verifier: str
    next: str
    started: int  # Unix seconds

    @classmethod
    def start(cls, *, next_path: str, now: datetime) -> PendingLogin:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
            next=next_path,
            started=int(now.timestamp()),
        )

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _cookie_key(pepper: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"ica oidc pending login v1"
    ).derive(pepper)


def seal_pending(pending: PendingLogin, pepper: bytes) -> str:
    nonce = secrets.token_bytes(12)
    plain = json.dumps(pending.__dict__, separators=(",", ":")).encode()
    sealed = nonce + AESGCM(_cookie_key(pepper)).encrypt(nonce, plain, PENDING_COOKIE.encode())
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def open_pending(value: str | None, pepper: bytes, now: datetime) -> PendingLogin:
    if not value or len(value) > 4096:
        raise LoginRefused("no pending sign-in cookie")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        plain = AESGCM(_cookie_key(pepper)).decrypt(raw[:12], raw[12:], PENDING_COOKIE.encode())
        pending = PendingLogin(**json.loads(plain))
    except (ValueError, TypeError, InvalidTag):
        raise LoginRefused("the pending sign-in cookie does not open") from None
    age = now.timestamp() - pending.started
    if not 0 <= age <= PENDING_TTL.total_seconds():
        raise LoginRefused("the pending sign-in has expired")
    return pending


# --- the provider ---------------------------------------------------------------------------

Post = Callable[[str, dict[str, str], tuple[str, str] | None, float], Any]


def post_form(url: str, form: dict[str, str], auth: tuple[str, str] | None, timeout: float) -> Any:
    """POST a form to the token endpoint: no redirects, explicit timeout, JSON answer."""
    import httpx2

    try:
        with httpx2.Client(timeout=timeout, follow_redirects=False, auth=auth) as client:
            response = client.post(url, data=form, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise LoginRefused(f"POST {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise LoginRefused(f"POST {url}: HTTP {response.status_code} {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise LoginRefused(f"POST {url}: not JSON") from None


@dataclass(frozen=True)
class VerifiedLogin:
    subject: str
    claims: dict[str, Any]
    next: str


class OidcLoginClient:
    """One configured provider: discovery (cached), the authorization request, the code
    exchange and the ID token's verification."""

    def __init__(
        self,
        config: OidcLoginConfig,
        *,
        clock: Clock,
        fetch: Callable[[str, float], Any] = fetch_json,
        post: Post = post_form,
    ) -> None:
        self.config = config
        self._clock = clock
        self._fetch = fetch
        self._post = post
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        discovery_url = config.issuer + "/.well-known/openid-configuration"
        self._keys = KeyCache(
            issuer=config.issuer,
            discovery_url=discovery_url,
            algorithms=config.algorithms,
            clock=clock,
            fetch=fetch,
            ttl=timedelta(hours=1),
            cooldown=timedelta(seconds=60),
            timeout=config.timeout_seconds,
        )
        self._discovery_url = discovery_url

    def _endpoints(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery is None:
                try:
                    document = self._fetch(self._discovery_url, self.config.timeout_seconds)
                except FetchError as exc:
                    raise LoginRefused(str(exc)) from None
                if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
                    raise LoginRefused(f"{self._discovery_url}: not this issuer's document")
                for name in ("authorization_endpoint", "token_endpoint"):
                    value = document.get(name)
                    if not isinstance(value, str):
                        raise LoginRefused(f"{self._discovery_url}: no {name}")
                    _https_or_loopback(value, name)
                self._discovery = document
            return self._discovery

    def authorization_url(self, pending: PendingLogin) -> str:
        endpoint = str(self._endpoints()["authorization_endpoint"])
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pending.challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def complete(self, *, pending: PendingLogin, code: str, state: str) -> VerifiedLogin:
        """Check the state, exchange the code (with the PKCE verifier), verify the ID token."""
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise LoginRefused("the state does not match the pending sign-in")
        if not code or len(code) > 2048:
            raise LoginRefused("no authorization code")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": pending.verifier,
        }
        auth = None
        if self.config.client_secret is not None:
            auth = (self.config.client_id, self.config.client_secret.get_secret_value())
        else:
            form["client_id"] = self.config.client_id
        answer = self._post(
            str(self._endpoints()["token_endpoint"]), form, auth, self.config.timeout_seconds
        )
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise LoginRefused("the token answer has no id_token")
        claims = self.verify_id_token(id_token, nonce=pending.nonce)
        subject = claims.get(self.config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise LoginRefused(f"the ID token has no {self.config.subject_claim}")
        return VerifiedLogin(subject=subject, claims=claims, next=pending.next)

    def verify_id_token(self, token: str, *, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise LoginRefused(f"ID token header: {exc}") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if algorithm not in self.config.algorithms or not isinstance(kid, str):
            raise LoginRefused(f"ID token algorithm {algorithm!r} or key id not accepted")
        try:
            key = self._keys.key(kid)
        except TokenRejected as exc:
            raise LoginRefused(str(exc)) from None
        except Exception as exc:  # KeysUnavailable: the provider's keys cannot be read
            raise LoginRefused(f"{type(exc).__name__}: {exc}") from None
        if not _key_fits(algorithm, key):
            raise LoginRefused("the key does not fit the algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.config.client_id,
                issuer=self.config.issuer,
                # Times are checked below against the injected clock.
                options={
                    "require": ["iss", "aud", "exp", "iat", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise LoginRefused(f"ID token: {exc}") from None
        now = self._clock.now().timestamp()
        leeway = self.config.leeway_seconds
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or now > exp + leeway:
            raise LoginRefused("the ID token has expired")
        if not isinstance(iat, int | float) or iat > now + leeway:
            raise LoginRefused("the ID token was issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + leeway):
            raise LoginRefused("the ID token is not valid yet")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise LoginRefused("the ID token names other audiences and another azp")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise LoginRefused("the nonce does not match the pending sign-in")
        return claims

    def groups(self, claims: dict[str, Any]) -> list[str]:
        value = claims.get(self.config.groups_claim)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [item for item in value if isinstance(item, str)]
        return []
