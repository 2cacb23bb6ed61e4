"""Bearer JWTs from pipelines, checked against real keys served by a local OpenID provider.

Every refusal here is a token a real attacker could send: no signature, an HMAC keyed with
the public key, someone else's issuer, tenant, audience or repository, stale or future
times, made-up key ids by the thousand.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from azdev_ica.auth.jwt_bearer import (
    IdentityNotAuthorised,
    JwtVerifier,
    KeysUnavailable,
    TokenRejected,
    looks_like_jwt,
)
from azdev_ica.auth.principal import PIPELINE
from azdev_ica.auth.roles import Role
from azdev_ica.auth.trust import ENTRA_V1_ISSUER, ENTRA_V2_ISSUER, GITHUB_ISSUER, OidcTrust
from azdev_ica.settings import Settings
from tests.support.oidc import (
    APP_ID,
    APP_URI,
    ENTRA_TENANT,
    GITHUB_AUDIENCE,
    OTHER_TENANT,
    SP_OID,
    OidcServer,
    SigningKey,
    b64,
    entra_claims,
    github_claims,
    hmac_with_public_key,
    unsigned,
)

V1 = ENTRA_V1_ISSUER.format(tid=ENTRA_TENANT)
V2 = ENTRA_V2_ISSUER.format(tid=ENTRA_TENANT)
REPO_ID = "123456789"
DEPLOY_WORKFLOW = "pacific/automation/.github/workflows/deploy.yml@refs/heads/main"
COOLDOWN = 60
TTL = 3600
LEEWAY = 60


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return SigningKey.rsa("k1")


@pytest.fixture(scope="session")
def next_key() -> SigningKey:
    return SigningKey.rsa("k2")


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    return SigningKey.ec("e1")


@pytest.fixture(scope="session")
def attacker() -> SigningKey:
    return SigningKey.rsa("k1")  # same kid as the real key, different key


@pytest.fixture
def server(key: SigningKey, ec_key: SigningKey) -> Iterator[OidcServer]:
    oidc = OidcServer().start()
    oidc.add_entra(ENTRA_TENANT, [key])
    oidc.add_entra(OTHER_TENANT, [key])  # another tenant, served by the same "Microsoft"
    oidc.add_github([key, ec_key])
    yield oidc
    oidc.stop()


def trust_document(server: OidcServer, **changes: Any) -> dict[str, Any]:
    entra: dict[str, Any] = {
        "kind": "entra",
        "name": "contoso",
        "tenant_id": ENTRA_TENANT,
        "authority": server.base_url,
        "audiences": [APP_ID, APP_URI],
        "identities": [
            {
                "name": "deploy-sp",
                "claims": {"oid": SP_OID},
                "role": "azdev_devops",
                "tenants": ["to"],
            }
        ],
    }
    github: dict[str, Any] = {
        "kind": "github",
        "name": "github",
        "discovery": server.github_discovery(),
        "audiences": [GITHUB_AUDIENCE],
        "identities": [
            {
                "name": "farmer-registry-prod",
                "claims": {
                    "repository_id": int(REPO_ID),
                    "ref": "refs/heads/main",
                    "environment": "production",
                    "job_workflow_ref": DEPLOY_WORKFLOW,
                },
                "role": "azdev_devops",
                "tenants": ["to", "ws"],
            }
        ],
    }
    entra.update(changes.pop("entra", {}))
    github.update(changes.pop("github", {}))
    return {
        "issuers": [entra, github],
        "leeway_seconds": LEEWAY,
        "jwks_ttl_seconds": TTL,
        "jwks_refetch_cooldown_seconds": COOLDOWN,
        "fetch_timeout_seconds": 5,
        **changes,
    }


def make_verifier(server: OidcServer, clock: Any, **changes: Any) -> JwtVerifier:
    trust = OidcTrust.model_validate(trust_document(server, **changes))
    return JwtVerifier(trust, clock=clock)


@pytest.fixture
def verifier(server: OidcServer, clock: Any) -> JwtVerifier:
    return make_verifier(server, clock)


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(token)
    return str(caught.value)


class TestGitHubActions:
    def test_a_deploy_job_of_the_repository_is_a_pipeline_with_its_role_and_tenants(
        self, verifier, key, clock
    ):
        principal = verifier.verify(key.sign(github_claims(clock.now())))
        assert principal.kind == PIPELINE
        assert principal.id == f"github:{REPO_ID}"
        assert principal.name == "github/farmer-registry-prod"
        assert principal.role is Role.DEVOPS
        assert principal.tenants == frozenset({"to", "ws"})
        assert principal.is_person is False
        # The requester of the run, for the approval rules: taken from the signed token.
        assert principal.claim("actor_id") == "5550001"
        assert principal.claim("run_id") == "9876543210"
        assert principal.claim("jti") is None  # only the listed, useful claims are kept

    def test_an_ec_key_verifies_when_the_issuer_allows_es256(self, server, clock, ec_key):
        verifier = make_verifier(server, clock, github={"algorithms": ["RS256", "ES256"]})
        principal = verifier.verify(ec_key.sign(github_claims(clock.now())))
        assert principal.id == f"github:{REPO_ID}"

    def test_es256_is_refused_where_only_rs256_is_pinned(self, verifier, clock, ec_key):
        assert "not allowed" in refused(verifier, ec_key.sign(github_claims(clock.now())))

    def test_an_rs256_header_on_an_ec_key_is_refused(self, server, clock, ec_key, key):
        verifier = make_verifier(server, clock, github={"algorithms": ["RS256", "ES256"]})
        # Signed with the RSA key, but naming the EC key's kid.
        token = key.sign(github_claims(clock.now()), kid=ec_key.kid)
        assert "does not fit" in refused(verifier, token)

    def test_another_repository_with_the_same_name_is_not_authorised(self, verifier, key, clock):
        # The name was deleted and re-created by someone else: same name, new id.
        token = key.sign(github_claims(clock.now(), repository_id="555000111"))
        with pytest.raises(IdentityNotAuthorised):
            verifier.verify(token)

    @pytest.mark.parametrize(
        ("claim", "value"),
        [
            ("ref", "refs/heads/feature/x"),
            ("ref", "refs/pull/7/merge"),
            ("environment", "staging"),
            ("job_workflow_ref", "pacific/farmer-registry/.github/workflows/deploy.yml@main"),
            ("job_workflow_ref", "pacific/automation/.github/workflows/deploy.yml@refs/heads/x"),
        ],
    )
    def test_a_claim_rule_that_does_not_hold_is_not_authorised(
        self, verifier, key, clock, claim, value
    ):
        with pytest.raises(IdentityNotAuthorised):
            verifier.verify(key.sign(github_claims(clock.now(), **{claim: value})))

    @pytest.mark.parametrize("claim", ["environment", "job_workflow_ref", "ref"])
    def test_a_missing_ruled_claim_is_not_authorised(self, verifier, key, clock, claim):
        claims = github_claims(clock.now())
        del claims[claim]
        with pytest.raises(IdentityNotAuthorised):
            verifier.verify(key.sign(claims))

    @pytest.mark.parametrize("claim", ["repository_id", "sub"])
    def test_a_token_without_the_identity_claims_is_refused(self, verifier, key, clock, claim):
        claims = github_claims(clock.now())
        del claims[claim]
        refused(verifier, key.sign(claims))

    def test_the_default_audience_is_refused(self, verifier, key, clock):
        # Without `audience:` a GitHub token names the owner's URL: meant for anyone.
        token = key.sign(github_claims(clock.now(), aud="https://github.com/pacific"))
        assert "audience" in refused(verifier, token)

    def test_rules_may_list_several_values_and_the_first_identity_that_matches_wins(
        self, server, clock, key
    ):
        identities = [
            {
                "name": "releases",
                "claims": {
                    "repository_id": REPO_ID,
                    "ref": ["refs/tags/v1.0.0", "refs/tags/v1.0.1"],
                },
                "role": "azdev_devops",
                "tenants": "*",
            },
            {
                "name": "anything-else",
                "claims": {"repository_id": REPO_ID},
                "role": "azdev_auditor",
                "tenants": ["ws"],
            },
        ]
        verifier = make_verifier(server, clock, github={"identities": identities})
        tag = verifier.verify(key.sign(github_claims(clock.now(), ref="refs/tags/v1.0.1")))
        assert (tag.role, tag.tenants) == (Role.DEVOPS, None)
        branch = verifier.verify(key.sign(github_claims(clock.now(), ref="refs/heads/dev")))
        assert (branch.role, branch.tenants) == (Role.AUDITOR, frozenset({"ws"}))


class TestEntra:
    @pytest.mark.parametrize(("version", "audience"), [("1.0", APP_URI), ("2.0", APP_ID)])
    def test_v1_and_v2_tokens_with_either_audience_form(
        self, verifier, key, clock, version, audience
    ):
        token = key.sign(entra_claims(clock.now(), version=version, aud=audience))
        principal = verifier.verify(token)
        assert principal.id == f"entra:{ENTRA_TENANT}:{SP_OID}"
        assert principal.kind == PIPELINE
        assert principal.role is Role.DEVOPS
        assert principal.tenants == frozenset({"to"})
        assert principal.claim("tid") == ENTRA_TENANT

    def test_a_token_of_another_tenant_is_refused(self, verifier, key, clock):
        # Signed by the same (Microsoft) keys, issued by a tenant ICA does not trust.
        token = key.sign(entra_claims(clock.now(), tenant=OTHER_TENANT))
        assert "unknown issuer" in refused(verifier, token)

    def test_a_tid_that_contradicts_the_issuer_is_refused(self, verifier, key, clock):
        token = key.sign(entra_claims(clock.now(), tid=OTHER_TENANT))
        assert "tid" in refused(verifier, token)

    def test_a_version_that_contradicts_the_issuer_is_refused(self, verifier, key, clock):
        token = key.sign(entra_claims(clock.now(), version="2.0", ver="1.0"))
        assert "ver" in refused(verifier, token)

    def test_only_the_configured_versions_are_accepted(self, server, clock, key):
        verifier = make_verifier(server, clock, entra={"versions": ["2.0"]})
        token = key.sign(entra_claims(clock.now(), version="1.0"))
        assert "unknown issuer" in refused(verifier, token)

    @pytest.mark.parametrize("extra", [{"scp": "user_impersonation"}, {"idtyp": "user"}])
    def test_a_persons_delegated_token_is_never_a_pipeline(self, verifier, key, clock, extra):
        token = key.sign(entra_claims(clock.now(), **extra))
        assert "delegated" in refused(verifier, token)

    def test_an_unmapped_service_principal_is_not_authorised(self, verifier, key, clock):
        token = key.sign(entra_claims(clock.now(), oid="11111111-2222-4333-8444-555555555555"))
        with pytest.raises(IdentityNotAuthorised):
            verifier.verify(token)

    def test_app_roles_can_be_required(self, server, clock, key):
        identities = [
            {
                "name": "gate",
                "claims": {"oid": SP_OID, "roles": "Ledger.Write"},
                "role": "azdev_devops",
                "tenants": "*",
            }
        ]
        verifier = make_verifier(server, clock, entra={"identities": identities})
        with pytest.raises(IdentityNotAuthorised):
            verifier.verify(key.sign(entra_claims(clock.now(), roles=["Deploy.Gate"])))
        token = key.sign(entra_claims(clock.now(), roles=["Deploy.Gate", "Ledger.Write"]))
        assert verifier.verify(token).tenants is None


class TestSignatureAttacks:
    def test_alg_none_is_refused(self, verifier, key, clock):
        assert "not allowed" in refused(verifier, unsigned(github_claims(clock.now()), key.kid))

    def test_hs256_keyed_with_the_public_key_is_refused(self, verifier, key, clock):
        token = hmac_with_public_key(github_claims(clock.now()), key)
        assert "not allowed" in refused(verifier, token)

    def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
        self, verifier, attacker, clock
    ):
        assert "signature" in refused(verifier, attacker.sign(github_claims(clock.now())))

    def test_a_changed_payload_breaks_the_signature(self, verifier, key, clock):
        header, _, signature = key.sign(github_claims(clock.now())).split(".")
        forged = github_claims(clock.now(), repository_id="1")
        token = f"{header}.{b64(json.dumps(forged).encode())}.{signature}"
        assert "signature" in refused(verifier, token)

    def test_a_header_without_kid_is_refused(self, verifier, key, clock):
        _, payload, signature = key.sign(github_claims(clock.now())).split(".")
        bare = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        assert "key id" in refused(verifier, f"{bare}.{payload}.{signature}")

    @pytest.mark.parametrize(
        "token",
        ["a.b.c", "e30.e30.", "W10.e30.x", "x" * 20_000 + ".a.b", "not a token"],
    )
    def test_garbage_is_refused(self, verifier, token):
        refused(verifier, token)


class TestIssuerAndAudience:
    def test_an_unknown_issuer_is_refused_without_fetching_anything(self, verifier, key, clock):
        token = key.sign(github_claims(clock.now(), iss="https://evil.example"))
        assert "unknown issuer" in refused(verifier, token)

    def test_an_issuer_url_is_matched_exactly(self, verifier, key, clock):
        token = key.sign(github_claims(clock.now(), iss=GITHUB_ISSUER + "/"))
        assert "unknown issuer" in refused(verifier, token)

    def test_a_token_for_another_audience_is_refused(self, verifier, key, clock):
        token = key.sign(entra_claims(clock.now(), aud="api://someone-else"))
        assert "audience" in refused(verifier, token)


class TestTimes:
    @pytest.mark.parametrize(
        ("claim", "offset", "accepted"),
        [
            ("exp", -LEEWAY - 1, False),  # expired beyond the allowed skew
            ("exp", -LEEWAY + 1, True),  # expired, but within the skew
            ("nbf", LEEWAY + 1, False),  # not yet valid
            ("nbf", LEEWAY - 1, True),
            ("iat", LEEWAY + 1, False),  # issued in the future
        ],
    )
    def test_time_claims_hold_against_the_injected_clock(
        self, verifier, key, clock, claim, offset, accepted
    ):
        at = int(clock.now().timestamp()) + offset
        token = key.sign(github_claims(clock.now(), **{claim: at}))
        if accepted:
            assert verifier.verify(token).id == f"github:{REPO_ID}"
        else:
            refused(verifier, token)

    def test_a_token_expires_when_the_clock_moves(self, verifier, key, clock):
        token = key.sign(github_claims(clock.now()))
        verifier.verify(token)
        clock.advance(timedelta(seconds=300 + LEEWAY))
        assert refused(verifier, token) == "expired"

    @pytest.mark.parametrize("claim", ["exp", "iat", "aud", "iss"])
    def test_required_claims_must_be_present(self, verifier, key, clock, claim):
        claims = github_claims(clock.now())
        del claims[claim]
        refused(verifier, key.sign(claims))

    def test_a_time_that_is_not_a_number_is_refused(self, verifier, key, clock):
        # PyJWT refuses to sign a non-numeric exp, so sign the payload bytes directly.
        claims = github_claims(clock.now(), exp="tomorrow")
        token = jwt.api_jws.encode(
            json.dumps(claims).encode(), key.private, algorithm="RS256", headers={"kid": key.kid}
        )
        assert refused(verifier, token) == "exp is not a number"


class TestKeySets:
    def test_keys_are_fetched_once_and_cached(self, verifier, server, key, clock):
        for _ in range(5):
            verifier.verify(key.sign(github_claims(clock.now())))
        assert server.jwks_fetches(GITHUB_ISSUER) == 1

    def test_each_issuer_has_its_own_cache(self, verifier, server, key, clock):
        verifier.verify(key.sign(github_claims(clock.now())))
        verifier.verify(key.sign(entra_claims(clock.now(), version="2.0")))
        verifier.verify(key.sign(entra_claims(clock.now(), version="1.0", aud=APP_URI)))
        assert server.jwks_fetches(GITHUB_ISSUER) == 1
        assert server.jwks_fetches(V1) == 1
        assert server.jwks_fetches(V2) == 1

    def test_a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(
        self, verifier, server, key, attacker, clock
    ):
        verifier.verify(key.sign(github_claims(clock.now())))
        assert server.jwks_fetches(GITHUB_ISSUER) == 1

        def flood(n: int) -> None:
            for i in range(n):
                token = attacker.sign(github_claims(clock.now()), kid=f"flood-{i}")
                with pytest.raises(TokenRejected):
                    verifier.verify(token)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(flood, 50) for _ in range(8)]:
                future.result()
        assert server.jwks_fetches(GITHUB_ISSUER) == 1  # inside the cooldown: none

        clock.advance(timedelta(seconds=COOLDOWN))
        flood(200)
        assert server.jwks_fetches(GITHUB_ISSUER) == 2  # one per cooldown, however many

    def test_a_rotated_key_is_picked_up_after_the_cooldown(
        self, verifier, server, key, next_key, clock
    ):
        verifier.verify(key.sign(github_claims(clock.now())))
        server.issuers[GITHUB_ISSUER].keys.append(next_key)
        assert "unknown key id" in refused(verifier, next_key.sign(github_claims(clock.now())))
        clock.advance(timedelta(seconds=COOLDOWN))
        assert verifier.verify(next_key.sign(github_claims(clock.now()))).role is Role.DEVOPS
        assert server.jwks_fetches(GITHUB_ISSUER) == 2

    def test_a_failed_refresh_keeps_the_stale_key_set(self, verifier, server, key, clock):
        verifier.verify(key.sign(github_claims(clock.now())))
        server.failing = True
        clock.advance(timedelta(seconds=TTL + 1))
        discovery = server.issuers[GITHUB_ISSUER].discovery_path
        before = server.hits[discovery]
        # The set is past its TTL and the provider is down: the old keys still verify.
        assert verifier.verify(key.sign(github_claims(clock.now()))).id == f"github:{REPO_ID}"
        assert server.hits[discovery] == before + 1  # a refresh was attempted
        assert "unknown key id" in refused(
            verifier, key.sign(github_claims(clock.now()), kid="other")
        )
        server.failing = False
        clock.advance(timedelta(seconds=COOLDOWN))
        verifier.verify(key.sign(github_claims(clock.now())))
        assert server.jwks_fetches(GITHUB_ISSUER) == 2

    def test_keys_expire_after_their_ttl(self, verifier, server, key, clock):
        verifier.verify(key.sign(github_claims(clock.now())))
        clock.advance(timedelta(seconds=TTL))
        verifier.verify(key.sign(github_claims(clock.now())))
        assert server.jwks_fetches(GITHUB_ISSUER) == 2

    def test_no_key_set_yet_and_the_provider_down_is_unavailable_not_invalid(
        self, verifier, server, key, clock
    ):
        server.failing = True
        with pytest.raises(KeysUnavailable):
            verifier.verify(key.sign(github_claims(clock.now())))
        server.failing = False
        with pytest.raises(KeysUnavailable):  # the cooldown holds for failures too
            verifier.verify(key.sign(github_claims(clock.now())))
        clock.advance(timedelta(seconds=COOLDOWN))
        assert verifier.verify(key.sign(github_claims(clock.now()))).role is Role.DEVOPS

    @pytest.mark.parametrize(
        "override",
        [
            {"issuer": "https://evil.example"},  # a document that speaks for someone else
            {"jwks_uri": "http://203.0.113.7/keys"},  # keys over plain HTTP, not loopback
            {"jwks_uri": None},
        ],
    )
    def test_a_discovery_document_that_does_not_fit_is_not_used(
        self, verifier, server, key, clock, override
    ):
        server.discovery_overrides[GITHUB_ISSUER] = override
        with pytest.raises(KeysUnavailable):
            verifier.verify(key.sign(github_claims(clock.now())))
        assert server.jwks_fetches(GITHUB_ISSUER) == 0

    def test_keys_for_other_uses_or_algorithms_are_ignored(self, verifier, server, key, clock):
        entry = key.jwk()
        server.issuers[GITHUB_ISSUER].raw_keys = [
            {**entry, "use": "enc"},
            {**entry, "alg": "HS256"},
            {"kty": "oct", "kid": key.kid, "k": b64(b"secret")},
            {**entry, "kid": None},
            {"kty": "RSA", "kid": key.kid, "n": "AQAB"},  # no exponent: not a key
            "not an object",
        ]
        with pytest.raises(KeysUnavailable):
            verifier.verify(key.sign(github_claims(clock.now())))
        server.issuers[GITHUB_ISSUER].raw_keys.append(entry)
        clock.advance(timedelta(seconds=COOLDOWN))
        assert verifier.verify(key.sign(github_claims(clock.now()))).role is Role.DEVOPS


class TestLooksLikeJwt:
    def test_api_keys_never_look_like_tokens(self):
        assert not looks_like_jwt("ica_aaaaaaaaaa_" + "A" * 43)
        assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9.c2ln")
        assert looks_like_jwt("eyJhbGciOiJub25lIn0.e30.")  # alg none goes to the validator
        assert not looks_like_jwt("a.b")


def trust_env(document: dict[str, Any]) -> OidcTrust:
    return Settings(oidc_trust=document).oidc_trust  # type: ignore[arg-type]


class TestTrustSettings:
    def base(self, **identity: Any) -> dict[str, Any]:
        entry = {
            "name": "x",
            "claims": {"repository_id": REPO_ID, "ref": "refs/heads/main"},
            "role": "azdev_devops",
            "tenants": ["to"],
        }
        entry.update(identity)
        return {
            "issuers": [
                {
                    "kind": "github",
                    "name": "github",
                    "audiences": [GITHUB_AUDIENCE],
                    "identities": [entry],
                }
            ]
        }

    def test_read_from_the_environment_as_json(self, monkeypatch):
        monkeypatch.setenv("ICA_OIDC_TRUST", json.dumps(self.base()))
        trust = Settings().oidc_trust
        assert trust.issuers[0].identities[0].allowed("repository_id") == {REPO_ID}
        assert trust.leeway_seconds == 60

    def test_the_default_trusts_no_issuer(self):
        assert Settings().oidc_trust.issuers == []

    @pytest.mark.parametrize(
        "claims",
        [
            {"repository": "pacific/farmer-registry"},  # a name alone
            {"sub": "repo:pacific/farmer-registry:environment:production"},
            {"repository_id": "pacific/farmer-registry"},  # not an id
        ],
    )
    def test_a_github_identity_must_pin_the_repository_id(self, claims):
        with pytest.raises(ValidationError, match="repository_id"):
            trust_env(self.base(claims=claims))

    def test_an_identity_must_state_its_tenants(self):
        document = self.base()
        del document["issuers"][0]["identities"][0]["tenants"]
        with pytest.raises(ValidationError, match="tenants"):
            trust_env(document)

    @pytest.mark.parametrize("role", ["root", "azdev_godmode"])
    def test_an_identity_maps_to_a_known_role(self, role):
        with pytest.raises(ValidationError):
            trust_env(self.base(role=role))

    @pytest.mark.parametrize("algorithm", ["none", "HS256", "HS512"])
    def test_symmetric_and_none_algorithms_cannot_be_configured(self, algorithm):
        document = self.base()
        document["issuers"][0]["algorithms"] = [algorithm]
        with pytest.raises(ValidationError):
            trust_env(document)

    def test_an_entra_identity_must_pin_the_object_id(self):
        document = {
            "issuers": [
                {
                    "kind": "entra",
                    "name": "contoso",
                    "tenant_id": ENTRA_TENANT,
                    "audiences": [APP_ID],
                    "identities": [
                        {
                            "name": "all",
                            "claims": {"roles": "Deploy.Gate"},
                            "role": "admin",
                            "tenants": "*",
                        }
                    ],
                }
            ]
        }
        with pytest.raises(ValidationError, match="oid"):
            trust_env(document)

    def test_a_tenant_is_named_by_its_guid(self):
        document = {
            "issuers": [
                {"kind": "entra", "name": "c", "tenant_id": "contoso.com", "audiences": [APP_ID]}
            ]
        }
        with pytest.raises(ValidationError, match="GUID"):
            trust_env(document)

    def test_documents_are_read_over_https_or_loopback_only(self):
        document = self.base()
        document["issuers"][0]["discovery"] = "http://idp.example/.well-known/x"
        with pytest.raises(ValidationError, match="https"):
            trust_env(document)

    def test_an_issuer_is_trusted_once(self):
        document = self.base()
        document["issuers"].append({**document["issuers"][0], "name": "again"})
        with pytest.raises(ValidationError, match="both accept"):
            trust_env(document)

    def test_an_audience_is_required(self):
        document = self.base()
        document["issuers"][0]["audiences"] = []
        with pytest.raises(ValidationError):
            trust_env(document)

    def test_unknown_fields_are_errors_not_silently_ignored(self):
        document = self.base()
        document["issuers"][0]["audience"] = "typo"
        with pytest.raises(ValidationError):
            trust_env(document)


def test_the_unverified_header_is_decoded_with_padding(verifier):
    # A header whose base64url needs padding must still be read (and then refused).
    header = base64.urlsafe_b64encode(b'{"alg":"RS256"}').rstrip(b"=").decode()
    assert "unknown issuer" in refused(verifier, f"{header}.e30.c2ln")
