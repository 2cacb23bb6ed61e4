"""One HTTP/1.1 exchange over a socket: what the pipeline client needs and nothing more.

`ica run event` runs many times per pipeline, and on an agent its cost is mostly Python
starting and importing. `urllib.request` alone imports `http.client`, `email` and `ssl`
(about three times the rest of the client), so plain http:// calls go through this module,
which imports `ssl` only for https:// and falls back to `urllib.request` only when a proxy is
configured for the address (urllib honours http_proxy / https_proxy / no_proxy). It speaks
to `_socket` directly (the `socket` module converts every constant to an enum when it is
imported, which costs more than the whole exchange) and splits the URL itself (`urllib.parse`
brings `ipaddress` along).

Standard library only, and Python 3.8 syntax: it is part of the zipapp ICA serves.
"""

from __future__ import annotations

import _socket
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:  # (collections.abc imports `collections`: annotations only)
    from collections.abc import Mapping

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class NoAnswer(Exception):
    """Nothing usable came back (refused, reset, timed out, truncated): may be retried."""


class CertificateRefused(Exception):
    """TLS verification of the server failed: retrying will not help."""


class Url:
    """The parts of an http(s) URL the exchange needs."""

    __slots__ = ("host", "port", "scheme", "target")

    def __init__(self, scheme: str, host: str, port: int | None, target: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = target


def split_url(url: str) -> Url:
    """`scheme://[user[:password]@]host[:port][/path][?query][#fragment]` read as
    urllib.parse.urlsplit reads it (host in lower case, an IPv6 host in brackets, the
    fragment dropped). ValueError for anything but http(s) with a host, for a port that is
    not a number from 0 to 65535, and for a space or control character anywhere (it would
    break the request line)."""
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise ValueError("not an http(s) URL")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    cut = [index for index in (rest.find(ch) for ch in "/?#") if index >= 0]
    end = min(cut) if cut else len(rest)
    netloc, rest = rest[:end], rest[end:].split("#", 1)[0]
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError("not an http(s) URL")
        port_text = after[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise ValueError("not an http(s) URL")
    port = None
    if port_text:
        if not (port_text.isdigit() and port_text.isascii()) or int(port_text) > 65535:
            raise ValueError("the URL's port is not a number")
        port = int(port_text)
    path, _, query = rest.partition("?")
    return Url(scheme, host.lower(), port, (path or "/") + ("?" + query if query else ""))


def uses_proxy(url: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment routes `url` through a proxy (the rules urllib applies)."""
    environ = os.environ if env is None else env
    parts = split_url(url)
    names = (parts.scheme + "_proxy", (parts.scheme + "_proxy").upper())
    if not any(environ.get(name) for name in names):
        return False
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    host = parts.host
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
    parts = split_url(url)
    host = parts.host
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = parts.target
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
    sock = _connect(host, port, timeout)
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


def _connect(host: str, port: int, timeout: float) -> _socket.socket:
    """socket.create_connection((host, port), timeout) over `_socket`: each address the name
    resolves to in turn. The name goes to getaddrinfo as bytes (a str is run through the
    `idna` codec, one more import, even when it is plain ASCII)."""
    try:
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
    except UnicodeError:
        raise ValueError(f"the host name {host!r} is not valid") from None
    error: OSError | None = None
    try:
        found = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
    except OSError as exc:
        raise NoAnswer(_describe(exc)) from None
    for family, kind, proto, _, address in found:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
        else:
            return sock
    raise NoAnswer(_describe(error) if error else f"{host} has no address")


def _wrap_tls(sock: _socket.socket, host: str) -> _socket.socket:
    import ssl  # (imports `socket` too: only https pays for it)

    context = ssl.create_default_context()
    try:
        return context.wrap_socket(sock, server_hostname=host)  # type: ignore[arg-type]
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise CertificateRefused(str(exc)) from None


def _read_response(sock: _socket.socket, method: str) -> tuple[int, dict[str, str], bytes]:
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


def _dechunk(sock: _socket.socket, data: bytes) -> bytes:
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


def _more(sock: _socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise NoAnswer("truncated chunked answer")
    return chunk


_TIMEOUTS = (TimeoutError, getattr(_socket, "timeout", TimeoutError))  # the same from 3.10


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _TIMEOUTS):
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
