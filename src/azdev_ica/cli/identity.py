"""How the pipeline client proves who it is: workload identity first, an API key otherwise.

Standard library only (it runs on build agents). In order:

1. Azure Pipelines workload identity federation. Inside `AzureCLI@2` with
   `addSpnToEnvironment: true` the step's environment holds `idToken` (the federation
   assertion Azure DevOps issued for the service connection), `servicePrincipalId` and
   `tenantId`. With ICA_ENTRA_SCOPE set (e.g. `api://<ICA's app id>/.default`), `ica`
   exchanges the assertion at Entra's token endpoint (client-credentials grant with a JWT
   client assertion) and sends the access token as Bearer. No `az` command is involved.
   ICA_ENTRA_AUTHORITY (default https://login.microsoftonline.com) names the authority.
   The step's `idToken` lives about 10 minutes and the access token about an hour, so when
   ICA answers 401 during a long wait, `ica` asks Azure DevOps for a fresh assertion the
   documented way (`POST $SYSTEM_OIDCREQUESTURI?api-version=7.1-preview.1&serviceConnectionId=
   <id>` with `Authorization: Bearer $SYSTEM_ACCESSTOKEN`, answered `{"oidcToken": ...}`) and
   exchanges that. The service connection id is AZURESUBSCRIPTION_SERVICE_CONNECTION_ID (set
   by AzureCLI@2) or ICA_SERVICE_CONNECTION_ID; SYSTEM_ACCESSTOKEN must be mapped into the
   step's env (the kit's template does).
2. GitHub Actions OIDC. With `permissions: id-token: write` the runner sets
   ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN; with ICA_AUDIENCE set,
   `ica` asks the runner for a token with that audience and sends it as Bearer.
3. ICA_TOKEN: an API key (or personal token) from a secret variable.

Token values are never printed, logged or put in an error message.
"""

from __future__ import annotations

import time

from azdev_ica.cli import wire
from azdev_ica.cli.http import EXIT_AUTH, EXIT_UNAVAILABLE, IcaHttpError, redact_url

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:  # (collections.abc imports `collections`: annotations only)
    from collections.abc import Callable, Mapping

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REQUEST_TIMEOUT = 10.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class IdentityError(IcaHttpError):
    """The workload-identity token could not be obtained (a refusal: exit 4)."""

    exit_code = EXIT_AUTH


class IdentityUnavailable(IdentityError):
    """The token endpoint did not answer, after retries (exit 5)."""

    exit_code = EXIT_UNAVAILABLE


