"""Whom ICA trusts to sign bearer tokens, and what each signed identity may do.

Read from `ICA_OIDC_TRUST` (JSON) by `Settings`; documented in `docs/identity.md`. The
structure is one list of issuers, each with its audiences and the identities it vouches
for; an identity is a set of exact claim rules mapped to one role and a tenant scope.
Nothing here is derived from a token: algorithms, issuers and audiences are pinned.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from azdev_ica.auth.roles import Role

ENTRA_AUTHORITY = "https://login.microsoftonline.com"
ENTRA_V1_ISSUER = "https://sts.windows.net/{tid}/"
ENTRA_V2_ISSUER = "https://login.microsoftonline.com/{tid}/v2.0"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

# Asymmetric algorithms only: `none` and HS* can never be configured, so a token signed with
# a public key used as an HMAC secret has no algorithm to be verified with.
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# A claim rule: the token's claim must equal the value, or one of the values of a list.
# Numbers are compared by their decimal text (GitHub ids arrive as strings).
ClaimValue = Annotated[str, Field(min_length=1, max_length=400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _https_or_loopback(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/") if what == "authority" else url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        # Plain HTTP only to this machine (tests, a local mock provider).
        return url.rstrip("/") if what == "authority" else url
    raise ValueError(f"the {what} must be an https URL (http only on loopback): {url!r}")


class TrustedIdentity(_Strict):
    """One workload identity: claim rules that must all hold, and what it may do."""

    name: str
    claims: dict[str, ClaimValue | list[ClaimValue]] = Field(min_length=1)
    role: Role
    # Explicit on purpose: "*" for every tenant, otherwise the tenant codes. No default, so
    # a forgotten scope is a configuration error, not access to every country.
    tenants: Literal["*"] | list[str]
    # Optional: "*" (the default) for every stage, otherwise the stage names it reaches, e.g.
    # a development pipeline's identity: ["development", "test"].
    stages: Literal["*"] | list[str] = "*"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("an identity name is 1-63 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("claims", mode="before")
    @classmethod
    def _claims_as_text(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out: dict[object, object] = {}
        for key, rule in value.items():
            if isinstance(rule, list):
                out[key] = [_as_text(item) for item in rule]
            else:
                out[key] = _as_text(rule)
        return out

    @field_validator("claims")
    @classmethod
    def _no_empty_lists(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key, rule in value.items():
            if isinstance(rule, list) and not rule:
                raise ValueError(f"the rule for claim {key!r} lists no value")
        return value

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: Literal["*"] | list[str]) -> Literal["*"] | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError('an identity needs at least one tenant (or "*" for all)')
        return value

    def allowed(self, claim: str) -> frozenset[str]:
        rule = self.claims[claim]
        return frozenset(rule if isinstance(rule, list) else [rule])

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: Literal["*"] | list[str]) -> Literal["*"] | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError('an identity\'s stage scope names a stage (or "*" for every stage)')
        return value

    def tenant_scope(self) -> frozenset[str] | None:
        return None if self.tenants == "*" else frozenset(self.tenants)

    def stage_scope(self) -> frozenset[str] | None:
        return None if self.stages == "*" else frozenset(self.stages)


def _as_text(value: object) -> object:
    # Ids written as JSON numbers (repository_id: 123) compare as their text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class _IssuerBase(_Strict):
    name: str
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    # pydantic copies a mutable default per instance.
    algorithms: list[Algorithm] = Field(default=["RS256"], min_length=1)
    identities: list[TrustedIdentity] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("an issuer name is 1-63 letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _no_identity_shadows_another(self) -> _IssuerBase:
        """Refuse a looser identity that accepts every token a stricter one accepts, with
        the same role and (at least) its tenants: the stricter one's pins (ref, environment,
        job_workflow_ref) would then mean nothing, since either identity lets the token in."""
        for strict in self.identities:
            for loose in self.identities:
                if loose is strict or loose.role != strict.role:
                    continue
                if not _tenants_cover(loose, strict) or not accepts_all_of(loose, strict):
                    continue
                if strict.claims == loose.claims and loose.tenants == strict.tenants:
                    problem = "pin the same claims with the same role and tenants"
                else:
                    problem = (
                        f"{loose.name!r} (pins {', '.join(sorted(loose.claims))}) accepts "
                        f"every token {strict.name!r} (pins {', '.join(sorted(strict.claims))}) "
                        "accepts, with the same role and tenants, so the stricter pins mean "
                        "nothing"
                    )
                raise ValueError(
                    f"issuer {self.name!r}: identities {strict.name!r} and {loose.name!r} "
                    f"collide: {problem}; pin the looser one as strictly (or to other values), "
                    "or give it another role or other tenants"
                )
        return self


def _tenants_cover(loose: TrustedIdentity, strict: TrustedIdentity) -> bool:
    if loose.tenants == "*":
        return True
    return strict.tenants != "*" and set(strict.tenants) <= set(loose.tenants)


def accepts_all_of(loose: TrustedIdentity, strict: TrustedIdentity) -> bool:
    """Whether every token whose claims satisfy `strict` also satisfies `loose` (each claim
    `loose` pins, `strict` pins too, to values `loose` allows)."""
    return all(
        claim in strict.claims and strict.allowed(claim) <= loose.allowed(claim)
        for claim in loose.claims
    )


class EntraIssuer(_IssuerBase):
    """One Microsoft Entra ID tenant: its v1 and/or v2 issuer, app-only tokens."""

    kind: Literal["entra"]
    tenant_id: str
    versions: list[Literal["1.0", "2.0"]] = Field(default=["1.0", "2.0"], min_length=1)
    # Where the discovery documents are read; the issuers themselves stay the public ones.
    authority: str = ENTRA_AUTHORITY
    # People calling the API with their own Entra ID token (delegated, on the v2.0 issuer):
    # accepted when its `scp` holds one of these scopes, as the person linked to the token's
    # `oid` in this tenant (`ica user link LOGIN entra OID`), with that person's grants.
    # Empty (the default): a person's token is refused.
    user_scopes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("tenant_id")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        if not _GUID_RE.match(value):
            raise ValueError("tenant_id is the directory (tenant) GUID, not a domain name")
        return value.lower()

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        return _https_or_loopback(value, "authority")

    @model_validator(mode="after")
    def _identities_pin_an_object(self) -> EntraIssuer:
        for identity in self.identities:
            if "oid" not in identity.claims:
                raise ValueError(
                    f"Entra identity {identity.name!r} must pin 'oid' (the service principal's "
                    "or managed identity's object id)"
                )
            if "tid" in identity.claims and identity.allowed("tid") != {self.tenant_id}:
                raise ValueError(f"Entra identity {identity.name!r} names another tenant")
        return self

    def issuer_urls(self) -> dict[str, str]:
        """Token version → the exact `iss` value accepted for it."""
        template = {"1.0": ENTRA_V1_ISSUER, "2.0": ENTRA_V2_ISSUER}
        return {version: template[version].format(tid=self.tenant_id) for version in self.versions}

    def discovery_url(self, version: str) -> str:
        # v1 tokens are checked against the v1 metadata and v2 against v2 (they differ in
        # `issuer`; the keys are read from the document each names).
        path = "" if version == "1.0" else "/v2.0"
        return f"{self.authority}/{self.tenant_id}{path}/.well-known/openid-configuration"


class GitHubIssuer(_IssuerBase):
    """GitHub Actions OIDC (`permissions: id-token: write`), with a custom audience."""

    kind: Literal["github"]
    issuer: str = GITHUB_ISSUER
    discovery: str | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _https_or_loopback(value, "issuer")

    @field_validator("discovery")
    @classmethod
    def _discovery(cls, value: str | None) -> str | None:
        return None if value is None else _https_or_loopback(value, "discovery URL")

    @model_validator(mode="after")
    def _identities_pin_a_repository_id(self) -> GitHubIssuer:
        for identity in self.identities:
            if "repository_id" not in identity.claims:
                raise ValueError(
                    f"GitHub identity {identity.name!r} must pin 'repository_id': a repository "
                    "name can be deleted and re-created by someone else"
                )
            for repository_id in identity.allowed("repository_id"):
                if not repository_id.isdigit():
                    raise ValueError(
                        f"GitHub identity {identity.name!r}: repository_id is the numeric id"
                    )
        return self

    def discovery_url(self) -> str:
        return self.discovery or f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"


TrustedIssuer = Annotated[EntraIssuer | GitHubIssuer, Field(discriminator="kind")]


class OidcTrust(_Strict):
    """The whole `ICA_OIDC_TRUST` document. Empty (the default): no bearer JWT is accepted."""

    issuers: list[TrustedIssuer] = Field(default_factory=list)
    # Clock skew allowed on exp / nbf / iat, in seconds. Small on purpose.
    leeway_seconds: int = Field(default=60, ge=0, le=300)
    # How long a fetched key set is used before it is refreshed.
    jwks_ttl_seconds: int = Field(default=3600, ge=60, le=86_400)
    # At most one fetch per issuer in this many seconds, however many unknown `kid`s arrive.
    jwks_refetch_cooldown_seconds: int = Field(default=60, ge=1, le=3600)
    fetch_timeout_seconds: float = Field(default=5.0, gt=0, le=30)

    @model_validator(mode="after")
    def _unique(self) -> OidcTrust:
        names = [issuer.name for issuer in self.issuers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"issuer names must be unique: {', '.join(duplicates)}")
        seen: dict[str, str] = {}
        for issuer in self.issuers:
            urls = (
                list(issuer.issuer_urls().values())
                if isinstance(issuer, EntraIssuer)
                else [issuer.issuer]
            )
            for url in urls:
                if url in seen:
                    raise ValueError(f"issuers {seen[url]!r} and {issuer.name!r} both accept {url}")
                seen[url] = issuer.name
            idents = [identity.name for identity in issuer.identities]
            if len(set(idents)) != len(idents):
                raise ValueError(f"issuer {issuer.name!r}: identity names must be unique")
        return self
