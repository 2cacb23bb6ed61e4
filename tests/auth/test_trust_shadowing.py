"""A trust file in which a looser identity accepts every token a stricter one accepts, with
the same role and tenants, is refused at start-up (the stricter pins would mean nothing: a
token from a pull request's ref got in through the looser one). Both entries are named."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from azdev_ica.auth.trust import OidcTrust, TrustedIdentity, accepts_all_of
from azdev_ica.settings import Settings

REPO = "123456789"
STRICT = {
    "repository_id": REPO,
    "ref": "refs/heads/main",
    "environment": "production",
    "job_workflow_ref": "pacific/automation/.github/workflows/deploy.yml@refs/heads/main",
}


def document(*identities: dict[str, Any]) -> dict[str, Any]:
    return {
        "issuers": [
            {
                "kind": "github",
                "name": "github",
                "audiences": ["https://ica.example.org"],
                "identities": list(identities),
            }
        ]
    }


def ident(name: str, claims: dict[str, Any], role: str = "azdev_devops", tenants: Any = None):
    return {"name": name, "claims": claims, "role": role, "tenants": tenants or ["to"]}


@pytest.mark.parametrize(
    ("loose_claims", "loose_tenants"),
    [
        ({"repository_id": REPO}, ["to"]),  # the old docs/identity.md example
        ({"repository_id": REPO, "ref": "refs/heads/main"}, ["to"]),
        ({"repository_id": [REPO, "42"]}, ["to", "ws"]),  # more repositories, more tenants
        ({"repository_id": REPO}, "*"),
    ],
)
def test_a_looser_identity_for_the_same_repository_is_refused(loose_claims, loose_tenants):
    with pytest.raises(ValidationError) as refused:
        Settings(oidc_trust=document(  # type: ignore[arg-type]
            ident("farmer-registry-prod", STRICT),
            ident("farmer-registry-ci", loose_claims, tenants=loose_tenants),
        ))  # fmt: skip
    message = str(refused.value)
    assert "'farmer-registry-prod'" in message
    assert "'farmer-registry-ci'" in message
    assert "collide" in message


@pytest.mark.parametrize(
    "other",
    [
        ident("other-role", {"repository_id": REPO}, role="azdev_auditor"),
        ident("other-tenant", {"repository_id": REPO}, tenants=["ws"]),
        ident("other-repo", {"repository_id": "987654321"}),
        ident("other-env", {"repository_id": REPO, "environment": "ci"}),
    ],
)
def test_identities_that_differ_where_it_matters_are_accepted(other):
    trust = OidcTrust.model_validate(document(ident("farmer-registry-prod", STRICT), other))
    assert len(trust.issuers[0].identities) == 2


def test_the_documented_example_is_accepted():
    text = (Path(__file__).parents[2] / "docs" / "identity.md").read_text()
    section = text.split("## Example: GitHub Actions", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    OidcTrust.model_validate(json.loads(block.group(1)))


_claims = st.dictionaries(
    st.sampled_from(["ref", "environment", "job_workflow_ref"]),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
    max_size=3,
)
_token = st.fixed_dictionaries(
    {"repository_id": st.just(REPO)},
    optional={k: st.sampled_from(["a", "b", "c"]) for k in ("ref", "environment")},
)


@given(_claims, _claims, st.lists(_token, max_size=20))
def test_accepts_all_of_means_what_it_says(strict_extra, loose_extra, tokens):
    strict = TrustedIdentity(
        name="s", claims={"repository_id": REPO, **strict_extra}, role="azdev_devops",
        tenants=["to"],
    )  # fmt: skip
    loose = TrustedIdentity(
        name="l", claims={"repository_id": REPO, **loose_extra}, role="azdev_devops",
        tenants=["to"],
    )  # fmt: skip

    def holds(identity: TrustedIdentity, token: dict[str, str]) -> bool:
        return all(c in token and token[c] in identity.allowed(c) for c in identity.claims)

    if accepts_all_of(loose, strict):
        assert all(holds(loose, token) for token in tokens if holds(strict, token))
