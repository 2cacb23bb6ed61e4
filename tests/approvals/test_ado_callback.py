"""Azure DevOps callback mode: the check's call is answered at once; when the approval is decided
or expires, ICA posts `TaskCompleted` to the check's plan, exactly as Azure DevOps documents
it, to a local HTTP server that records what it got. The AuthToken never reaches the ledger or
the outbox in clear."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.adapters.notify import DeliveryError, find_sender
from azdev_ica.db.tables import ApprovalCallback, AuditInbox, OutboxMessage
from azdev_ica.jobs.delivery import deliver_due
from azdev_ica.services.approvals import expire_due

API = "/api/v1/azdev"
TOKEN = "eyJ0eXAiOiJKV1Qi.job-access-token.s3cr3t"
ADO_PROJECT = "6c3f0e1a-1111-4c2b-9d1e-0123456789ab"
PLAN = "4d2c0f5e-2222-4c2b-9d1e-00000000plan"
JOB = "0f1e2d3c-3333-4c2b-9d1e-000000000job"
TASK = "a0b1c2d3-4444-4c2b-9d1e-00000000task"


SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in to your account</title></head></html>"


class Recorder:
    """A loopback HTTP server standing in for Azure DevOps. As Azure DevOps does, it accepts
    the job's own access token (`job-access-token-*`, or TOKEN) and answers anything else
    with 401 only when the caller sent `X-TFS-FedAuthRedirect: Suppress`; otherwise with a
    203 and its HTML sign-in page, or (`redirect_to` set) a 302 to the sign-in host.
    `suppress_honoured = False` plays an old server or proxy that ignores the header.
    `status` forces an answer for a good token (e.g. a 503)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.revoked: set[str] = set()
        self.redirect_to: str | None = None
        self.suppress_honoured = True
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                recorder.requests.append(
                    {
                        "path": self.path,
                        # Names as sent: urllib capitalises only the first letter.
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": self.rfile.read(length),
                    }
                )
                status, headers, body = recorder.answer(self.headers)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST  # a followed redirect arrives as a GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token_ok(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        good = token == TOKEN or token.startswith("job-access-token-")
        return scheme == "Bearer" and good and token not in self.revoked

    def answer(self, headers: Any) -> tuple[int, dict[str, str], bytes]:
        if self.token_ok(headers.get("Authorization")):
            return self.status, {}, b""
        suppressed = headers.get("X-TFS-FedAuthRedirect") == "Suppress"
        if suppressed and self.suppress_honoured:
            return 401, {"WWW-Authenticate": "Bearer"}, b""
        if self.redirect_to is not None:
            return 302, {"Location": self.redirect_to + "/_signin?realm=dev.azure.com"}, b""
        return 203, {"Content-Type": "text/html; charset=utf-8"}, SIGN_IN_PAGE

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def azure() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.stop()


def check_headers(azure: Recorder, key: str) -> dict[str, str]:
    """What an Invoke REST API check in callback mode sends (its headers template)."""
    return {
        "Authorization": "Basic " + base64.b64encode(f":{key}".encode()).decode(),
        "PlanUrl": f"{azure.url}/fabrikam/",
        "ProjectId": ADO_PROJECT,
        "HubName": "checks",
        "PlanId": PLAN,
        "JobId": JOB,
        "TimelineId": "5e6f7a8b-5555-4c2b-9d1e-0000timeline",
        "TaskInstanceId": TASK,
        "AuthToken": TOKEN,
    }


def callbacks(ctx: Any) -> list[OutboxMessage]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.channel == "ado_callback")
                .order_by(OutboxMessage.id)
            )
        )


def deliver(message: OutboxMessage, settings: Any) -> None:
    send = find_sender(message.channel)  # as the delivery job finds it
    assert send is not None
    send(message, settings)


