"""A fake GitHub on loopback, a GitHub App configured for it, and a GitHub run of Tonga.

The fake implements the two calls ICA makes (pipelines.md §4.2) and checks them as GitHub
would: the installation token request must carry an RS256 JWT of the App (verified with the
App's public key, `iss`, `iat`, `exp` at most 10 minutes ahead); the deployment review must
carry a token the fake minted, the documented headers and a JSON body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.domain.runs import Provider
from azdev_ica.services.runs import StartRun, start_run

API = "/api/v1/azdev"
APP_ID = 314159
INSTALLATION_ID = 2718281
WEBHOOK_SECRET = "whsec-" + "x" * 32
REPOSITORY_ID = 123456789
REPOSITORY = "pacific/farmer-registry"
RUN_ID = "9876543210"
RUN_KEY = f"gh:{REPOSITORY_ID}:{RUN_ID}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "cd" * 32
RITA_GITHUB_ID = 5001  # triggered the workflow: creates the deployment
TECH, BIZ = "azdev_approver_tech", "azdev_approver_biz"

PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)

_TOKEN_PATH = re.compile(r"^/app/installations/(?P<id>[0-9]+)/access_tokens$")
_REVIEW_PATH = re.compile(
    r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/runs/(?P<run>[0-9]+)"
    r"/deployment_protection_rule$"
)


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeGitHub:
    """GitHub's REST API on loopback: mints installation tokens, takes deployment reviews."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.requests: list[dict[str, Any]] = []  # every POST, in order
        self.reviews: list[dict[str, Any]] = []  # accepted deployment reviews
        self.minted: list[str] = []
        self.problems: list[str] = []  # what the fake refused, and why
        self.review_status = 204
        # A renamed repository: GitHub answers its old URLs with a 301 to the new place.
        self.moved_to: str | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                fake.requests.append(
                    {
                        "path": self.path,
                        # HTTP header names are case-insensitive (urllib sends "X-github-...").
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                status, answer = fake.answer(self.path, self.headers, body)
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                if status == 301 and fake.moved_to is not None:
                    self.send_header("Location", fake.moved_to + self.path)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if headers.get("Accept") != "application/vnd.github+json":
            return self.refuse(400, "Accept is not application/vnd.github+json")
        if headers.get("X-GitHub-Api-Version") != "2022-11-28":
            return self.refuse(400, "X-GitHub-Api-Version is not 2022-11-28")
        scheme, _, credential = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer":
            return self.refuse(401, "no bearer")
        token_request = _TOKEN_PATH.match(path)
        if token_request:
            try:
                claims = jwt.decode(
                    credential,
                    self.public_key,
                    algorithms=["RS256"],
                    issuer=str(APP_ID),
                    options={"require": ["iat", "exp", "iss"]},
                )
            except jwt.PyJWTError as exc:
                return self.refuse(401, f"JWT: {exc}")
            if claims["exp"] > time.time() + 600 or claims["iat"] > time.time():
                return self.refuse(401, "JWT: exp more than 10 minutes ahead or iat ahead")
            if int(token_request["id"]) != INSTALLATION_ID:
                return self.refuse(404, "no such installation")
            token = "ghs_" + secrets.token_hex(18)
            self.minted.append(token)
            return 201, {"token": token, "expires_at": "2099-01-01T00:00:00Z"}
        review = _REVIEW_PATH.match(path)
        if review:
            if credential not in self.minted:
                return self.refuse(401, "not an installation token of ours")
            if headers.get("Content-Type") != "application/json":
                return self.refuse(415, "not JSON")
            try:
                document = json.loads(body)
            except ValueError:
                return self.refuse(400, "body is not JSON")
            if self.moved_to is not None:
                return 301, {"message": "Moved Permanently", "url": self.moved_to + path}
            if self.review_status == 204:
                self.reviews.append({**review.groupdict(), "body": document})
            return self.review_status, None
        return self.refuse(404, f"no route {path}")

    def refuse(self, status: int, why: str) -> tuple[int, Any]:
        self.problems.append(why)
        return status, {"message": why}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(app_key.public_key())
    yield fake
    fake.stop()


@pytest.fixture
def settings(settings: Any, github: FakeGitHub, app_key: rsa.RSAPrivateKey, tmp_path: Path) -> Any:
    """The suite's settings plus a GitHub App whose API is the fake."""
    key_file = tmp_path / "github-app.pem"
    key_file.write_bytes(
        app_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return settings.model_copy(
        update={
            "github_app_id": APP_ID,
            "github_app_private_key_file": key_file,
            "github_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "github_api_url": github.url,
        }
    )


@pytest.fixture
def run_key(ctx: Any) -> str:
    """The workflow's `ica run start`, in a job before the protected one."""
    start_run(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.GITHUB,
            project_id=str(REPOSITORY_ID),
            project=REPOSITORY,
            run_id=RUN_ID,
            pipeline_name="deploy",
            commit=COMMIT,
            tenant="to",
            stage="production",
            artifact_digest=DIGEST,
            requested_for=str(RITA_GITHUB_ID),
        ),
    )
    return RUN_KEY


PEOPLE: dict[str, tuple[list[tuple[str, str | None]], list[tuple[str, str]]]] = {
    # rita triggered the workflow (GitHub user 5001) and is a technical approver too
    "rita": ([("azdev_devops", "to"), (TECH, "to")], [("github", str(RITA_GITHUB_ID))]),
    "alice": ([(TECH, "to")], []),
    "bob": ([(BIZ, "to")], []),
}


class People:
    def __init__(self, make_person: Any) -> None:
        self._make = make_person
        self._made: dict[str, Any] = {}

    def __getitem__(self, login: str) -> Any:
        if login not in self._made:
            grants, links = PEOPLE[login]
            self._made[login] = self._make(login, grants, links)
        return self._made[login]


@pytest.fixture
def people(make_person: Any) -> People:
    return People(make_person)


def callback_url(api: str, run_id: str = RUN_ID) -> str:
    return f"{api}/repos/{REPOSITORY}/actions/runs/{run_id}/deployment_protection_rule"


def rule_payload(
    api: str,
    *,
    environment: str = "production",
    run_id: str = RUN_ID,
    url: str | None = None,
    creator_id: int = RITA_GITHUB_ID,
) -> dict[str, Any]:
    """A `deployment_protection_rule` body as GitHub documents it (action `requested`)."""
    return {
        "action": "requested",
        "environment": environment,
        "event": "workflow_dispatch",
        "deployment_callback_url": url or callback_url(api, run_id),
        "deployment": {
            "id": 1122334455,
            "sha": COMMIT,
            "ref": "main",
            "task": "deploy",
            "environment": environment,
            "payload": {},
            "creator": {"login": "rita", "id": creator_id, "type": "User"},
        },
        "pull_requests": [],
        "repository": {
            "id": REPOSITORY_ID,
            "full_name": REPOSITORY,
            "owner": {"login": "pacific", "id": 4242},
        },
        "organization": {"login": "pacific", "id": 4242},
        "installation": {"id": INSTALLATION_ID},
        "sender": {"login": "rita", "id": creator_id},
    }


def signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(
    client: Any,
    payload: Any,
    *,
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    event: str = "deployment_protection_rule",
    sign: bool = True,
    secret: str = WEBHOOK_SECRET,
    raw: bytes | None = None,
) -> Any:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "User-Agent": "GitHub-Hookshot/abc123",
    }
    if sign:
        headers["X-Hub-Signature-256"] = signature(body, secret)
    return client.post(f"{API}/github/webhook", content=body, headers=headers)
