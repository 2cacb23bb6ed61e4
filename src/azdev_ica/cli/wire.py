"""One HTTP/1.1 exchange over a socket: what the pipeline client needs and nothing more.

`ica run event` runs many times per pipeline, and on an agent its cost is mostly Python
starting and importing. `urllib.request` alone imports `http.client`, `email` and `ssl`
(about three times the rest of the client), so plain http:// calls go through this module,
which imports `ssl` only for https:// and falls back to `urllib.request` only when a proxy is
configured for the address (urllib honours http_proxy / https_proxy / no_proxy).

Standard library only, and Python 3.8 syntax: it is part of the zipapp ICA serves.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Mapping

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class NoAnswer(Exception):
    """Nothing usable came back (refused, reset, timed out, truncated): may be retried."""


class CertificateRefused(Exception):
    """TLS verification of the server failed: retrying will not help."""


def uses_proxy(url: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment routes `url` through a proxy (the rules urllib applies)."""
    environ = os.environ if env is None else env
    parts = urllib.parse.urlsplit(url)
    names = (parts.scheme + "_proxy", (parts.scheme + "_proxy").upper())
    if not any(environ.get(name) for name in names):
        return False
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    host = (parts.hostname or "").lower()
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        entry = entry.lstrip(".").split(":", 1)[0]
        if host == entry or host.endswith("." + entry):
            return False
    return True


def exchange(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """Send one request, return (status, headers with lower-case names, body).

    Raises NoAnswer when the exchange failed before a complete answer arrived and
    CertificateRefused when the server's certificate does not verify."""
    _refuse_line_breaks(method, url, headers)
    if uses_proxy(url):
        return _through_urllib(method, url, body, headers, timeout)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    netloc_host = f"[{host}]" if ":" in host else host
    default_port = port == (443 if secure else 80)
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {netloc_host}" + ("" if default_port else f":{port}"),
        "Connection: close",
        "Accept-Encoding: identity",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise NoAnswer(_describe(exc)) from None
    try:
        if secure:
            sock = _wrap_tls(sock, host)
        sock.settimeout(timeout)
        sock.sendall(request)
        return _read_response(sock, method)
    except OSError as exc:
        raise NoAnswer(_describe(exc)) from None
    finally:
        sock.close()


def _refuse_line_breaks(method: str, url: str, headers: Mapping[str, str]) -> None:
    """A CR, LF or NUL in the request line or a header (a token pasted with its newline, a
    crafted value) would end the header early and let the rest be read as more headers:
    refuse it before anything is sent, as http.client does."""
    for text in (method, url, *headers.keys(), *headers.values()):
        if any(ch in text for ch in "\r\n\0"):
            what = "the token" if text in headers.get("Authorization", "") else repr(text[:40])
            raise ValueError(f"{what} contains a line break or NUL; it cannot be sent")


def _wrap_tls(sock: socket.socket, host: str) -> socket.socket:
    import ssl

    context = ssl.create_default_context()
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise CertificateRefused(str(exc)) from None


def _read_response(sock: socket.socket, method: str) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise NoAnswer("the connection closed before an answer" if not buffer else "truncated")
        buffer += chunk
        if len(buffer) > MAX_HEADER_BYTES:
            raise NoAnswer("the answer's headers are too long")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise NoAnswer(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(fields[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, _dechunk(sock, rest)
    length_text = headers.get("content-length")
    if length_text is not None:
        if not length_text.strip().isdigit():
            raise NoAnswer(f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise NoAnswer("the answer is too large")
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise NoAnswer(f"truncated answer ({len(rest)} of {length} bytes)")
            rest += chunk
        return status, headers, rest[:length]
    while True:  # no length: the body ends when the server closes the connection
        chunk = sock.recv(65536)
        if not chunk:
            return status, headers, rest
        rest += chunk
        if len(rest) > MAX_BODY_BYTES:
            raise NoAnswer("the answer is too large")


def _dechunk(sock: socket.socket, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            data += _more(sock)
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise NoAnswer("bad chunk size") from None
        if size == 0:
            return body
        while len(data) < size + 2:
            data += _more(sock)
        body += data[:size]
        data = data[size + 2 :]
        if len(body) > MAX_BODY_BYTES:
            raise NoAnswer("the answer is too large")


def _more(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise NoAnswer("truncated chunked answer")
    return chunk


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _through_urllib(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """The same exchange through urllib (which honours the proxy settings); no redirects."""
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            return None  # the 3xx comes back as an HTTPError, answered to the caller as is

    opener = urllib.request.build_opener(NoRedirect())
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            found = {k.lower(): v for k, v in response.headers.items()}
            return response.status, found, response.read()
    except urllib.error.HTTPError as exc:
        try:
            payload = exc.read()
        except (OSError, http.client.HTTPException):
            payload = b""
        finally:
            exc.close()
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, payload
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise CertificateRefused(str(exc.reason)) from None
        raise NoAnswer(str(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise NoAnswer(_describe(exc)) from None