@pytest.fixture
def check(client: Any, make_key: Any, run_key: str, azure: Recorder) -> dict[str, Any]:
    response = client.post(
        f"{API}/approval",
        json={"run_key": run_key, "callback": True},
        headers=check_headers(azure, make_key("azdev_devops", ["to"])),
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"
    return dict(response.json())


def test_an_approval_calls_the_check_back_with_succeeded(
    client, check, people, ctx, settings, azure
):
    assert callbacks(ctx) == []  # nothing until the decision
    for person in ("alice", "bob"):
        response = client.post(
            f"{API}/approval/{check['id']}/sign",
            json={"decision": "approve"},
            headers=people[person].headers,
        )
        assert response.status_code == 200
    [message] = callbacks(ctx)
    deliver(message, settings)
    [request] = azure.requests
    assert request["path"] == (
        f"/fabrikam/{ADO_PROJECT}/_apis/distributedtask/hubs/checks/plans/{PLAN}/events"
        "?api-version=2.0-preview.1"
    )
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {
        "name": "TaskCompleted",
        "taskId": TASK,
        "jobId": JOB,
        "result": "succeeded",
    }


def test_the_token_is_a_secret_kept_sealed(client, check, ctx):
    with ctx.read() as session:
        bodies = [bytes(body) for body in session.scalars(select(AuditInbox.body))]
        [stored] = session.scalars(select(ApprovalCallback)).all()
        assert TOKEN not in stored.token_sealed
    assert any(b"approval.callback" in body for body in bodies)
    assert not any(TOKEN.encode() in body for body in bodies)
    assert "s3cr3t" not in repr(stored.token_sealed)


def test_expiry_calls_the_check_back_with_failed(check, ctx, settings, azure, clock):
    clock.advance(timedelta(hours=24))
    assert expire_due(ctx) == [check["id"]]
    [message] = callbacks(ctx)
    assert TOKEN not in json.dumps(message.payload)
    deliver(message, settings)
    assert json.loads(azure.requests[0]["body"])["result"] == "failed"


def test_a_check_arriving_after_the_decision_is_answered_at_once(
    client, check, people, ctx, make_key, azure
):
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject", "comment": "no"},
        headers=people["bob"].headers,
    )
    headers = {**check_headers(azure, make_key("azdev_devops", ["to"])), "JobId": "job-2"}
    again = client.post(
        f"{API}/approval", json={"run_key": check["run_key"], "callback": True}, headers=headers
    )
    assert again.json()["status"] == "rejected"
    assert [m.payload["result"] for m in callbacks(ctx)] == ["failed", "failed"]
    assert [m.payload["job_id"] for m in callbacks(ctx)] == [JOB, "job-2"]


def test_callback_mode_needs_the_check_headers(client, make_key, run_key, azure):
    headers = check_headers(azure, make_key("azdev_devops", ["to"]))
    del headers["AuthToken"]
    response = client.post(
        f"{API}/approval", json={"run_key": run_key, "callback": True}, headers=headers
    )
    assert response.status_code == 422
    assert "AuthToken" in response.json()["detail"]


def test_a_lapsed_token_is_a_permanent_failure(client, check, people, ctx, settings, azure):
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject"},
        headers=people["bob"].headers,
    )
    [message] = callbacks(ctx)
    azure.revoked.add(TOKEN)
    with pytest.raises(DeliveryError) as caught:
        deliver(message, settings)
    assert caught.value.permanent
    assert "401" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_the_callback_asks_for_a_401_rather_than_a_sign_in_page(
    client, check, people, ctx, settings, azure
):
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject"},
        headers=people["bob"].headers,
    )
    [message] = callbacks(ctx)
    deliver(message, settings)
    assert azure.requests[0]["headers"]["x-tfs-fedauthredirect"] == "Suppress"


def test_a_sign_in_page_is_not_a_delivery(client, check, people, ctx, settings, azure):
    # A server that ignores X-TFS-FedAuthRedirect answers a lapsed token with a 203 and
    # its HTML sign-in page: the check was not told anything.
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject"},
        headers=people["bob"].headers,
    )
    azure.revoked.add(TOKEN)
    azure.suppress_honoured = False
    report = deliver_due(ctx, settings)
    assert (report.delivered, report.failed) == (0, 1), report
    [message] = callbacks(ctx)
    assert message.state == "failed"
    assert "203" in (message.last_error or "")


def test_an_html_page_with_a_200_is_not_a_delivery(check, ctx, settings, azure, clock):
    clock.advance(timedelta(hours=24))
    expire_due(ctx)
    [message] = callbacks(ctx)
    azure.status = 200
    original = azure.answer
    azure.answer = lambda headers: (  # type: ignore[method-assign]
        200,
        {"Content-Type": "text/html"},
        SIGN_IN_PAGE,
    )
    with pytest.raises(DeliveryError) as caught:
        deliver(message, settings)
    azure.answer = original  # type: ignore[method-assign]
    assert caught.value.permanent
    assert "HTML" in str(caught.value)


