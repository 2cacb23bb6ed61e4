"""GitHub custom deployment protection rule: the signed webhook opens (or reuses) the run's
approval; when it is decided or expires, the delivery job answers the run's review URL on a
fake GitHub exactly as GitHub documents it (pipelines.md §4.2)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from azdev_ica.adapters.notify import DeliveryError, find_sender
from azdev_ica.db.tables import Approval, AuditInbox, GithubReview, OutboxMessage
from azdev_ica.jobs.delivery import deliver_due
from azdev_ica.services.approvals import expire_due
from tests.github.conftest import (
    API,
    COMMIT,
    DIGEST,
    INSTALLATION_ID,
    REPOSITORY,
    RUN_ID,
    RUN_KEY,
    FakeGitHub,
    callback_url,
    post_webhook,
    rule_payload,
)


def audit_actions(ctx: Any) -> list[str]:
    with ctx.read() as session:
        return [
            json.loads(bytes(body))["action"] for body in session.scalars(select(AuditInbox.body))
        ]


def reviews(ctx: Any) -> list[GithubReview]:
    with ctx.read() as session:
        return list(session.scalars(select(GithubReview).order_by(GithubReview.id)))


def review_messages(ctx: Any) -> list[OutboxMessage]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.channel == "github_review")
                .order_by(OutboxMessage.id)
            )
        )


def sign(client: Any, approval_id: int, person: Any, decision: str = "approve") -> Any:
    return client.post(
        f"{API}/approval/{approval_id}/sign", json={"decision": decision}, headers=person.headers
    )


def link(approval_id: int) -> str:
    return f"https://ica.localhost/approvals/{approval_id}"


def expected_review(environment: str, state: str, comment: str) -> dict[str, Any]:
    owner, repo = REPOSITORY.split("/")
    return {
        "owner": owner,
        "repo": repo,
        "run": RUN_ID,
        "body": {"environment_name": environment, "state": state, "comment": comment},
    }


@pytest.fixture
def opened(client: Any, github: FakeGitHub, run_key: str) -> dict[str, Any]:
    response = post_webhook(client, rule_payload(github.url))
    assert response.status_code == 202, response.text
    return dict(response.json())


# --- the signature ----------------------------------------------------------------------------


def test_a_signed_delivery_opens_the_runs_approval(client, ctx, github, run_key):
    response = post_webhook(client, rule_payload(github.url))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["run_key"] == RUN_KEY
    assert answer["status"] == "waiting"
    assert answer["duplicate"] is False
    with ctx.read() as session:
        approval = session.get(Approval, answer["approval_id"])
        assert approval is not None
        assert (approval.tenant, approval.stage, approval.status) == ("to", "production", "pending")
        assert (approval.artifact_digest, approval.commit) == (DIGEST, COMMIT)
        # GitHub says who created the deployment: the requester, as a github-linked user.
        assert (approval.requester_provider, approval.requester_provider_id) == ("github", "5001")
    [review] = reviews(ctx)
    assert (review.approval_id, review.answer, review.installation_id) == (
        answer["approval_id"],
        None,
        INSTALLATION_ID,
    )
    assert review.callback_url == callback_url(github.url)
    assert audit_actions(ctx).count("github.review") == 1
    assert review_messages(ctx) == []  # nothing to answer until the decision
    assert github.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": "sha1=abc"},
        {"X-Hub-Signature-256": "sha256=é".encode("latin-1")},
        {},
    ],
    ids=["wrong", "other-scheme", "not-ascii", "missing"],
)
def test_a_bad_or_missing_signature_is_401_and_leaves_no_trace(
    client, ctx, github, run_key, headers
):
    before = audit_actions(ctx)
    body = json.dumps(rule_payload(github.url)).encode()
    response = client.post(
        f"{API}/github/webhook",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "deployment_protection_rule",
            "X-GitHub-Delivery": "d-1",
            **headers,
        },
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:ica:problem:unauthenticated"
    assert reviews(ctx) == []
    assert audit_actions(ctx) == before


def test_a_body_signed_with_another_secret_is_refused(client, ctx, github, run_key):
    response = post_webhook(client, rule_payload(github.url), secret="another-secret")
    assert response.status_code == 401
    assert reviews(ctx) == []


def test_a_signature_over_another_body_is_refused(client, ctx, github, run_key):
    payload = rule_payload(github.url)
    signed_body = json.dumps(payload).encode()
    tampered = json.dumps({**payload, "environment": "to-production "}).encode()
    response = client.post(
        f"{API}/github/webhook",
        content=tampered,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "deployment_protection_rule",
            "X-GitHub-Delivery": "d-2",
            "X-Hub-Signature-256": post_signature(signed_body),
        },
    )
    assert response.status_code == 401


def post_signature(body: bytes) -> str:
    from tests.github.conftest import signature

    return signature(body)


def test_without_a_configured_secret_no_webhook_is_taken(app, client, ctx, github, settings):
    app.state.settings = settings.model_copy(update={"github_webhook_secret": SecretStr("")})
    response = post_webhook(client, rule_payload(github.url), secret="")
    assert response.status_code == 401
    assert reviews(ctx) == []


def test_ping_and_other_events_are_acknowledged_and_ignored(client, ctx, github, run_key):
    before = audit_actions(ctx)
    ping = {"zen": "Design for failure.", "hook_id": 1, "hook": {"type": "App"}}
    assert post_webhook(client, ping, event="ping").status_code == 204
    assert post_webhook(client, {"action": "created"}, event="installation").status_code == 204
    # A protection rule event of another action is not a request either.
    other = {**rule_payload(github.url), "action": "completed"}
    assert post_webhook(client, other).status_code == 204
    assert reviews(ctx) == []
    assert audit_actions(ctx) == before
    # Unsigned, even a ping is refused.
    assert post_webhook(client, ping, event="ping", sign=False).status_code == 401


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"payload=%7B%7D"])
def test_a_body_that_is_not_json_is_a_400_problem(client, ctx, run_key, raw):
    response = post_webhook(client, None, raw=raw)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert reviews(ctx) == []


@pytest.mark.parametrize(
    ("change", "delivery"),
    [
        ({"environment": None}, "d-1"),
        ({"environment": ""}, "d-1"),
        ({"deployment_callback_url": "https://api.github.com/repos/a/b/actions/runs/x/y"}, "d-1"),
        ({"deployment_callback_url": 7}, "d-1"),
        ({"installation": {"id": "1"}}, "d-1"),
        ({"installation": None}, "d-1"),
        ({"repository": {"id": True, "full_name": REPOSITORY}}, "d-1"),
        ({"repository": {"id": 1, "full_name": "someone/else"}}, "d-1"),
        ({}, "not a delivery id!"),
    ],
)
def test_a_body_missing_what_ica_needs_is_a_422_problem(
    client, ctx, github, run_key, change, delivery
):
    payload = {**rule_payload(github.url), **change}
    response = post_webhook(client, payload, delivery=delivery)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert reviews(ctx) == []


def test_a_body_that_is_a_json_array_is_ignored_not_a_500(client, run_key):
    assert post_webhook(client, [1, 2]).status_code == 204


# --- replays ----------------------------------------------------------------------------------


def test_a_replayed_delivery_creates_nothing_new(client, ctx, github, opened):
    again = post_webhook(client, rule_payload(github.url))
    assert again.status_code == 200
    assert again.json() == {**opened, "duplicate": True}
    assert len(reviews(ctx)) == 1
    assert audit_actions(ctx).count("github.review") == 1
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(Approval)) == 1


def test_another_delivery_for_the_same_job_reuses_the_open_approval(client, ctx, github, opened):
    again = post_webhook(client, rule_payload(github.url), delivery="second-delivery")
    assert again.status_code == 202
    assert again.json()["approval_id"] == opened["approval_id"]
    assert again.json()["duplicate"] is False
    assert [r.approval_id for r in reviews(ctx)] == [opened["approval_id"]] * 2


# --- the answers ------------------------------------------------------------------------------


def test_two_signatures_answer_approved(client, ctx, settings, github, opened, people):
    approval_id = opened["approval_id"]
    assert sign(client, approval_id, people["alice"]).status_code == 200
    assert deliver_due(ctx, settings).failed == 0
    assert github.requests == []  # one half is no decision
    assert sign(client, approval_id, people["bob"]).status_code == 200
    report = deliver_due(ctx, settings)
    assert report.errors == []
    assert github.problems == []
    token_request, review_request = github.requests
    assert token_request["path"] == f"/app/installations/{INSTALLATION_ID}/access_tokens"
    assert review_request["path"] == (
        f"/repos/{REPOSITORY}/actions/runs/{RUN_ID}/deployment_protection_rule"
    )
    assert review_request["headers"]["authorization"] == f"Bearer {github.minted[0]}"
    assert review_request["headers"]["accept"] == "application/vnd.github+json"
    assert review_request["headers"]["x-github-api-version"] == "2022-11-28"
    assert review_request["headers"]["content-type"] == "application/json"
    assert github.reviews == [
        expected_review(
            "production", "approved", f"ICA approval {approval_id}: approved. {link(approval_id)}"
        )
    ]
    [message] = review_messages(ctx)
    assert message.state == "delivered"
    assert reviews(ctx)[0].answer == "approved"
    # Delivered once: a later pass sends nothing more.
    deliver_due(ctx, settings)
    assert len(github.requests) == 2


def test_a_rejection_answers_rejected(client, ctx, settings, github, opened, people):
    approval_id = opened["approval_id"]
    assert sign(client, approval_id, people["bob"], "reject").status_code == 200
    deliver_due(ctx, settings)
    assert github.reviews == [
        expected_review(
            "production", "rejected", f"ICA approval {approval_id}: rejected. {link(approval_id)}"
        )
    ]


def test_expiry_answers_rejected(ctx, clock, settings, github, opened):
    approval_id = opened["approval_id"]
    clock.advance(timedelta(hours=23))
    assert expire_due(ctx) == []
    clock.advance(timedelta(hours=2))  # past the example policy's 24-hour expiry
    assert expire_due(ctx) == [approval_id]
    deliver_due(ctx, settings)
    assert github.reviews == [
        expected_review(
            "production", "rejected", f"ICA approval {approval_id}: expired. {link(approval_id)}"
        )
    ]


def test_a_withdrawal_answers_rejected(client, ctx, settings, github, opened, people):
    approval_id = opened["approval_id"]
    # The requesting side withdraws: rita created the deployment (GitHub user 5001, linked).
    response = client.post(
        f"{API}/approval/{approval_id}/withdraw",
        json={"reason": "wrong build"},
        headers=people["rita"].headers,
    )
    assert response.status_code == 200, response.text
    deliver_due(ctx, settings)
    assert github.reviews == [
        expected_review(
            "production", "rejected", f"ICA approval {approval_id}: withdrawn. {link(approval_id)}"
        )
    ]


def test_a_request_the_pipeline_opened_is_reused_as_bound(client, ctx, github, run_key):
    from azdev_ica.services.approvals import RequestApproval, request_approval
    from tests.github.conftest import PIPELINE

    asked = request_approval(
        ctx,
        principal=PIPELINE,
        command=RequestApproval(
            run_key=run_key, cost_impact_minor=125000, budget_minor=200000, currency="NZD"
        ),
    )
    response = post_webhook(client, rule_payload(github.url, environment="to-production"))
    assert response.status_code == 202
    assert response.json()["approval_id"] == asked.approval.id
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(Approval)) == 1


def test_the_deployment_creator_cannot_sign(client, ctx, opened, people):
    response = sign(client, opened["approval_id"], people["rita"])
    assert response.status_code == 403
    assert response.json()["type"] == "urn:ica:problem:approval-refused"


def test_a_decision_that_stands_is_answered_at_once(client, ctx, settings, github, opened, people):
    approval_id = opened["approval_id"]
    sign(client, approval_id, people["alice"])
    sign(client, approval_id, people["bob"])
    deliver_due(ctx, settings)
    # The job is re-run: GitHub asks again with a new delivery; the approval stands.
    again = post_webhook(client, rule_payload(github.url), delivery="rerun-delivery")
    assert again.status_code == 202
    assert again.json()["status"] == "approved"
    assert again.json()["approval_id"] == approval_id
    deliver_due(ctx, settings)
    assert [r["body"]["state"] for r in github.reviews] == ["approved", "approved"]


# --- what cannot be opened is rejected at once -----------------------------------------------


def test_a_run_ica_never_saw_is_rejected_with_a_clear_comment(client, ctx, settings, github):
    response = post_webhook(client, rule_payload(github.url))
    assert response.status_code == 202
    assert response.json() == {
        "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "run_key": RUN_KEY,
        "approval_id": None,
        "status": "rejected",
        "duplicate": False,
    }
    assert audit_actions(ctx).count("github.review") == 1
    deliver_due(ctx, settings)
    [review] = github.reviews
    assert review["body"]["state"] == "rejected"
    assert review["body"]["comment"] == (
        f"ICA: ICA has no run {RUN_KEY}: record it with `ica run start` in a job before the "
        "protected one, then re-run the job"
    )


@pytest.mark.parametrize(
    ("environment", "opens", "stage"),
    [
        ("production", True, "production"),
        ("Production", True, "production"),
        ("to-production", True, "production"),
        ("TO-staging", True, "staging"),
        ("ws-production", False, None),  # Samoa: not the run's tenant
        ("prod", False, None),
        ("xx-production", False, None),
    ],
)
def test_the_environment_names_the_target(
    client, ctx, settings, github, run_key, environment, opens, stage
):
    response = post_webhook(client, rule_payload(github.url, environment=environment))
    assert response.status_code == 202, response.text
    [review] = reviews(ctx)
    if opens:
        assert response.json()["status"] == "waiting"
        assert (review.tenant, review.stage) == ("to", stage)
        return
    assert response.json()["status"] == "rejected"
    deliver_due(ctx, settings)
    [answer] = github.reviews
    assert answer["body"]["environment_name"] == environment
    assert answer["body"]["state"] == "rejected"
    assert answer["body"]["comment"].startswith("ICA: ")


# --- delivery failures ------------------------------------------------------------------------


def test_a_callback_url_off_the_github_api_is_never_called(
    client, ctx, settings, github, run_key, people
):
    elsewhere = "https://attacker.example" + callback_url("")
    response = post_webhook(client, rule_payload(github.url, url=elsewhere))
    assert response.status_code == 202
    approval_id = response.json()["approval_id"]
    sign(client, approval_id, people["alice"])
    sign(client, approval_id, people["bob"])
    report = deliver_due(ctx, settings)
    assert report.failed == 1
    [message] = review_messages(ctx)
    assert message.state == "failed"
    assert message.last_error == (
        "GitHub deployment review: the callback URL is not on the configured GitHub API"
    )
    assert github.requests == []  # not even a token was minted


def test_github_answering_5xx_is_retried_with_back_off(
    client, ctx, clock, settings, github, opened, people
):
    approval_id = opened["approval_id"]
    sign(client, approval_id, people["alice"])
    sign(client, approval_id, people["bob"])
    github.review_status = 502
    report = deliver_due(ctx, settings, rng=lambda: 0.0)
    assert report.retried == 1
    [message] = review_messages(ctx)
    assert (message.state, message.attempts) == ("pending", 1)
    assert message.last_error == "GitHub deployment review answered HTTP 502"
    # The first back-off (outbox_backoff_seconds 30 at jitter 0 → 15 s): not due before.
    assert message.next_attempt_at == clock.now() + timedelta(seconds=15)
    deliver_due(ctx, settings)
    assert len(github.requests) == 2
    github.review_status = 204
    clock.advance(timedelta(seconds=15))
    assert deliver_due(ctx, settings).delivered == 1
    [message] = review_messages(ctx)
    assert (message.state, message.attempts) == ("delivered", 2)
    assert [r["body"]["state"] for r in github.reviews] == ["approved"]
    assert len(github.minted) == 2  # a fresh installation token per attempt


def test_a_wrong_app_key_fails_the_message_without_calling_the_review(
    client, ctx, settings, github, opened, people, tmp_path
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    approval_id = opened["approval_id"]
    sign(client, approval_id, people["alice"])
    sign(client, approval_id, people["bob"])
    report = deliver_due(ctx, settings.model_copy(update={"github_app_private_key_file": wrong}))
    assert report.failed == 1  # GitHub's 401 cannot be helped by retrying
    assert [r["path"] for r in github.requests] == [
        f"/app/installations/{INSTALLATION_ID}/access_tokens"
    ]
    assert github.reviews == []
    [problem] = github.problems
    assert problem.startswith("JWT:")


def test_a_redirect_is_never_followed_with_the_installation_token(
    client, ctx, settings, github, opened, people
):
    from tests.approvals.test_ado_callback import Recorder

    elsewhere = Recorder()
    try:
        github.moved_to = elsewhere.url  # the repository was renamed
        assert sign(client, opened["approval_id"], people["bob"], "reject").status_code == 200
        report = deliver_due(ctx, settings)
    finally:
        elsewhere.stop()
    assert elsewhere.requests == []  # the token went nowhere else
    assert (report.delivered, report.failed) == (0, 1), report
    assert "301" in report.errors[0]


def test_the_review_goes_over_https_only_off_loopback(
    client, ctx, settings, github, opened, people
):
    plain = settings.model_copy(update={"github_api_url": "http://github.example/api/v3"})
    assert sign(client, opened["approval_id"], people["bob"], "reject").status_code == 200
    with ctx.read() as session:
        message = session.scalars(
            select(OutboxMessage).where(OutboxMessage.channel == "github_review")
        ).one()
    message.payload = {**message.payload, "url": callback_url("http://github.example/api/v3")}
    send = find_sender("github_review")
    assert send is not None
    with pytest.raises(DeliveryError) as caught:
        send(message, plain)
    assert caught.value.permanent
    assert "http" in str(caught.value)
    assert github.requests == []
