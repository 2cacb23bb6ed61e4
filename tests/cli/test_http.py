"""The pipeline client's HTTP behaviour against a real, misbehaving HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from azdev_ica.cli import http


class Script:
    """What the server answers, request by request, and what it saw."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []


@pytest.fixture
def flaky() -> Iterator[Any]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append({"headers": dict(self.headers), "body": body, "path": self.path})
            status, headers, payload = script.answers.pop(0)
            if status == 0:  # drop the connection without an answer
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield script
    server.shutdown()
    server.server_close()


PROBLEM = json.dumps({"type": "urn:ica:problem:x", "title": "Busy", "status": 503}).encode()
OK = json.dumps({"run_key": "ado:p:1"}).encode()
JSON = {"Content-Type": "application/json"}


def client(url: str, sleeps: list[float], timeout: float = 30.0) -> http.Client:
    return http.Client(url, "secret-token", timeout=timeout, sleep=sleeps.append, rng=lambda: 0.5)


def test_retries_keep_one_idempotency_key_and_honour_retry_after(flaky):
    flaky.answers = [
        (503, {"Retry-After": "3", **JSON}, PROBLEM),
        (0, {}, b""),
        (502, {}, b"<html>bad gateway</html>"),
        (201, JSON, OK),
    ]
    sleeps: list[float] = []
    answer = client(flaky.url, sleeps).post_json("/run/start", {"a": 1}, "key-1")
    assert (answer.status, answer.data, answer.attempts) == (201, {"run_key": "ado:p:1"}, 4)
    assert [seen["headers"]["Idempotency-Key"] for seen in flaky.seen] == ["key-1"] * 4
    assert {seen["headers"]["Authorization"] for seen in flaky.seen} == {"Bearer secret-token"}
    assert {seen["body"] for seen in flaky.seen} == {b'{"a":1}'}
    assert sleeps[0] == 3.0  # Retry-After beats the 0.375 s back-off
    assert sleeps[1:] == [0.75, 1.5]  # equal jitter with rng 0.5: 3/4 of 1 s, then of 2 s


@pytest.mark.parametrize(
    ("status", "kind", "exit_code"),
    [(400, http.RequestRefused, 3), (409, http.RequestRefused, 3), (422, http.RequestRefused, 3),
     (401, http.AuthRefused, 4), (403, http.AuthRefused, 4), (500, http.ServerFailed, 5)],
)  # fmt: skip
def test_refusals_are_not_retried_and_map_to_exit_codes(flaky, status, kind, exit_code):
    problem = {"type": "urn:ica:problem:x", "title": "No", "status": status, "detail": "why"}
    flaky.answers = [(status, JSON, json.dumps(problem).encode())]
    with pytest.raises(kind) as raised:
        client(flaky.url, []).post_json("/x", {}, "k")
    assert raised.value.exit_code == exit_code
    assert raised.value.problem == problem
    assert raised.value.message == f"{status} No: why"
    assert len(flaky.seen) == 1


def test_gives_up_within_the_time_budget(flaky):
    flaky.answers = [(503, JSON, PROBLEM)] * 50
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    api = http.Client(
        flaky.url, None, timeout=5, sleep=sleep, rng=lambda: 1.0, clock=lambda: now[0]
    )
    with pytest.raises(http.ServerFailed) as raised:
        api.get_json("/x")
    assert raised.value.exit_code == 5
    assert "gave up after" in raised.value.message
    assert now[0] <= 5
    assert "Authorization" not in flaky.seen[0]["headers"]


def test_a_redirect_is_not_followed(flaky):
    flaky.answers = [(302, {"Location": "http://elsewhere.example/steal"}, b"")]
    with pytest.raises(http.BadResponse) as raised:
        client(flaky.url, []).get_json("/x")
    assert "redirect" in raised.value.message
    assert len(flaky.seen) == 1


def test_a_success_that_is_not_json_is_a_bad_response(flaky):
    flaky.answers = [(200, {}, b"<html>login page</html>")]
    with pytest.raises(http.BadResponse):
        client(flaky.url, []).get_json("/x")


def test_credentials_in_the_url_never_reach_messages():
    assert http.redact_url("https://user:pw@ica.example:8443/x") == "https://ica.example:8443/x"
    with pytest.raises(ValueError, match="not an http"):
        http.Client("ftp://ica.example", None)


def test_an_expired_workload_token_is_fetched_again_once(flaky):
    """A workload-identity token that expired during a long wait: ICA answers 401, the
    client asks the identity provider once more and repeats the request with the new token;
    a second 401 is a refusal (exit 4), not a loop."""
    problem = json.dumps({"type": "urn:ica:problem:x", "title": "No", "status": 401}).encode()
    tokens = iter(["fresh-1", "fresh-2"])
    flaky.answers = [(401, JSON, problem), (200, JSON, OK)]
    workload = http.Client(flaky.url, "expired", timeout=30, refresh=lambda: next(tokens))
    assert workload.get_json("/x").data == {"run_key": "ado:p:1"}
    assert [s["headers"]["Authorization"] for s in flaky.seen] == [
        "Bearer expired",
        "Bearer fresh-1",
    ]
    flaky.answers = [(401, JSON, problem), (401, JSON, problem)]
    again = http.Client(flaky.url, "expired", timeout=30, refresh=lambda: next(tokens))
    with pytest.raises(http.AuthRefused):
        again.get_json("/x")
    assert flaky.seen[-1]["headers"]["Authorization"] == "Bearer fresh-2"
    assert len(flaky.seen) == 4


def test_an_api_key_is_never_refreshed(flaky):
    problem = json.dumps({"type": "urn:ica:problem:x", "title": "No", "status": 401}).encode()
    flaky.answers = [(401, JSON, problem)]
    with pytest.raises(http.AuthRefused):
        http.client_from_env(flaky.url, {"ICA_TOKEN": "k"}, timeout=5).get_json("/x")
    assert len(flaky.seen) == 1


@pytest.mark.parametrize("token", ["k\r\nX-Injected: 1", "k\nX-Injected: 1", "k\x00"])
def test_a_token_with_a_line_break_is_never_sent(flaky, token):
    # A raw socket client must refuse what http.client refuses: a CR/LF would end the
    # Authorization header early and smuggle in headers of the caller's choosing.
    flaky.answers = [(200, JSON, OK)]
    with pytest.raises(http.Unsendable) as raised:
        http.Client(flaky.url, token, timeout=5).post_json("/x", {"a": 1}, "key-1")
    assert raised.value.exit_code == 64
    assert "the token" in raised.value.message
    assert "X-Injected" not in raised.value.message
    assert flaky.seen == []
