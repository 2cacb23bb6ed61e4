"""`ica` obtains its own workload-identity token (cli/identity.py): the Entra client-credentials
exchange of Azure DevOps's federation assertion, GitHub's ID-token request with ICA's audience,
otherwise ICA_TOKEN. Against the local providers of tests/pipelines/fakes.py; no token value
ever appears in a message."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from azdev_ica.cli import identity
from azdev_ica.cli.http import EXIT_AUTH, EXIT_UNAVAILABLE
from azdev_ica.cli.main import main
from tests.pipelines.fakes import CLIENT_ID, RUNNER_REQUEST_TOKEN, TokenService
from tests.support.oidc import APP_ID, APP_URI, ENTRA_TENANT, SigningKey

SCOPE = f"{APP_URI}/.default"


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenService]:
    service = TokenService(
        entra_key=SigningKey.rsa("e1"), github_key=SigningKey.rsa("g1"), scope=SCOPE
    ).start()
    yield service
    service.stop()


def azure_env(tokens: TokenService, **changes: str) -> dict[str, str]:
    env = {
        "ICA_ENTRA_SCOPE": SCOPE,
        "ICA_ENTRA_AUTHORITY": tokens.url,
        "idToken": tokens.ado_assertion(),
        "servicePrincipalId": CLIENT_ID,
        "tenantId": ENTRA_TENANT,
        "ICA_TOKEN": "ica_notusedxx_" + "A" * 43,
    }
    env.update(changes)
    return env


def test_the_federation_assertion_is_exchanged_at_entra(tokens):
    credential = identity.resolve(azure_env(tokens))
    assert credential.source == "azure workload identity"
    assert credential.token is not None
    claims = jwt.decode(
        credential.token,
        tokens.entra_key.private.public_key(),
        algorithms=["RS256"],
        audience=APP_ID,
    )
    assert (claims["tid"], claims["azp"]) == (ENTRA_TENANT, CLIENT_ID)
    form = tokens.seen_forms[-1]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == identity.ASSERTION_TYPE
    assert credential.token not in repr(credential)


def test_a_refused_assertion_names_entras_reason_and_never_the_assertion(tokens):
    env = azure_env(tokens, idToken=tokens.ado_assertion(subject="sc://evil/x/y"))
    with pytest.raises(identity.IdentityError) as caught:
        identity.resolve(env)
    assert caught.value.exit_code == EXIT_AUTH
    assert "AADSTS700213" in caught.value.message
    assert env["idToken"] not in caught.value.message


def test_outside_azurecli_with_spn_the_missing_variables_are_named(tokens):
    env = azure_env(tokens)
    del env["tenantId"]
    with pytest.raises(identity.IdentityError, match="addSpnToEnvironment"):
        identity.resolve(env)


def test_github_oidc_asks_the_runner_for_icas_audience(tokens):
    env = {
        "ICA_AUDIENCE": "https://ica.example.org",
        "ACTIONS_ID_TOKEN_REQUEST_URL": tokens.github_request_url(),
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": RUNNER_REQUEST_TOKEN,
    }
    credential = identity.resolve(env)
    assert credential.source == "github oidc"
    claims = jwt.decode(
        credential.token or "",
        tokens.github_key.private.public_key(),
        algorithms=["RS256"],
        audience="https://ica.example.org",
    )
    assert claims["repository_id"] == "123456789"
    del env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    with pytest.raises(identity.IdentityError, match="id-token: write"):
        identity.resolve(env)
    with pytest.raises(identity.IdentityError, match="id-token: write"):
        identity.resolve({"ICA_AUDIENCE": "https://ica.example.org"})


def test_without_workload_identity_the_api_key_is_used():
    assert identity.resolve({"ICA_TOKEN": " key "}).token == "key"
    assert identity.resolve({}).token is None
    # idToken without ICA_ENTRA_SCOPE: an AzureCLI step that uses an API key.
    assert identity.resolve({"idToken": "x", "ICA_TOKEN": "key"}).source == "ICA_TOKEN"


def test_an_unreachable_token_endpoint_is_retried_then_fails_with_exit_5(tokens):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    env = azure_env(tokens, ICA_ENTRA_AUTHORITY=f"http://127.0.0.1:{port}")
    with pytest.raises(identity.IdentityUnavailable) as caught:
        identity.resolve(env, timeout=5, sleep=sleep, clock=lambda: now[0])
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert "unreachable" in caught.value.message
    assert "gave up after" in caught.value.message
    assert pauses == [0.5, 1.0, 2.0]


def test_the_cli_exits_4_with_the_reason_and_no_token(tokens, monkeypatch, capsys: Any):
    env = azure_env(tokens, idToken=tokens.ado_assertion(subject="sc://evil/x/y"))
    for name, value in {**env, "ICA_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
    code = main(["run", "show", "--run-key", "ado:p:1"])
    out, err = capsys.readouterr()
    assert code == EXIT_AUTH
    assert "Entra ID refused the token request (401)" in err
    assert env["idToken"] not in out + err


def test_an_expired_assertion_is_fetched_again_from_azure_devops(tokens):
    from tests.pipelines.fakes import JOB_ACCESS_TOKEN, SERVICE_CONNECTION_ID

    tokens.id_token_seconds = -5  # the step's idToken has expired (and every one issued now)
    try:
        env = azure_env(
            tokens,
            SYSTEM_OIDCREQUESTURI=tokens.oidc_request_uri(),
            SYSTEM_ACCESSTOKEN=JOB_ACCESS_TOKEN,
            AZURESUBSCRIPTION_SERVICE_CONNECTION_ID=SERVICE_CONNECTION_ID,
        )
        with pytest.raises(identity.IdentityError, match="AADSTS700024"):
            identity.resolve(env, timeout=2)  # the fresh one is expired too: refused
        tokens.id_token_seconds = 600
        fetched = tokens.hits["ado_oidc"]
        assert identity.resolve(env, timeout=2).token is not None  # renewed once, by itself
        assert tokens.hits["ado_oidc"] == fetched + 1
        credential = identity.resolve(env, timeout=2, fresh=True)  # after a 401 from ICA
        assert credential.token is not None
        assert tokens.hits["ado_oidc"] == fetched + 2
        without = {k: v for k, v in env.items() if k != "SYSTEM_OIDCREQUESTURI"}
        with pytest.raises(identity.IdentityError, match="AADSTS700024"):
            identity.resolve(without, timeout=2)  # no way to renew: the refusal as it is
    finally:
        tokens.id_token_seconds = 600


def test_a_missing_access_token_gets_the_sign_in_page_and_says_so(tokens):
    from tests.pipelines.fakes import SERVICE_CONNECTION_ID

    env = azure_env(
        tokens,
        SYSTEM_OIDCREQUESTURI=tokens.oidc_request_uri(),
        SYSTEM_ACCESSTOKEN="not-the-job-token",
        AZURESUBSCRIPTION_SERVICE_CONNECTION_ID=SERVICE_CONNECTION_ID,
    )
    with pytest.raises(identity.IdentityError, match="203 with a sign-in page") as refused:
        identity.resolve(env, timeout=2, fresh=True)
    assert refused.value.exit_code == EXIT_AUTH
    assert "not-the-job-token" not in str(refused.value)
    env.pop("SYSTEM_ACCESSTOKEN")
    with pytest.raises(identity.IdentityError, match="SYSTEM_ACCESSTOKEN"):
        identity.resolve(env, timeout=2, fresh=True)
