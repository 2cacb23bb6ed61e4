"""nginx in front of two ICA processes, for real: Debian's nginx with deploy/nginx's template
and a throwaway CA, two `ica serve` processes (the image's command) on a PostgreSQL database
of this module's own, and every request through nginx over TLS, as a user or a pipeline
would send it. One nginx and two servers for the whole module."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import _worker, enrol_with_link, example_policy
from tests.deploy.conftest import free_port
from tests.deploy.nginx import Certificates, Nginx, make_certificates

API = "/api/v1/azdev"
HOST = "localhost"
CLIENT_TIMEOUT = "2s"
PROJECT = "424242"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Stack:
    url: str  # nginx, https
    http_url: str  # nginx, plain http (redirects)
    port: int
    replicas: list[str]  # the ICA processes, plain http on loopback
    logs: list[Path]
    certificates: Certificates
    devops_key: str
    approvers: list[str]  # personal tokens of a technical and a business approver
    signin: tuple[str, str]  # login and password of a person without TOTP
    directory: Path
    variables: dict[str, str]

    def client(self, *, source: str | None = None, **kwargs: Any) -> httpx2.Client:
        """A client that trusts the test CA, optionally from another loopback address."""
        context = ssl.create_default_context(cafile=str(self.certificates.ca))
        transport = httpx2.HTTPTransport(verify=context, local_address=source)
        return httpx2.Client(transport=transport, timeout=60, **kwargs)

    def replica_log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs)


@pytest.fixture(scope="module")
def module_pg_url(request: pytest.FixtureRequest, pg_admin_url: str, pg_template: str):
    name = f"ica_nginx_{_worker(request)}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _seed(data_dir: Path, database_url: str) -> tuple[str, list[str], tuple[str, str]]:
    """The policy, a pipeline's API key, two approvers and a person who signs in."""
    from datetime import timedelta

    from azdev_ica.auth.principal import Actor
    from azdev_ica.auth.roles import Role
    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.ledger.keyfile import create_key_file
    from azdev_ica.services.apikeys import create_api_key
    from azdev_ica.services.context import LedgerConfig, ServiceContext
    from azdev_ica.services.people import (
        create_person,
        grant_role,
        issue_personal_token,
        person_actor,
    )
    from azdev_ica.services.policies import apply_policy
    from azdev_ica.settings import Settings, create_secret_key_file

    settings = Settings(data_dir=data_dir, database_url=database_url)
    create_secret_key_file(settings.resolved_secret_key_file())
    create_key_file(settings.resolved_ledger_key_file(), f"{HOST}/audit")
    database = Database.from_url(database_url, pool_size=2)
    operator = Actor(kind="operator", id="test")
    try:
        ctx = ServiceContext(
            db=database,
            clock=SystemClock(),
            pepper=settings.pepper(),
            ledger=LedgerConfig.from_settings(settings),
        )
        apply_policy(ctx, actor=operator, document=example_policy(), source="example")
        key = create_api_key(
            ctx, actor=operator, name="ci", role=Role.DEVOPS, tenants=["to"], expires_at=None
        ).secret
        tokens = []
        for login, role in (("alice", Role.APPROVER_TECH), ("bob", Role.APPROVER_BIZ)):
            person = create_person(ctx, actor=operator, login=login, display_name=login)
            grant_role(ctx, actor=operator, login=login, role=role, tenant="to")
            tokens.append(
                issue_personal_token(
                    ctx,
                    actor=person_actor(person.id),
                    login=login,
                    name="t",
                    ttl=timedelta(days=1),
                ).secret
            )
        create_person(ctx, actor=operator, login="ana", display_name="Ana")
        grant_role(ctx, actor=operator, login="ana", role=Role.AUDITOR, tenant="to")
        enrol_with_link(ctx, "ana", "a long passphrase for ana", totp=False)
    finally:
        database.dispose()
    return key, tokens, ("ana", "a long passphrase for ana")


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(480):  # bounded: a loaded machine starts a server within two minutes
        assert process.poll() is None, log.read_text()
        try:
            if httpx2.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not start: {log.read_text()}")