def test_a_redirect_is_never_followed_with_the_token(client, check, people, ctx, settings, azure):
    sign_in_host = Recorder()
    try:
        client.post(
            f"{API}/approval/{check['id']}/sign",
            json={"decision": "reject"},
            headers=people["bob"].headers,
        )
        azure.revoked.add(TOKEN)
        azure.suppress_honoured = False
        azure.redirect_to = sign_in_host.url
        report = deliver_due(ctx, settings)
    finally:
        sign_in_host.stop()
    assert sign_in_host.requests == []  # the token went nowhere else
    assert (report.delivered, report.failed) == (0, 1)
    assert "302" in (callbacks(ctx)[0].last_error or "")


def test_the_token_is_deleted_once_the_check_is_answered(
    client, check, people, ctx, settings, azure
):
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject"},
        headers=people["bob"].headers,
    )
    assert deliver_due(ctx, settings).delivered == 1
    [message] = callbacks(ctx)
    assert message.state == "delivered"
    assert "token_sealed" not in message.payload
    with ctx.read() as session:
        [stored] = session.scalars(select(ApprovalCallback)).all()
    assert stored.token_sealed is None


def test_a_failed_callback_keeps_its_token_for_a_retry(client, check, people, ctx, settings, azure):
    client.post(
        f"{API}/approval/{check['id']}/sign",
        json={"decision": "reject"},
        headers=people["bob"].headers,
    )
    azure.status = 503
    assert deliver_due(ctx, settings).retried == 1
    with ctx.read() as session:
        [stored] = session.scalars(select(ApprovalCallback)).all()
    assert stored.token_sealed is not None
    assert "token_sealed" in callbacks(ctx)[0].payload


@pytest.mark.parametrize(
    "url",
    [
        "http://ado.example/fabrikam/_apis/x",
        "http://10.0.0.7/fabrikam/_apis/x",
        "ftp://ado.example/x",
    ],
)
def test_the_sender_refuses_plain_http_off_loopback(check, ctx, settings, azure, clock, url):
    clock.advance(timedelta(hours=24))
    expire_due(ctx)
    [message] = callbacks(ctx)
    message.payload = {**message.payload, "url": url}
    with pytest.raises(DeliveryError) as caught:
        deliver(message, settings)
    assert caught.value.permanent
    assert url not in str(caught.value)


def test_a_plain_http_plan_url_is_refused_off_loopback(client, make_key, run_key, azure, settings):
    client.app.state.settings = settings.model_copy(
        update={"ado_callback_hosts": ["127.0.0.1", "ado.example"]}
    )
    key = make_key("azdev_devops", ["to"])
    plain = {**check_headers(azure, key), "PlanUrl": "http://ado.example/fabrikam/"}
    response = client.post(
        f"{API}/approval", json={"run_key": run_key, "callback": True}, headers=plain
    )
    assert response.status_code == 422, response.text
    assert "https" in response.json()["detail"]
    secure = {**check_headers(azure, key), "PlanUrl": "https://ado.example/fabrikam/"}
    response = client.post(
        f"{API}/approval", json={"run_key": run_key, "callback": True}, headers=secure
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "plan_url",
    [
        "https://attacker.example/fabrikam/",
        "https://dev.azure.com.attacker.example/fabrikam/",
        "http://169.254.169.254/latest/",
    ],
)
def test_the_token_goes_only_to_azure_devops_hosts(client, make_key, run_key, azure, plan_url):
    headers = {**check_headers(azure, make_key("azdev_devops", ["to"])), "PlanUrl": plan_url}
    response = client.post(
        f"{API}/approval", json={"run_key": run_key, "callback": True}, headers=headers
    )
    assert response.status_code == 422
    assert "not an Azure DevOps host" in response.json()["detail"]


def test_the_default_hosts_are_azure_devops_only():
    from azdev_ica.api.routes.approvals import _check_plan_url
    from azdev_ica.errors import ValidationProblem
    from azdev_ica.settings import Settings

    allowed = Settings(secret_key="x" * 48).ado_callback_hosts
    for good in ("https://dev.azure.com/fabrikam/", "https://fabrikam.visualstudio.com/"):
        _check_plan_url(good, allowed)
    for bad in ("https://visualstudio.com.evil.example/", "https://127.0.0.1/"):
        with pytest.raises(ValidationProblem):
            _check_plan_url(bad, allowed)
