"""cli/wire.py, the pipeline client's own HTTP/1.1 exchange over `_socket`: answers sized by
Content-Length, chunked or ended by the close; https verified against the CA bundle OpenSSL
is told of (SSL_CERT_FILE); proxies from http_proxy/https_proxy with no_proxy honoured; URLs
read as urllib.parse reads them. Real sockets, real TLS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.cli import wire
from tests.siem.receivers import make_ca


class RawServer:
    """Accepts connections; reads one request; answers with `answer(request)` in pieces."""

    def __init__(self, answer: Callable[[bytes], list[bytes]], tls: ssl.SSLContext | None = None):
        self.answer = answer
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    while len(body) < int(line.split(b":")[1]):
                        body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            for piece in self.answer(data):
                conn.sendall(piece)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Callable[[bytes], list[bytes]], **kwargs: object) -> RawServer:
        server = RawServer(answer, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


BODY = b'{"ok": true, "text": "' + b"x" * 5000 + b'"}'


def test_an_answer_sized_by_content_length(serve):
    server = serve(
        lambda _: [
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n",
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY[:100],
            BODY[100:],
        ]
    )
    status, headers, body = wire.exchange(
        "POST", f"http://127.0.0.1:{server.port}/api?x=1#frag", b'{"a":1}', {"X-A": "b"}, 10
    )
    assert (status, headers["content-type"], body) == (201, "application/json", BODY)
    request = server.requests[0]
    assert request.startswith(b"POST /api?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Content-Length: 7\r\n" in request
    assert request.endswith(b'\r\n\r\n{"a":1}')


def test_a_chunked_answer_in_pieces(serve):
    chunks = [BODY[:7], BODY[7:4000], BODY[4000:]]
    wire_chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    server = serve(
        lambda _: [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            *(wire_chunks[i : i + 333] for i in range(0, len(wire_chunks), 333)),
        ]
    )
    status, _, body = wire.exchange("GET", f"http://localhost:{server.port}/", None, {}, 10)
    assert (status, body) == (200, BODY)


def test_an_answer_ended_by_the_close(serve):
    server = serve(lambda _: [b"HTTP/1.0 200 OK\r\n\r\n", BODY])
    assert wire.exchange("GET", f"http://127.0.0.1:{server.port}/", None, {}, 10)[2] == BODY


def test_a_truncated_answer_is_no_answer(serve):
    server = serve(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"])
    with pytest.raises(wire.NoAnswer, match="truncated"):
        wire.exchange("GET", f"http://127.0.0.1:{server.port}/", None, {}, 10)


def test_nobody_listening_is_no_answer():
    port = socket.create_server(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    with pytest.raises(wire.NoAnswer, match="ConnectionRefused"):
        wire.exchange("GET", f"http://127.0.0.1:{closed}/", None, {}, 10)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = make_ca(tmp_path_factory.mktemp("ca"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


def test_https_is_verified_against_the_ca_bundle_openssl_is_given(serve, tls, monkeypatch):
    ca, context = tls
    ok = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]
    server = serve(lambda _: ok, tls=context)
    url = f"https://localhost:{server.port}/x"
    with pytest.raises(wire.CertificateRefused):  # the system's bundle does not know this CA
        wire.exchange("GET", url, None, {}, 10)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert wire.exchange("GET", url, None, {}, 10) == (200, {"content-length": "2"}, b"{}")
    assert server.requests[-1].startswith(b"GET /x HTTP/1.1\r\n")


def test_https_from_the_command_line_loads_ssl_and_plain_http_does_not(serve, tls):
    ca, context = tls
    answer = json.dumps(
        {"event": {"event_id": "e1", "phase": "test", "attempt": 1}, "run": {"run_key": "k"}}
    ).encode()
    ok = [b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)]
    server = serve(lambda _: ok, tls=context)
    probe = (
        "import sys; from azdev_ica.cli.main import main; code = main(sys.argv[1:]); "
        "print('ssl' in sys.modules); sys.exit(code)"
    )
    env = {"PATH": "/usr/bin:/bin", "ICA_TOKEN": "k", "SSL_CERT_FILE": str(ca)}
    env["ICA_URL"] = f"https://localhost:{server.port}"
    argv = [sys.executable, "-c", probe, "run", "event", "test", "--run-key", "k"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["event e1 (test, attempt 1) recorded on k", "True"]
    del env["SSL_CERT_FILE"]
    refused = subprocess.run(
        [*argv, "--timeout", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 5
    assert "TLS verification" in refused.stderr


def test_a_proxy_from_the_environment_carries_the_request(serve, monkeypatch):
    target = serve(lambda _: [b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"d": 1}'])
    proxy = serve(lambda _: [b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"p": 1}'])
    url = f"http://127.0.0.1:{target.port}/api/v1/x"
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    assert wire.exchange("POST", url, b"{}", {"Authorization": "Bearer t"}, 10)[2] == b'{"p": 1}'
    assert proxy.requests[0].startswith(f"POST {url} HTTP/1.1\r\n".encode())
    assert b"Authorization: Bearer t\r\n" in proxy.requests[0]
    monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.1")
    assert wire.exchange("POST", url, b"{}", {}, 10)[2] == b'{"d": 1}'
    assert len(proxy.requests) == 1


URLS = [
    "http://127.0.0.1:8080",
    "https://ICA.Example.org/base/",
    "http://[::1]:9000/a?b=c#d",
    "https://user:secret@ica.example.org:8443/x?y",
    "HTTP://host?q=1",
    "http://host:/p",
    "http://host:0",
]


@pytest.mark.parametrize("url", URLS)
def test_a_url_is_read_as_urllib_reads_it(url):
    ours, theirs = wire.split_url(url), urllib.parse.urlsplit(url)
    assert (ours.scheme, ours.host, ours.port) == (theirs.scheme, theirs.hostname, theirs.port)
    assert ours.target == (theirs.path or "/") + (f"?{theirs.query}" if theirs.query else "")


@pytest.mark.parametrize(
    "url",
    ["ftp://host/", "http:///x", "http://host:x/", "http://host:99999/", "host:80",
     "http://[::1/x", "http://ho st/", "http://host/\tx", "http://@/"],
)  # fmt: skip
def test_anything_else_is_refused(url):
    with pytest.raises(ValueError, match=r"not an http|port is not a number"):
        wire.split_url(url)


@settings(deadline=None)  # no timing: the machine is shared
@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    user=st.sampled_from(["", "u@", "u:p@", "a:b:c@"]),
    host=st.from_regex(r"[a-zA-Z0-9.-]{1,20}", fullmatch=True)
    | st.sampled_from(["[::1]", "[fe80::1%25eth0]", "[2001:db8::7]"]),
    port=st.sampled_from(["", ":", ":1", ":443", ":65535"]),
    rest=st.from_regex(
        r"(/[a-z0-9/._~%-]{0,12})?(\?[a-z0-9=&%]{0,8})?(#[a-z]{0,4})?", fullmatch=True
    ),
)
def test_any_http_url_is_read_as_urllib_reads_it(scheme, user, host, port, rest):
    url = f"{scheme}://{user}{host}{port}{rest}"
    theirs = urllib.parse.urlsplit(url)
    ours = wire.split_url(url)
    assert (ours.scheme, ours.host, ours.port) == (theirs.scheme, theirs.hostname, theirs.port)
    assert ours.target == (theirs.path or "/") + (f"?{theirs.query}" if theirs.query else "")
