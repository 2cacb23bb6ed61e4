"""Sending ledger entries to a SIEM: syslog over TLS (RFC 5424 + RFC 5425), an HTTP
collector in Splunk HEC shape, and Azure Monitor's Logs Ingestion API. Configuration:
`adapters/siem_config.py`; who calls: `jobs/siem.py`.

Every entry leaves as one JSON line, its *stream record*::

    {"origin":"ica.example.org/audit/2026","index":41,
     "entry":{"body":{"action":...},"index":41,"log":"ica.example.org/audit/2026","v":1}}

(on one line). `entry` is the ledger entry's stored bytes, spliced in unchanged (canonical
JSON, RFC 8785), so a receiver can hash it (SHA-256 of 0x00 ‖ entry) and check it against
ICA's signed checkpoints and inclusion proofs. Nothing else leaves: personal fields are the
salted hashes the ledger holds, never their openings.

A send either completes (the whole batch acknowledged: the HEC answered 200 with code 0, Azure
Monitor 204, or the TLS stream took every byte) or raises :class:`SiemSendError`; the caller
then moves nothing.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from azdev_ica.adapters.siem_config import (
    AzureMonitorDestination,
    HecDestination,
    SyslogDestination,
)

__all__ = ["SiemSendError", "StreamEntry", "send", "stream_record", "syslog_frame"]

# RFC 5424 severity of every entry (6: informational); the facility is configured.
_SEVERITY = 6
# The private enterprise number reserved for documentation (RFC 5612), as SD-ID `ica@32473`.
SD_ID = "ica@32473"


class SiemSendError(Exception):
    """The destination did not take the batch (unreachable, refused, timed out, answered an
    error); nothing of it counts as sent."""


@dataclass(frozen=True)
class StreamEntry:
    """A sealed ledger entry as the stream sends it."""

    origin: str
    year: int
    idx: int
    time: datetime
    action: str
    entry: bytes


def stream_record(item: StreamEntry) -> bytes:
    """The JSON line of an entry (without the newline), the entry's bytes spliced in as is."""
    head = json.dumps({"origin": item.origin, "index": item.idx}, separators=(",", ":"))
    return head[:-1].encode() + b',"entry":' + item.entry + b"}"


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII, no spaces, at most `limit` characters."""
    cleaned = "".join(ch if "!" <= ch <= "~" else "_" for ch in text)[:limit]
    return cleaned or "-"


def _param(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_frame(item: StreamEntry, *, facility: int, hostname: str) -> bytes:
    """One RFC 5424 message with octet-counting framing (RFC 5425 §4.3): `LEN SP MSG`."""
    header = (
        f"<{facility * 8 + _SEVERITY}>1 {_timestamp(item.time)} {_printable(hostname, 255)} "
        f"ica - {_printable(item.action, 32)} "
        f'[{SD_ID} origin="{_param(item.origin)}" index="{item.idx}"] '
    )
    message = header.encode("ascii") + stream_record(item)
    return str(len(message)).encode("ascii") + b" " + message


def _send_syslog(
    destination: SyslogDestination, items: Sequence[StreamEntry], hostname: str
) -> None:
    context = ssl.create_default_context(
        cafile=str(destination.ca_file) if destination.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if destination.cert_file is not None and destination.key_file is not None:
        context.load_cert_chain(str(destination.cert_file), str(destination.key_file))
    payload = b"".join(
        syslog_frame(item, facility=destination.facility, hostname=destination.hostname or hostname)
        for item in items
    )
    try:
        with (
            socket.create_connection(
                (destination.host, destination.port), timeout=destination.timeout_seconds
            ) as raw,
            context.wrap_socket(
                raw, server_hostname=destination.server_name or destination.host
            ) as tls,
        ):
            # Syslog has no acknowledgement (RFC 5425): what TLS took counts as sent. A
            # receiver that crashes with bytes unread loses them; docs/observe.md.
            tls.sendall(payload)
    except (OSError, ssl.SSLError) as exc:
        raise SiemSendError(f"syslog {destination.host}:{destination.port}: {exc}") from None


def _hec_event(item: StreamEntry, destination: HecDestination, hostname: str) -> bytes:
    meta: dict[str, object] = {
        "time": round(item.time.timestamp(), 6),
        "host": hostname,
        "source": destination.source,
        "sourcetype": destination.sourcetype,
    }
    if destination.index:
        meta["index"] = destination.index
    head = json.dumps(meta, separators=(",", ":"))
    return head[:-1].encode() + b',"event":' + stream_record(item) + b"}"


def _send_hec(destination: HecDestination, items: Sequence[StreamEntry], hostname: str) -> None:
    body = b"\n".join(_hec_event(item, destination, hostname) for item in items)
    try:
        token = destination.token_value()
    except OSError as exc:
        raise SiemSendError(f"hec {destination.name}: cannot read the token file: {exc}") from None
    request = urllib.request.Request(  # noqa: S310 - the operator's configured collector
        destination.url,
        data=body,
        method="POST",
        headers={"Authorization": f"Splunk {token}", "Content-Type": "application/json"},
    )
    context = None
    if destination.url.startswith("https://"):
        context = ssl.create_default_context(
            cafile=str(destination.ca_file) if destination.ca_file else None
        )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=destination.timeout_seconds, context=context
        ) as response:
            status, text = response.status, response.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace").strip()
        raise SiemSendError(f"hec {destination.name}: HTTP {exc.code}: {detail[:300]}") from None
    except (OSError, ValueError) as exc:
        raise SiemSendError(f"hec {destination.name}: {type(exc).__name__}: {exc}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict) or answer.get("code") != 0:
        raise SiemSendError(f"hec {destination.name}: answered {status}: {text.strip()[:300]}")


# Entra ID access tokens per (authority, tenant, client), reused until a minute before expiry.
_TOKENS: dict[tuple[str, str, str], tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()
MONITOR_SCOPE = "https://monitor.azure.com//.default"


def _https_context(url: str, ca_file: object) -> ssl.SSLContext | None:
    if not url.startswith("https://"):
        return None
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _monitor_token(destination: AzureMonitorDestination) -> str:
    key = (destination.authority.rstrip("/"), destination.tenant_id, destination.client_id)
    with _TOKENS_LOCK:
        cached = _TOKENS.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
    try:
        secret = destination.secret_value()
    except OSError as exc:
        raise SiemSendError(f"azure_monitor {destination.name}: secret file: {exc}") from None
    url = f"{key[0]}/{destination.tenant_id}/oauth2/v2.0/token"
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": destination.client_id,
            "client_secret": secret,
            "scope": MONITOR_SCOPE,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the configured Entra ID authority
        url,
        data=form,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request,
            timeout=destination.timeout_seconds,
            context=_https_context(url, destination.ca_file),
        ) as response:
            answer = json.loads(response.read(65536))
        token, lifetime = str(answer["access_token"]), float(answer.get("expires_in", 300))
    except urllib.error.HTTPError as exc:
        raise SiemSendError(
            f"azure_monitor {destination.name}: token endpoint answered {exc.code}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiemSendError(
            f"azure_monitor {destination.name}: no token: {type(exc).__name__}: {exc}"
        ) from None
    with _TOKENS_LOCK:
        _TOKENS[key] = (token, time.monotonic() + max(lifetime - 60, 0))
    return token


def monitor_record(item: StreamEntry) -> bytes:
    """One Logs Ingestion record: the columns of the DCR's stream (docs/observe.md); `Entry` is
    the entry's bytes as a JSON string."""
    body = json.loads(item.entry).get("body", {})
    return json.dumps(
        {
            "TimeGenerated": _timestamp(item.time),
            "Origin": item.origin,
            "Index": item.idx,
            "Action": item.action,
            "Tenant": body.get("tenant"),
            "Entry": item.entry.decode("utf-8"),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def _send_monitor(destination: AzureMonitorDestination, items: Sequence[StreamEntry]) -> None:
    token = _monitor_token(destination)
    url = (
        f"{destination.endpoint.rstrip('/')}/dataCollectionRules/{destination.dcr_id}"
        f"/streams/{destination.stream}?api-version=2023-01-01"
    )
    body = b"[" + b",".join(monitor_record(item) for item in items) + b"]"
    request = urllib.request.Request(  # noqa: S310 - the configured collection endpoint
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request,
            timeout=destination.timeout_seconds,
            context=_https_context(url, destination.ca_file),
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        if exc.code == 401:  # expired or revoked: fetch a new one next time
            with _TOKENS_LOCK:
                _TOKENS.clear()
        detail = exc.read(2000).decode("utf-8", "replace").strip()
        raise SiemSendError(
            f"azure_monitor {destination.name}: HTTP {exc.code}: {detail[:300]}"
        ) from None
    except (OSError, ValueError) as exc:
        raise SiemSendError(
            f"azure_monitor {destination.name}: {type(exc).__name__}: {exc}"
        ) from None
    if status != 204:
        raise SiemSendError(f"azure_monitor {destination.name}: answered {status}, not 204")


def send(
    destination: SyslogDestination | HecDestination | AzureMonitorDestination,
    items: Sequence[StreamEntry],
    *,
    hostname: str,
) -> None:
    """Send a batch, in order; raises :class:`SiemSendError` unless all of it was taken."""
    if not items:
        return
    if isinstance(destination, SyslogDestination):
        _send_syslog(destination, items, hostname)
    elif isinstance(destination, HecDestination):
        _send_hec(destination, items, hostname)
    else:
        _send_monitor(destination, items)
