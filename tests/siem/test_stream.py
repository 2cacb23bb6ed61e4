"""The audit stream on both databases, against loopback receivers: a syslog server over TLS
(throwaway CA) and a Splunk-HEC-shaped collector. Every sealed entry arrives once, in order,
byte for byte, across a receiver that is down for a while, a restart of ICA in the middle, and
a new yearly shard; a destination that stays down is shown stalled and alerted once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from azdev_ica.adapters.siem_config import HecDestination, SyslogDestination
from azdev_ica.cli.main import main
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import AuditEntry, OutboxMessage, PersonalDataOpening, SiemCursor
from azdev_ica.jobs.scheduler import default_jobs, tick
from azdev_ica.jobs.siem import forward_all
from azdev_ica.services import siem as records
from azdev_ica.services.context import ServiceContext
from tests.audit.ledgerdb import activity, start
from tests.siem.receivers import HecReceiver, SyslogTlsReceiver, free_port, make_ca

PERSONAL_EMAIL = "alice.farmer@example.org"
SYSLOG_LINE = re.compile(
    rb"^<110>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ica\.localhost ica - ([!-~]{1,32}) "
    rb'\[ica@32473 origin="([^"]+)" index="(\d+)"\] (\{.*\})$',
    re.S,
)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_ca(tmp_path / "pki")


@pytest.fixture
def syslog(tls_files: Any) -> Iterator[SyslogTlsReceiver]:
    _, cert, key = tls_files
    receiver = SyslogTlsReceiver(free_port(), cert, key).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def hec() -> Iterator[HecReceiver]:
    receiver = HecReceiver(free_port(), "hec-token-1").start()
    yield receiver
    receiver.stop()


def _stored(ctx: Any) -> list[tuple[int, int, bytes]]:
    with ctx.read() as session:
        rows = session.execute(
            select(AuditEntry.year, AuditEntry.idx, AuditEntry.entry).order_by(
                AuditEntry.year, AuditEntry.idx
            )
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]


def _with(settings: Any, *destinations: Any, **changes: Any) -> Any:
    return settings.model_copy(update={"siem": list(destinations), **changes})


def _syslog_destination(syslog: SyslogTlsReceiver, tls_files: Any, **extra: Any) -> Any:
    return SyslogDestination(
        type="syslog",
        name="soc",
        host="127.0.0.1",
        port=syslog.port,
        ca_file=tls_files[0],
        **extra,
    )


def _parse_syslog(messages: list[bytes]) -> list[tuple[int, int, bytes]]:
    """(year, index, entry bytes) of each message, checking the RFC 5424 shape."""
    out = []
    for message in messages:
        found = SYSLOG_LINE.match(message)
        assert found is not None, message[:200]
        record = found.group(5)
        parsed = json.loads(record)
        assert list(parsed) == ["origin", "index", "entry"]
        assert parsed["origin"] == found.group(3).decode()
        assert parsed["index"] == int(found.group(4))
        assert parsed["entry"]["body"]["action"].encode()[:32] == found.group(2)
        assert (parsed["entry"]["log"], parsed["entry"]["index"]) == (
            parsed["origin"],
            parsed["index"],
        )
        year = int(parsed["origin"].rsplit("/", 1)[1])
        # The entry's bytes, spliced in unchanged: what the ledger's tree hashes.
        entry = record[record.index(b',"entry":') + len(b',"entry":') : -1]
        out.append((year, parsed["index"], entry))
    return out


@pytest.fixture
def restart() -> Iterator[Any]:
    """Restart "ICA": a new process's context on the same database (its own connections);
    nothing kept in memory survives."""
    opened: list[Database] = []

    def restarted(ctx: Any) -> ServiceContext:
        database = Database.from_url(ctx.db.engine.url.render_as_string(hide_password=False))
        opened.append(database)
        return ServiceContext(db=database, clock=ctx.clock, pepper=ctx.pepper, ledger=ctx.ledger)

    yield restarted
    for database in opened:
        database.dispose()


def test_syslog_receives_every_entry_once_in_order_across_outage_restart_and_new_year(
    ctx: Any, settings: Any, syslog: SyslogTlsReceiver, tls_files: Any, restart: Any
) -> None:
    start(ctx, 1, requested_for_email=PERSONAL_EMAIL)
    activity(ctx, 3)
    destination = _syslog_destination(syslog, tls_files, batch_size=4)
    configured = _with(settings, destination, siem_batches_per_pass=1)
    stored = _stored(ctx)
    assert len(stored) > 8

    # One pass sends one batch of 4: the rest waits for the next passes.
    assert forward_all(ctx, configured).sent == {"soc": 4}
    assert _parse_syslog(syslog.wait_for(4)) == stored[:4]

    # ICA restarts in the middle of the backlog: the cursor is in the database.
    ctx = restart(ctx)
    while forward_all(ctx, configured).sent:
        pass
    assert _parse_syslog(syslog.wait_for(len(stored))) == stored

    # The receiver goes down; entries keep being sealed; nothing moves, nothing is lost.
    syslog.stop()
    activity(ctx, 2, first=2000)
    result = forward_all(ctx, configured)
    assert "soc" in result.failed
    with ctx.read() as session:
        cursor = session.get(SiemCursor, "soc")
        assert (cursor.year, cursor.idx) == stored[-1][:2]
        assert cursor.failures == 1
    # Backing off: the next pass does not even try.
    assert forward_all(ctx, configured).waiting == ["soc"]

    # A new year opens a new shard while the receiver is down; then it comes back.
    ctx.clock.set(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    activity(ctx, 1, first=3000)
    syslog.start()
    while forward_all(ctx, configured).sent:
        pass
    everything = _stored(ctx)
    assert {year for year, _, _ in everything} == {2026, 2027}
    received = _parse_syslog(syslog.wait_for(len(everything)))
    assert received == everything  # each once, in (year, index) order, byte for byte
    with ctx.read() as session:
        cursor = session.get(SiemCursor, "soc")
        assert cursor.forwarded == len(everything)
        assert cursor.failing_since is None
        assert session.scalar(
            select(PersonalDataOpening.value).where(PersonalDataOpening.value == PERSONAL_EMAIL)
        )
    # Only what the ledger holds left: the salted hash, never the address.
    assert not any(PERSONAL_EMAIL.encode() in message for message in syslog.messages)
    assert forward_all(ctx, configured).sent == {}


def test_syslog_refuses_a_server_its_ca_does_not_vouch_for(
    ctx: Any, settings: Any, syslog: SyslogTlsReceiver, tmp_path: Path
) -> None:
    other_ca, _, _ = make_ca(tmp_path / "other")
    activity(ctx, 1)
    destination = SyslogDestination(
        type="syslog", name="soc", host="127.0.0.1", port=syslog.port, ca_file=other_ca
    )
    result = forward_all(ctx, _with(settings, destination))
    assert "CERTIFICATE_VERIFY_FAILED" in result.failed["soc"]
    assert syslog.messages == []
    with ctx.read() as session:
        assert session.get(SiemCursor, "soc").idx is None


def test_hec_collector_gets_batches_in_order_once_across_an_outage_and_a_restart(
    ctx: Any, settings: Any, hec: HecReceiver, restart: Any
) -> None:
    activity(ctx, 3)
    destination = HecDestination(
        type="hec", name="splunk", url=hec.url, token="hec-token-1", index="ica", batch_size=5
    )
    configured = _with(settings, destination, siem_batches_per_pass=1)
    assert forward_all(ctx, configured).sent == {"splunk": 5}
    ctx = restart(ctx)

    # The collector refuses (503) for a while: nothing moves, retried after the back-off.
    hec.failing = True
    assert "HTTP 503" in forward_all(ctx, configured).failed["splunk"]
    ctx.clock.advance(timedelta(seconds=configured.siem_backoff_seconds))
    assert "HTTP 503" in forward_all(ctx, configured).failed["splunk"]
    with ctx.read() as session:
        assert session.get(SiemCursor, "splunk").idx == 4
    hec.failing = False
    ctx.clock.advance(timedelta(seconds=2 * configured.siem_backoff_seconds))
    while forward_all(ctx, configured).sent:
        pass

    stored = _stored(ctx)
    assert [(e["event"]["origin"], e["event"]["index"]) for e in hec.events] == [
        (f"ica.localhost/audit/{year}", idx) for year, idx, _ in stored
    ]
    first = hec.events[0]
    assert first["index"] == "ica"
    assert first["sourcetype"] == "_json"
    assert first["source"] == "ica:audit"
    assert first["host"] == "ica.localhost"
    assert first["event"]["entry"] == json.loads(stored[0][2])
    # Byte for byte inside the batch, as in the ledger.
    assert all(entry in b"".join(hec.raw) for _, _, entry in stored)
    assert len(hec.raw) == -(-len(stored) // 5)


def test_a_wrong_token_is_a_failure_and_moves_nothing(
    ctx: Any, settings: Any, hec: HecReceiver
) -> None:
    activity(ctx, 1)
    destination = HecDestination(type="hec", name="splunk", url=hec.url, token="wrong")
    result = forward_all(ctx, _with(settings, destination))
    assert "HTTP 403" in result.failed["splunk"]
    assert hec.events == []


def test_a_destination_down_too_long_is_stalled_alerted_once_and_shown(
    ctx: Any, settings: Any, monkeypatch: Any, capsys: Any, tmp_path: Path
) -> None:
    activity(ctx, 1)
    destination = HecDestination(
        type="hec", name="splunk", url=f"http://127.0.0.1:{free_port()}/x", token="t"
    )
    configured = _with(settings, destination)
    # Run through the scheduler, under its lease, as a server process would.
    jobs = [job for job in default_jobs() if job.name in {"siem-forward"}]
    for _ in range(8):
        ran = tick(ctx, configured, holder="a", jobs=jobs).ran["siem-forward"]
        assert "splunk" in ran.failed or "splunk" in ran.waiting
        ctx.clock.advance(timedelta(minutes=3))
    with ctx.read() as session:
        alerts = list(
            session.scalars(
                select(OutboxMessage.payload).where(OutboxMessage.topic == records.TOPIC_STALLED)
            )
        )
        behind = session.scalar(select(AuditEntry.idx).order_by(AuditEntry.idx.desc()).limit(1))
    assert len(alerts) == 1
    assert alerts[0]["destination"] == "splunk"
    assert alerts[0]["severity"] == "warning"

    monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ICA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ICA_SECRET_KEY", settings.secret_key.get_secret_value())
    setting = destination.model_dump(mode="json") | {"token": "t"}
    monkeypatch.setenv("ICA_SIEM", json.dumps([setting]))
    capsys.readouterr()
    assert main(["siem", "status", "--output", "json"]) == 4
    (shown,) = json.loads(capsys.readouterr().out)["destinations"]
    assert shown["state"] == "stalled"
    assert shown["cursor"] is None
    # The alert is itself a (not yet sealed) audit record; the sealed entries all wait.
    assert shown["behind"] == behind + 1
    assert "Connection refused" in shown["last_error"]
    assert main(["siem", "status"]) == 4
    assert "splunk" in capsys.readouterr().out


def test_the_cursor_moves_only_from_where_the_send_started(ctx: Any) -> None:
    """Two processes that both sent the same batch (one paused past its lease) record it once."""
    records.ensure_cursor(ctx, "soc")
    begin = records.Position(None, None)
    to = records.Position(2026, 9)
    now = ctx.clock.now()
    assert records.advance(ctx, "soc", start=begin, to=to, count=10, at=now)
    assert not records.advance(ctx, "soc", start=begin, to=to, count=10, at=now)
    with ctx.read() as session:
        cursor = session.get(SiemCursor, "soc")
        assert (cursor.year, cursor.idx, cursor.forwarded) == (2026, 9, 10)


def test_siem_setting_is_read_from_the_environment_and_checked(monkeypatch: Any) -> None:
    from pydantic import ValidationError

    from azdev_ica.settings import Settings

    monkeypatch.setenv(
        "ICA_SIEM",
        json.dumps(
            [
                {"name": "soc", "type": "syslog", "host": "siem.example.org"},
                {"name": "splunk", "type": "hec", "url": "https://s.example/x", "token": "k"},
            ]
        ),
    )
    loaded = Settings()
    assert [d.name for d in loaded.siem] == ["soc", "splunk"]
    assert loaded.siem[0].port == 6514
    for bad in (
        [{"name": "a", "type": "hec", "url": "https://s.example/x"}],  # no token
        [{"name": "a", "type": "syslog", "host": "h", "cert_file": "/c"}],  # no key
        [{"name": "a", "type": "syslog", "host": h} for h in ("h", "i")],  # one name twice
        [{"name": "A B", "type": "syslog", "host": "h"}],
    ):
        monkeypatch.setenv("ICA_SIEM", json.dumps(bad))
        with pytest.raises(ValidationError):
            Settings()


def test_azure_monitor_logs_ingestion_gets_every_entry_once_in_order(
    ctx: Any, settings: Any, restart: Any
) -> None:
    from azdev_ica.adapters import siem as adapter
    from azdev_ica.adapters.siem_config import AzureMonitorDestination
    from tests.siem.receivers import AzureMonitorStandIn

    adapter._TOKENS.clear()
    monitor = AzureMonitorStandIn(free_port(), tenant="t-1", client_id="app-1", secret="s3cret")
    monitor.start()
    try:
        activity(ctx, 3)
        destination = AzureMonitorDestination(
            type="azure_monitor",
            name="sentinel",
            endpoint=monitor.url,
            dcr_id="dcr-0123",
            tenant_id="t-1",
            client_id="app-1",
            client_secret="s3cret",
            authority=monitor.url,
            batch_size=4,
        )
        configured = _with(settings, destination, siem_batches_per_pass=1)
        assert forward_all(ctx, configured).sent == {"sentinel": 4}
        ctx = restart(ctx)
        monitor.failing = True
        assert "HTTP 503" in forward_all(ctx, configured).failed["sentinel"]
        monitor.failing = False
        ctx.clock.advance(timedelta(seconds=configured.siem_backoff_seconds))
        while forward_all(ctx, configured).sent:
            pass
        stored = _stored(ctx)
        assert [(r["Origin"], r["Index"]) for r in monitor.records] == [
            (f"ica.localhost/audit/{year}", idx) for year, idx, _ in stored
        ]
        assert [r["Entry"].encode() for r in monitor.records] == [e for _, _, e in stored]
        assert monitor.records[0]["Action"] == json.loads(stored[0][2])["body"]["action"]
        assert monitor.tokens_issued == 1  # reused until it nears expiry
        wrong = destination.model_copy(update={"client_secret": SecretStr("nope")})
        adapter._TOKENS.clear()
        activity(ctx, 1, first=2000)
        failed = forward_all(ctx, _with(settings, wrong)).failed["sentinel"]
        assert "token endpoint answered 401" in failed
    finally:
        monitor.stop()
        adapter._TOKENS.clear()
