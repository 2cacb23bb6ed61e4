"""Delivering the outbox to real listeners on loopback: webhook, PagerDuty, SMTP; retries."""

from __future__ import annotations

import logging
import sys
import threading
import types
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from azdev_ica.jobs.delivery import backoff_seconds, deliver_due
from azdev_ica.settings import Settings
from tests.notify.conftest import queue, rows, with_notify
from tests.notify.listeners import SmtpListener

NO_JITTER = {"rng": lambda: 0.0}  # the back-off is then exactly half the nominal delay
SECRET_PATH = "/hooks/s3cr3t-webhook-token"


def webhook(settings: Any, recorder: Any, **more: Any) -> Any:
    return with_notify(
        settings,
        {
            "channels": {"chat": {"type": "webhook", "url": recorder.url + SECRET_PATH}},
            "routes": [{"topics": ["approval.*"], "channels": ["chat"]}],
        },
        **more,
    )


def by_channel(ctx: Any, channel: str) -> list[Any]:
    return [row for row in rows(ctx) if row.channel == channel]


class TestWebhook:
    def test_a_notify_row_fans_out_and_posts_text(self, ctx, settings, http_listener):
        configured = webhook(settings, http_listener)
        parent = queue(ctx, summary="Approval 7 for ws/production awaits you")
        report = deliver_due(ctx, configured)
        assert (report.fanned_out, report.delivered) == (1, 1)
        [request] = http_listener.requests
        assert request.path == SECRET_PATH
        assert request.headers["content-type"] == "application/json"
        assert request.json() == {
            "text": "[ICA] Approval 7 for ws/production awaits you\n"
            "https://ica.localhost/approvals/7"
        }
        [notify] = by_channel(ctx, "notify")
        [child] = by_channel(ctx, "webhook")
        assert notify.id == parent
        assert notify.state == "delivered"
        assert child.state == "delivered"
        assert child.attempts == 1
        assert child.payload["destination"] == "chat"
        assert child.payload["notify_id"] == parent
        # Delivered once: another pass sends nothing.
        assert deliver_due(ctx, configured).delivered == 0
        assert len(http_listener.requests) == 1

    def test_unrouted_topics_and_tenants_go_nowhere(self, ctx, settings, http_listener):
        configured = with_notify(
            settings,
            {
                "channels": {"chat": {"type": "webhook", "url": http_listener.url}},
                "routes": [{"topics": ["approval.*"], "tenants": ["ck"], "channels": ["chat"]}],
            },
        )
        queue(ctx, topic="gate.denied", tenant="ck")
        queue(ctx, topic="approval.requested", tenant="ws")
        queue(ctx, topic="approval.requested", tenant=None)
        report = deliver_due(ctx, configured)
        assert (report.fanned_out, report.delivered) == (0, 0)
        assert http_listener.requests == []
        # Nobody was told: "no route", never "delivered".
        assert {row.state for row in rows(ctx)} == {"no_route"}
        assert by_channel(ctx, "webhook") == []