def nginx_variables(port: int, http_port: int, certificates: Certificates, upstreams: list[int]):
    return {
        "ICA_NGINX_SERVER_NAME": HOST,
        "ICA_NGINX_HTTPS_PORT": str(port),
        "ICA_NGINX_HTTP_PORT": str(http_port),
        "ICA_NGINX_TLS_PROTOCOLS": "TLSv1.3",
        "ICA_NGINX_CLIENT_TIMEOUT": CLIENT_TIMEOUT,
        "ICA_NGINX_TLS_CERT": str(certificates.cert),
        "ICA_NGINX_TLS_KEY": str(certificates.key),
        "ICA_UPSTREAM_1": f"127.0.0.1:{upstreams[0]}",
        "ICA_UPSTREAM_2": f"127.0.0.1:{upstreams[1]}",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, module_pg_url: str) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("nginx-stack")
    data_dir = directory / "var"
    key, tokens, signin = _seed(data_dir, module_pg_url)
    ports = [free_port(), free_port()]
    ica = str(Path(sys.executable).parent / "ica")
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("ICA_")},
        "ICA_DATA_DIR": str(data_dir),
        "ICA_DATABASE_URL": module_pg_url,
        "ICA_PUBLIC_HOST": HOST,
        # nginx reaches the replicas from 127.0.0.1; the tests' direct clients use other
        # loopback addresses, which are not believed.
        "ICA_TRUSTED_PROXIES": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = [directory / f"ica-{n}.log" for n in (1, 2)]
    nginx: Nginx | None = None
    try:
        for port, log in zip(ports, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [ica, "serve", "--host", "127.0.0.1", "--port", str(port)],
                        env=environment,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        replicas = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process, log in zip(replicas, processes, logs, strict=True):
            _wait_for(url, process, log)
        certificates = make_certificates(directory / "tls", HOST)
        port, http_port = free_port(), free_port()
        variables = nginx_variables(port, http_port, certificates, ports)
        nginx = Nginx(directory / "nginx", variables).start()
        yield Stack(
            url=f"https://{HOST}:{port}",
            http_url=f"http://{HOST}:{http_port}",
            port=port,
            replicas=replicas,
            logs=logs,
            certificates=certificates,
            devops_key=key,
            approvers=tokens,
            signin=signin,
            directory=directory,
            variables=variables,
        )
    finally:
        if nginx is not None:
            nginx.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def _handshake(port: int, ca: Path, *, maximum: ssl.TLSVersion) -> tuple[str | None, str]:
    context = ssl.create_default_context(cafile=str(ca))
    context.maximum_version = maximum
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else ""


def test_tls_1_3_only_and_hsts_on_every_answer(stack):
    assert _handshake(stack.port, stack.certificates.ca, maximum=ssl.TLSVersion.TLSv1_3)[0] == (
        "TLSv1.3"
    )
    with pytest.raises(ssl.SSLError):
        _handshake(stack.port, stack.certificates.ca, maximum=ssl.TLSVersion.TLSv1_2)
    with stack.client() as client:
        for path, status in (("/health", 200), (f"{API}/runs", 401)):
            answer = client.get(stack.url + path)
            assert answer.status_code == status
            assert answer.headers["strict-transport-security"] == (
                "max-age=63072000; includeSubDomains"
            )
            assert "server" not in answer.headers or "nginx/" not in answer.headers["server"]


def test_tls_1_2_where_the_setting_allows_it(stack):
    # ICA_NGINX_TLS_PROTOCOLS="TLSv1.2 TLSv1.3": a second nginx from the same template.
    variables = {
        **stack.variables,
        "ICA_NGINX_TLS_PROTOCOLS": "TLSv1.2 TLSv1.3",
        "ICA_NGINX_HTTPS_PORT": str(free_port()),
        "ICA_NGINX_HTTP_PORT": str(free_port()),
    }
    second = Nginx(stack.directory / "nginx-tls12", variables).start()
    try:
        port = int(variables["ICA_NGINX_HTTPS_PORT"])
        version, cipher = _handshake(port, stack.certificates.ca, maximum=ssl.TLSVersion.TLSv1_2)
        assert version == "TLSv1.2"
        assert cipher.startswith("ECDHE-")  # forward secret
        assert "GCM" in cipher or "CHACHA20" in cipher  # AEAD
    finally:
        second.stop()


def test_plain_http_is_sent_to_https(stack):
    answer = httpx2.get(f"{stack.http_url}/login?next=/", timeout=30)
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://{HOST}/login?next=/"


def _login_form(client: httpx2.Client, url: str) -> str:
    page = client.get(f"{url}/ui/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_a_person_signs_in_through_nginx(stack):
    login, password = stack.signin
    with stack.client() as client:
        token = _login_form(client, stack.url)
        form = {"csrf_token": token, "login": login, "password": password, "next": "/ui/"}
        # A form posted from another site is refused; from ICA's own https origin it signs in,
        # which holds only because ICA believes nginx's X-Forwarded-Proto: https.
        refused = client.post(
            f"{stack.url}/ui/login", data=form, headers={"Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        answer = client.post(
            f"{stack.url}/ui/login", data=form, headers={"Origin": f"https://{HOST}:{stack.port}"}
        )
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-ica_session=")
        assert "Secure" in cookie
        home = client.get(f"{stack.url}/ui/")
        assert home.status_code == 200
        assert re.search(r"Signed in as (ana|Ana)\b", home.text)
    with stack.client() as stranger:  # the same page without the session
        assert stranger.get(f"{stack.url}/ui/").status_code == 401


def _logged_address(stack: Stack, marker: str) -> str:
    for _ in range(200):  # bounded: the access log line lands shortly after the answer
        found = re.search(rf'(\S+):\d+ - "GET /health\?probe={marker} ', stack.replica_log())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {marker}")


def test_forwarded_headers_are_believed_from_nginx_only(stack):
    spoofed = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
    # Through nginx from 127.0.0.5: ICA sees 127.0.0.5, whatever the client claims (nginx
    # replaces X-Forwarded-For with the address it saw).
    marker = uuid.uuid4().hex
    with stack.client(source="127.0.0.5") as client:
        answer = client.get(f"{stack.url}/health?probe={marker}", headers=spoofed)
    assert answer.status_code == 200
    assert _logged_address(stack, marker) == "127.0.0.5"
    # Straight to a replica from 127.0.0.3: the headers are not believed at all.
    marker = uuid.uuid4().hex
    with stack.client(source="127.0.0.3") as client:
        answer = client.get(f"{stack.replicas[0]}/health?probe={marker}", headers=spoofed)
        assert answer.status_code == 200
        assert _logged_address(stack, marker) == "127.0.0.3"
        # Nor the scheme: a form claiming to come from https is from another origin here.
        port = stack.replicas[0].rsplit(":", 1)[1]
        refused = client.post(
            f"{stack.replicas[0]}/ui/login",
            data={"login": "ana", "password": "x", "csrf_token": "x"},
            headers={**spoofed, "Origin": f"https://{HOST}:{port}"},
        )
        assert refused.status_code == 403
        assert "another site" in refused.text


def test_both_replicas_answer_through_nginx(stack):
    markers = [uuid.uuid4().hex for _ in range(6)]
    with stack.client() as client:
        for marker in markers:
            assert client.get(f"{stack.url}/health?probe={marker}").status_code == 200
    for marker in markers:
        _logged_address(stack, marker)
    served = [path.read_text(errors="replace") for path in stack.logs]
    assert all(any(marker in log for marker in markers) for log in served)


def _pipeline(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    """The pipeline client, as an agent runs it: ICA_URL at nginx, the test CA trusted."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ICA_", "TF_BUILD", "BUILD_", "SYSTEM_", "GITHUB_"))
    }
    environment.update(
        ICA_URL=stack.url,
        ICA_TOKEN=stack.devops_key,
        SSL_CERT_FILE=str(stack.certificates.ca),
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "ica"), *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_pipeline_run_waits_for_its_approval_and_passes_the_gate(stack):
    run_id = str(int(time.time() * 1000) % 10**9)
    run_key = f"gh:{PROJECT}:{run_id}"
    started = _pipeline(
        stack,
        *("run", "start", "--provider", "gh", "--project-id", PROJECT, "--run-id", run_id),
        *("--pipeline-name", "deploy", "--commit", COMMIT, "--tenant", "to"),
        *("--stage", "production", "--artifact-digest", DIGEST),
    )
    assert started.returncode == 0, started.stderr
    for phase, data in (
        ("build", {"artifact_digest": DIGEST}),
        ("test", {"passed": True, "coverage_percent": 90}),
        ("scan", {"passed": True, "findings": {"critical": 0, "high": 0}}),
    ):
        done = _pipeline(
            stack, "run", "event", phase, "--run-key", run_key, "--data", json.dumps(data)
        )
        assert done.returncode == 0, done.stderr
    pending = _pipeline(stack, "gate", "evaluate", "--run-key", run_key)
    # Denied until approved (exit 1), the reason says what is missing.
    assert pending.returncode == 1, pending.stdout + pending.stderr
    assert "approval_missing" in pending.stdout
    with stack.client() as client:
        asked = client.post(
            f"{stack.url}{API}/approval",
            json={"run_key": run_key},
            headers={"Authorization": f"Bearer {stack.devops_key}"},
        )
        assert asked.status_code == 201, asked.text
        approval_id = asked.json()["id"]
        statuses = []
        for token in stack.approvers:
            signed = client.post(
                f"{stack.url}{API}/approval/{approval_id}/sign",
                json={"decision": "approve", "comment": "through nginx"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert signed.status_code == 200, signed.text
            statuses.append(signed.json()["status"])
    assert statuses == ["technical_approved", "approved"]
    allowed = _pipeline(stack, "gate", "evaluate", "--run-key", run_key)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "gate: allow" in allowed.stdout


def _tls_socket(stack: Stack) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(stack.certificates.ca))
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    return context.wrap_socket(raw, server_hostname=HOST)


def _closed_by_server(sock: ssl.SSLSocket) -> bytes:
    """What the server sent before closing (nginx may say 408 first), or fail after 30 s."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        pass
    return received


def test_slow_clients_are_held_off_by_nginx(stack):
    marker = uuid.uuid4().hex
    slow: list[ssl.SSLSocket] = []
    try:
        for _ in range(12):
            sock = _tls_socket(stack)
            # Half a request's headers, and then nothing: the slowloris pattern.
            sock.sendall(f"GET /health?probe={marker} HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            slow.append(sock)
        for _ in range(4):
            sock = _tls_socket(stack)
            # Whole headers, a tenth of the body, and then nothing.
            sock.sendall(
                (
                    f"POST {API}/run/start?probe={marker} HTTP/1.1\r\nHost: {HOST}\r\n"
                    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a": 1'
                ).encode()
            )
            slow.append(sock)
        # Meanwhile everyone else is served as usual.
        with stack.client() as client:
            for _ in range(8):
                assert client.get(f"{stack.url}/health").status_code == 200
        # nginx drops them after its client timeout (2 s here); none reached a replica.
        for sock in slow:
            leftover = _closed_by_server(sock)
            assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408"), leftover[:80]
    finally:
        for sock in slow:
            sock.close()
    assert marker not in stack.replica_log()


def test_an_oversize_body_is_refused_with_icas_problem(stack):
    body = json.dumps({"pipeline_name": "x" * 300_000})
    headers = {
        "Authorization": f"Bearer {stack.devops_key}",
        "Content-Type": "application/json",
    }
    with stack.client() as client:
        answer = client.post(f"{stack.url}{API}/run/start", content=body, headers=headers)
        direct = client.post(f"{stack.replicas[0]}{API}/run/start", content=body, headers=headers)
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert "strict-transport-security" in answer.headers
    problem = answer.json()
    # The same problem ICA answers itself, limit included.
    assert direct.status_code == 413
    own = direct.json()
    assert (problem["type"], problem["title"], problem["status"], problem["detail"]) == (
        own["type"],
        own["title"],
        own["status"],
        own["detail"],
    )


def test_a_person_signs_in_with_a_browser_through_nginx(stack, playwright_driver):
    """Chromium, trusting nginx's certificate by its public key only (no error is ignored
    for any other), fills in the sign-in form; the browser sends its own Origin."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS

    assert os.path.exists(CHROMIUM), "Chromium is missing: run `make chromium`"
    certificate = x509.load_pem_x509_certificate(stack.certificates.cert.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    login, password = stack.signin
    browser = playwright_driver.chromium.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"],
    )
    try:
        page = browser.new_page()
        answer = page.goto(f"{stack.url}/ui/login")
        assert answer is not None
        assert answer.status == 200
        assert answer.headers["strict-transport-security"].startswith("max-age=63072000")
        page.get_by_label("Sign-in name").fill(login)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{stack.url}/ui/")
        assert page.get_by_text("Signed in as").count() == 1
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["__Host-ica_session"]["secure"] is True
    finally:
        browser.close()