class Credential:
    """The bearer token to send (None: none) and where it came from, for messages."""

    __slots__ = ("source", "token")

    def __init__(self, token: str | None, source: str) -> None:
        self.token = token
        self.source = source

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return (self.token, self.source) == (other.token, other.source)

    def __hash__(self) -> int:
        return hash((self.token, self.source))

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r}, token={'***' if self.token else None})"


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def resolve(
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    fresh: bool = False,
) -> Credential:
    """The credential the environment offers (see the module's docstring for the order).
    `fresh`: the one in use was refused (expired): on Azure, ask Azure DevOps for a new
    federation assertion instead of reusing the step's `idToken`."""
    scope = _get(env, "ICA_ENTRA_SCOPE")
    if scope and _get(env, "idToken"):
        missing = [n for n in ("servicePrincipalId", "tenantId") if not _get(env, n)]
        if missing:
            raise IdentityError(
                f"idToken is set but {' and '.join(missing)} is not: run `ica` inside "
                "AzureCLI@2 with addSpnToEnvironment: true"
            )
        can_renew = bool(_get(env, "SYSTEM_OIDCREQUESTURI"))

        def exchange(assertion: str) -> str:
            return entra_token(
                authority=_get(env, "ICA_ENTRA_AUTHORITY") or DEFAULT_AUTHORITY,
                tenant_id=_get(env, "tenantId"),
                client_id=_get(env, "servicePrincipalId"),
                assertion=assertion,
                scope=scope,
                timeout=timeout,
                sleep=sleep,
                clock=clock,
            )

        if fresh and can_renew:
            token = exchange(ado_id_token(env, timeout=timeout, sleep=sleep, clock=clock))
            return Credential(token, "azure workload identity")
        try:
            token = exchange(_get(env, "idToken"))
        except IdentityUnavailable:
            raise
        except IdentityError as exc:
            # The step's idToken expired before `ica` ran (a long step before it): Entra
            # answers AADSTS700024. Ask Azure DevOps for a fresh one, once.
            if not can_renew or "AADSTS700024" not in exc.message:
                raise
            token = exchange(ado_id_token(env, timeout=timeout, sleep=sleep, clock=clock))
        return Credential(token, "azure workload identity")
    audience = _get(env, "ICA_AUDIENCE")
    request_url = _get(env, "ACTIONS_ID_TOKEN_REQUEST_URL")
    if audience and request_url:
        request_token = _get(env, "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not request_token:
            raise IdentityError(
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN is not set: give the job "
                "`permissions: id-token: write`"
            )
        token = github_token(
            request_url=request_url,
            request_token=request_token,
            audience=audience,
            timeout=timeout,
            sleep=sleep,
            clock=clock,
        )
        return Credential(token, "github oidc")
    if audience and not request_url:
        raise IdentityError(
            "ICA_AUDIENCE is set but ACTIONS_ID_TOKEN_REQUEST_URL is not: give the job "
            "`permissions: id-token: write`"
        )
    return Credential(_get(env, "ICA_TOKEN") or None, "ICA_TOKEN")


def ado_id_token(
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """A fresh federation assertion for the step's service connection from Azure DevOps
    (the documented OIDC token request of a job)."""
    request_uri = _check_url(_get(env, "SYSTEM_OIDCREQUESTURI"), "SYSTEM_OIDCREQUESTURI")
    access_token = _get(env, "SYSTEM_ACCESSTOKEN")
    if not access_token:
        raise IdentityError(
            "the workload-identity token expired and SYSTEM_ACCESSTOKEN is not set, so no "
            "fresh one can be asked for: map it into the step (env: SYSTEM_ACCESSTOKEN: "
            "$(System.AccessToken))"
        )
    connection = _get(env, "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID") or _get(
        env, "ICA_SERVICE_CONNECTION_ID"
    )
    if not connection:
        raise IdentityError(
            "the workload-identity token expired and the service connection's id is unknown: set "
            "ICA_SERVICE_CONNECTION_ID (AzureCLI@2 sets AZURESUBSCRIPTION_SERVICE_CONNECTION_ID)"
        )
    import urllib.parse  # only for a workload identity: ICA_TOKEN needs none of it

    joiner = "&" if urllib.parse.urlsplit(request_uri).query else "?"
    url = (
        f"{request_uri}{joiner}api-version=7.1-preview.1"
        f"&serviceConnectionId={urllib.parse.quote(connection, safe='')}"
    )
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    data = _exchange("Azure DevOps's OIDC token service", url, b"", headers, timeout, sleep, clock)
    token = data.get("oidcToken")
    if not isinstance(token, str) or not token:
        raise IdentityError("Azure DevOps's OIDC token service answered without an oidcToken")
    return token


def entra_token(
    *,
    authority: str,
    tenant_id: str,
    client_id: str,
    assertion: str,
    scope: str,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """An Entra access token for `scope`, by the client-credentials grant with the
    federation assertion as the client assertion (the v2.0 token endpoint)."""
    base = _check_url(authority.rstrip("/"), "ICA_ENTRA_AUTHORITY")
    import urllib.parse  # only for a workload identity: ICA_TOKEN needs none of it

    url = f"{base}/{urllib.parse.quote(tenant_id, safe='')}/oauth2/v2.0/token"
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
        }
    ).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    data = _exchange("Entra ID", url, form, headers, timeout, sleep, clock)
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise IdentityError("Entra ID answered without an access_token")
    return token


def github_token(
    *,
    request_url: str,
    request_token: str,
    audience: str,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """A GitHub Actions OIDC token with `audience` from the runner's token service."""
    _check_url(request_url, "ACTIONS_ID_TOKEN_REQUEST_URL")
    import urllib.parse  # only for a workload identity: ICA_TOKEN needs none of it

    joiner = "&" if urllib.parse.urlsplit(request_url).query else "?"
    url = f"{request_url}{joiner}audience={urllib.parse.quote(audience, safe='')}"
    headers = {"Authorization": f"bearer {request_token}", "Accept": "application/json"}
    data = _exchange("the GitHub OIDC token service", url, None, headers, timeout, sleep, clock)
    token = data.get("value")
    if not isinstance(token, str) or not token:
        raise IdentityError("the GitHub OIDC token service answered without a value")
    return token


def _check_url(url: str, what: str) -> str:
    try:
        wire.split_url(url)  # the reading the exchange itself will make
    except ValueError:
        raise IdentityError(f"{what} is not an http(s) URL: {redact_url(url)!r}") from None
    return url


def _exchange(
    who: str,
    url: str,
    payload: bytes | None,
    headers: dict[str, str],
    timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, object]:
    """One token request, retried on no answer and on 429/5xx within `timeout` seconds."""
    where = redact_url(url.split("?", 1)[0])
    deadline = clock() + timeout
    attempt = 0
    while True:
        attempt += 1
        method = "GET" if payload is None else "POST"
        remaining = max(deadline - clock(), 0.001)
        failure: IdentityError
        try:
            status, _, body = wire.exchange(
                method, url, payload, headers, min(REQUEST_TIMEOUT, remaining)
            )
        except wire.CertificateRefused as exc:
            raise IdentityUnavailable(f"TLS verification of {where} failed: {exc}") from None
        except wire.NoAnswer as exc:
            failure = IdentityUnavailable(f"{who} at {where} is unreachable: {exc}")
        else:
            if status == 203 or 300 <= status < 400:
                # Azure DevOps answers an unauthenticated call with its sign-in page: 203
                # Non-Authoritative Information (HTML) or a 302 to the sign-in.
                raise IdentityError(
                    f"{who} answered {status} with a sign-in page: the access token is missing "
                    "or not valid (SYSTEM_ACCESSTOKEN)"
                )
            if 200 <= status < 300:
                return _parse(who, body)
            text = _error_text(body)
            if status not in RETRY_STATUSES:
                raise IdentityError(f"{who} refused the token request ({status}){text}")
            failure = IdentityUnavailable(f"{who} answered {status}{text}")
        delay = min(8.0, 0.5 * 2 ** (attempt - 1))
        if clock() + delay >= deadline:
            failure.message += f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
            failure.args = (failure.message,)
            raise failure
        sleep(delay)


def _parse(who: str, body: bytes) -> dict[str, object]:
    import json  # (workload identity only: an ICA_TOKEN call imports no `json`)

    try:
        data = json.loads(body)
    except ValueError:
        raise IdentityError(f"{who} answered with something that is not JSON") from None
    if not isinstance(data, dict):
        raise IdentityError(f"{who} answered with something that is not a JSON object")
    return data


def _error_text(body: bytes) -> str:
    """The OAuth error code and description (never the request, which holds the assertion)."""
    import json

    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = str(data.get("error") or "")[:80]
    description = " ".join(str(data.get("error_description") or "").split())[:200]
    parts = [part for part in (error, description) if part]
    return (": " + " - ".join(parts)) if parts else ""