class TestRetries:
    def test_temporary_failures_back_off_then_deliver(self, ctx, settings, clock, http_listener):
        http_listener.script = [(500, {}), (503, {})]
        configured = webhook(settings, http_listener, outbox_backoff_seconds=60)
        queue(ctx)
        first = deliver_due(ctx, configured, **NO_JITTER)
        assert (first.retried, first.delivered) == (1, 0)
        [child] = by_channel(ctx, "webhook")
        assert child.state == "pending"
        assert child.attempts == 1
        assert child.next_attempt_at == clock.now() + timedelta(seconds=30)
        assert child.last_error == "webhook chat answered HTTP 500"
        # Not due yet: nothing is sent.
        clock.advance(timedelta(seconds=29))
        assert deliver_due(ctx, configured, **NO_JITTER).retried == 0
        assert len(http_listener.requests) == 1
        clock.advance(timedelta(seconds=1))
        assert deliver_due(ctx, configured, **NO_JITTER).retried == 1
        [child] = by_channel(ctx, "webhook")
        assert child.next_attempt_at == clock.now() + timedelta(seconds=60)  # doubled
        clock.advance(timedelta(seconds=60))
        assert deliver_due(ctx, configured, **NO_JITTER).delivered == 1
        [child] = by_channel(ctx, "webhook")
        assert (child.state, child.attempts, child.last_error) == ("delivered", 3, None)
        assert len(http_listener.requests) == 3

    def test_retry_after_is_honoured(self, ctx, settings, clock, http_listener):
        http_listener.script = [(429, {"Retry-After": "600"})]
        configured = webhook(settings, http_listener)
        queue(ctx)
        deliver_due(ctx, configured, **NO_JITTER)
        [child] = by_channel(ctx, "webhook")
        assert child.next_attempt_at == clock.now() + timedelta(seconds=600)
        clock.advance(timedelta(seconds=599))
        assert deliver_due(ctx, configured).delivered == 0
        clock.advance(timedelta(seconds=1))
        assert deliver_due(ctx, configured).delivered == 1

    def test_a_permanent_failure_stops_at_once(self, ctx, settings, http_listener):
        http_listener.script = [(400, {})]
        configured = webhook(settings, http_listener)
        queue(ctx)
        report = deliver_due(ctx, configured)
        assert report.failed == 1
        [child] = by_channel(ctx, "webhook")
        assert (child.state, child.attempts) == ("failed", 1)
        assert child.last_error == "webhook chat answered HTTP 400"

    def test_gives_up_after_the_last_attempt(self, ctx, settings, clock, http_listener):
        http_listener.ok_status = 502
        configured = webhook(settings, http_listener, outbox_max_attempts=3)
        queue(ctx)
        for _ in range(5):
            deliver_due(ctx, configured)
            clock.advance(timedelta(hours=2))
        [child] = by_channel(ctx, "webhook")
        assert (child.state, child.attempts) == ("failed", 3)
        assert len(http_listener.requests) == 3

    def test_an_unreachable_endpoint_is_retried(self, ctx, settings, http_listener):
        http_listener.stop()  # nothing listens there any more
        configured = webhook(settings, http_listener)
        queue(ctx)
        assert deliver_due(ctx, configured).retried == 1
        [child] = by_channel(ctx, "webhook")
        assert child.state == "pending"
        assert child.last_error.startswith("webhook chat: ")

    def test_secrets_stay_out_of_errors_and_logs(self, ctx, settings, http_listener, caplog):
        caplog.set_level(logging.DEBUG)
        http_listener.script = [(500, {}), (400, {})]
        configured = webhook(settings, http_listener)
        queue(ctx)
        deliver_due(ctx, configured)
        [child] = by_channel(ctx, "webhook")
        assert "s3cr3t" not in (child.last_error or "")
        assert "s3cr3t" not in caplog.text

    def test_no_sender_for_a_channel_fails_it(self, ctx, settings):
        queue(ctx, channel="carrier_pigeon")
        assert deliver_due(ctx, settings).failed == 1
        [row] = rows(ctx)
        assert row.state == "failed"
        assert row.last_error == "no sender for channel 'carrier_pigeon'"

    def test_senders_are_found_by_channel_name(self, ctx, settings, monkeypatch):
        sent: list[Any] = []
        module = types.ModuleType("azdev_ica.adapters.notify.test_probe")
        module.send = lambda message, settings: sent.append(message.payload["summary"])  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        queue(ctx, channel="test_probe", summary="hello")
        assert deliver_due(ctx, settings).delivered == 1
        assert sent == ["hello"]


class TestClaims:
    def test_two_deliverers_never_send_a_row_twice(self, ctx, settings, http_listener):
        configured = webhook(settings, http_listener)
        for _ in range(12):
            queue(ctx)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait()
                deliver_due(ctx, configured)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        deliver_due(ctx, configured)  # whatever one pass left for the next
        children = by_channel(ctx, "webhook")
        assert len(children) == 12  # each notify row fanned out once
        assert {child.state for child in children} == {"delivered"}
        assert len(http_listener.requests) == 12
        assert all(child.attempts == 1 for child in children)


class TestPagerDuty:
    def test_trigger_event(self, ctx, settings, http_listener):
        http_listener.ok_status = 202
        configured = with_notify(
            settings,
            {
                "channels": {
                    "on-call": {
                        "type": "pagerduty",
                        "routing_key": "R0UT1NGKEY0123456789012345678901",
                        "base_url": http_listener.url,
                        "severity": "error",
                        "source": "ica.test",
                    }
                },
                "routes": [{"topics": ["approval.sla_escalation"], "channels": ["on-call"]}],
            },
        )
        queue(ctx, topic="approval.sla_escalation", summary="Approval 7 missed its SLA")
        assert deliver_due(ctx, configured).delivered == 1
        [request] = http_listener.requests
        assert request.path == "/v2/enqueue"
        body = request.json()
        assert body["routing_key"] == "R0UT1NGKEY0123456789012345678901"
        assert body["event_action"] == "trigger"
        assert body["dedup_key"] == "ica:approval:7:approval.sla_escalation"
        assert body["payload"]["summary"] == "Approval 7 missed its SLA"
        assert body["payload"]["source"] == "ica.test"
        assert body["payload"]["severity"] == "error"
        assert body["links"] == [
            {"href": "https://ica.localhost/approvals/7", "text": "Open in ICA"}
        ]

    @pytest.mark.parametrize(
        ("alert", "paged"),
        [("critical", "critical"), ("warning", "warning"), ("info", "info"), (None, "error")],
    )
    def test_an_alert_pages_with_its_own_severity(self, ctx, settings, http_listener, alert, paged):
        http_listener.ok_status = 202
        configured = with_notify(
            settings,
            {
                "channels": {
                    "on-call": {
                        "type": "pagerduty",
                        "routing_key": "R0UT1NGKEY0123456789012345678901",
                        "base_url": http_listener.url,
                        "severity": "error",  # only for messages that carry none
                    }
                },
                "routes": [{"topics": ["*"], "channels": ["on-call"]}],
            },
        )
        extra = {} if alert is None else {"severity": alert}
        queue(ctx, topic="scan.critical", summary="Critical findings", **extra)
        assert deliver_due(ctx, configured).delivered == 1
        [request] = http_listener.requests
        assert request.json()["payload"]["severity"] == paged


class TestEmail:
    def smtp(self, settings: Any, listener: Any, **channel: Any) -> Any:
        return with_notify(
            settings,
            {
                "channels": {"mail": {"type": "email", **channel}},
                "routes": [{"topics": ["approval.*"], "channels": ["mail"]}],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": listener.port,
                    "from_address": "ica@example.org",
                },
            },
        )

    def test_mails_the_role_holders_of_the_tenant(self, ctx, settings, smtp_listener, make_person):
        make_person("tina", [("azdev_approver_tech", "ws")], email="tina@example.org")
        make_person("gus", [("azdev_approver_tech", None)], email="gus@example.org")
        make_person("cook", [("azdev_approver_tech", "ck")], email="cook@example.org")
        make_person("biz", [("azdev_approver_biz", "ws")], email="biz@example.org")
        make_person("nomail", [("azdev_approver_tech", "ws")])
        configured = self.smtp(settings, smtp_listener, to=["ops@example.org"])
        queue(ctx, roles=["azdev_approver_tech"], summary="Approval 7 awaits you")
        report = deliver_due(ctx, configured)
        assert report.delivered == 3
        received = sorted(address for m in smtp_listener.messages for address in m.rcpt_tos)
        assert received == ["gus@example.org", "ops@example.org", "tina@example.org"]
        message = smtp_listener.messages[0]
        assert message.mail_from == "ica@example.org"
        text = message.content.decode()
        assert "Subject: [ICA] Approval 7 awaits you" in text
        assert "https://ica.localhost/approvals/7" in text

    def test_a_temporary_refusal_is_retried(self, ctx, settings, clock, smtp_listener):
        smtp_listener.mailbox.refuse_next = 1
        configured = self.smtp(settings, smtp_listener, to=["ops@example.org"])
        queue(ctx)
        assert deliver_due(ctx, configured).retried == 1
        [child] = by_channel(ctx, "email")
        assert child.last_error == "email mail: SMTP 451"
        clock.advance(timedelta(hours=1))
        assert deliver_due(ctx, configured).delivered == 1
        assert len(smtp_listener.messages) == 1

    def test_smtp_auth(self, ctx, settings):
        listener = SmtpListener(credentials=("ica", "pa55word")).start()
        try:
            good = self.smtp(settings, listener, to=["ops@example.org"])
            smtp = good.notify.smtp.model_copy(
                update={"username": "ica", "password": SecretStr("pa55word")}
            )
            configured = good.model_copy(
                update={"notify": good.notify.model_copy(update={"smtp": smtp})}
            )
            queue(ctx)
            assert deliver_due(ctx, configured).delivered == 1
            assert listener.logins == ["ica"]
            assert len(listener.messages) == 1
        finally:
            listener.stop()

    def test_an_unknown_mailbox_fails_for_good(self, ctx, settings, smtp_listener):
        configured = self.smtp(settings, smtp_listener, to=["nobody@example.org"])
        queue(ctx)
        assert deliver_due(ctx, configured).failed == 1
        [child] = by_channel(ctx, "email")
        assert child.state == "failed"
        assert "nobody" not in (child.last_error or "")


@given(
    attempts=st.integers(min_value=1, max_value=60),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    base=st.floats(min_value=0.1, max_value=600),
    cap=st.floats(min_value=1, max_value=86_400),
)
def test_backoff_grows_within_the_cap(attempts: int, jitter: float, base: float, cap: float):
    settings = Settings(outbox_backoff_seconds=base, outbox_backoff_max_seconds=cap)
    delay = backoff_seconds(settings, attempts, jitter)
    nominal = min(cap, base * 2 ** (attempts - 1))
    assert nominal / 2 <= delay <= nominal
    assert backoff_seconds(settings, attempts + 1, jitter) >= delay
