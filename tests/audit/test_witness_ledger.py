"""ICA and a witness on loopback HTTP, on both databases: every signed checkpoint is cosigned,
published with its cosignatures, across yearly shards; a rewind of the database *and* the
checkpoint store (an ordinary restore of the data directory) is refused by the witness and
stops the sealer with a critical alert; an unreachable witness does not stop signing and
alerts after the configured delay."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from azdev_ica.auth.principal import Actor
from azdev_ica.db.engine import Database
from azdev_ica.db.tables import OutboxMessage, WitnessCosignature, WitnessRefusal
from azdev_ica.errors import LedgerUnavailable
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.jobs.witness import WitnessTarget, submit_all
from azdev_ica.ledger.cosignature import Cosigner, verify_cosignatures
from azdev_ica.ledger.keyfile import read_signers
from azdev_ica.ledger.witness import LogFamily, Witness
from azdev_ica.queries.audit import cosigned_note, latest_checkpoint
from azdev_ica.services.witnesses import resolve_refusals
from tests.audit.ledgerdb import activity, start
from tests.ledger.witness_support import serve_witness

PREFIX = "ica.localhost/audit"


@pytest.fixture
def witness(ctx: Any, settings: Any, tmp_path: Path) -> Iterator[tuple[WitnessTarget, Witness]]:
    """A witness of ICA's log on loopback, with its own key and state, on ICA's test clock."""
    log_key = read_signers(settings.resolved_ledger_key_file())[-1].verifier()
    cosigner = Cosigner.generate("witness.test/w1")
    with serve_witness(
        tmp_path / "witness-state" / "w.db",
        cosigner,
        [LogFamily(PREFIX, (log_key,))],
        clock=lambda: ctx.clock.now().timestamp(),
    ) as (url, served):
        yield WitnessTarget(url, cosigner.verifier()), served


def _cosignatures(ctx: Any) -> list[tuple[int, int]]:
    with ctx.read() as session:
        rows = session.execute(
            select(WitnessCosignature.year, WitnessCosignature.size).order_by(
                WitnessCosignature.year, WitnessCosignature.size
            )
        )
        return [(r[0], r[1]) for r in rows]


def _alerts(ctx: Any, topic: str) -> list[dict[str, Any]]:
    with ctx.read() as session:
        return list(
            session.scalars(select(OutboxMessage.payload).where(OutboxMessage.topic == topic))
        )


def test_each_checkpoint_is_cosigned_and_published_with_it(ctx: Any, witness: Any) -> None:
    target, served = witness
    activity(ctx, 2)
    result = submit_all(ctx, [target])
    assert result.cosigned
    assert not result.failed
    assert not result.refused
    with ctx.read() as session:
        checkpoint = latest_checkpoint(session, 2026)
        note = cosigned_note(session, checkpoint)
    assert _cosignatures(ctx) == [(2026, checkpoint.size)]
    found, problems = verify_cosignatures(note, [target.verifier])
    assert len(found) == 1
    assert not problems
    # The outside store holds the cosigned note too (the log's signature kept).
    stored = checkpoint_store(ctx.ledger).get(f"{PREFIX}/2026", checkpoint.size)
    assert stored is not None
    assert stored.note == note
    assert stored.note.startswith(checkpoint.note)
    # Nothing new: nothing submitted. More activity: cosigned from the witness's size.
    assert submit_all(ctx, [target]).cosigned == []
    activity(ctx, 2, first=2000)
    assert submit_all(ctx, [target]).cosigned
    with ctx.read() as session:
        newer = latest_checkpoint(session, 2026).size
    assert _cosignatures(ctx)[-1] == (2026, newer)
    assert served.latest(f"{PREFIX}/2026")[0] == newer  # type: ignore[index]


def test_a_new_year_chains_at_the_witness(ctx: Any, witness: Any) -> None:
    target, served = witness
    activity(ctx, 1)
    assert submit_all(ctx, [target]).cosigned
    activity(ctx, 1, first=2000)  # 2026 grows: not submitted before the year ends
    ctx.clock.set(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    activity(ctx, 1, first=3000)  # opens 2027 (final 2026 checkpoint signed first)
    result = submit_all(ctx, [target])
    assert {origin for _, origin, _ in result.cosigned} == {f"{PREFIX}/2026", f"{PREFIX}/2027"}
    assert not result.refused
    assert served.latest(f"{PREFIX}/2027") is not None


def _copy_database(ctx: Any, db_url: str, tmp_path: Path, request: Any) -> tuple[str, Any]:
    """A copy of the database as it is now (a backup); returns its URL and a cleanup."""
    if ctx.db.dialect == "sqlite":
        copy = tmp_path / "backup.db"
        raw = ctx.db.engine.raw_connection()
        try:
            raw.cursor().execute(f"VACUUM INTO '{copy}'")
        finally:
            raw.close()
        return f"sqlite:///{copy}", lambda: None
    admin_url: str = request.getfixturevalue("pg_admin_url")
    name = db_url.rsplit("/", 1)[1]
    ctx.db.dispose()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}_backup" TEMPLATE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}_backup" WITH (FORCE)'))
        admin.dispose()

    return f"{db_url}_backup", drop


@pytest.fixture
def restored(
    ctx: Any, witness: Any, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """ICA restored from a backup of its whole data: database and checkpoint store rewound
    together, after the witness had cosigned newer history."""
    target, _ = witness
    activity(ctx, 2)
    assert submit_all(ctx, [target]).cosigned
    url, drop = _copy_database(ctx, db_url, tmp_path, request)
    store_copy = tmp_path / "backup-checkpoints"
    shutil.copytree(ctx.ledger.store_dir, store_copy)
    activity(ctx, 3, first=2000)  # newer history, cosigned by the witness
    assert submit_all(ctx, [target]).cosigned
    earlier = Database.from_url(url)
    yield dataclasses.replace(
        ctx, db=earlier, ledger=dataclasses.replace(ctx.ledger, store_dir=store_copy)
    )
    earlier.dispose()
    drop()


def _refused_and_stopped(ctx: Any, target: WitnessTarget) -> None:
    result = submit_all(ctx, [target])
    assert result.refused, result
    with ctx.read() as session:
        refusal = session.scalars(select(WitnessRefusal)).one()
    assert refusal.resolved_at is None
    alerts = _alerts(ctx, "witness.refused")
    assert len(alerts) == 1
    assert alerts[0]["severity"] == "critical"
    # The sealer neither seals nor signs any more, and says why.
    start(ctx, 9000)
    with pytest.raises(LedgerUnavailable, match=r"witness witness\.test/w1 refused"):
        seal_now(ctx)
    # Asking again changes nothing: one refusal, one alert.
    assert submit_all(ctx, [target]).refused == []
    assert len(_alerts(ctx, "witness.refused")) == 1


def test_a_restore_behind_the_witness_is_refused(
    restored: Any, witness: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The restored log signs a checkpoint smaller than what the witness cosigned."""
    target, _ = witness
    start(restored, 5000)
    seal_now(restored)  # the store was rewound too: the sealer's own check passes
    _refused_and_stopped(restored, target)
    with restored.read() as session:
        refusal = session.scalars(select(WitnessRefusal)).one()
    assert "rewound" in refusal.reason
    code, out = _ica(restored, monkeypatch, capsys, "witness", "status")
    assert code == 1
    assert "REFUSED by witness.test/w1" in out
    code, out = _ica(restored, monkeypatch, capsys, "witness", "resolve", "--note", "restored")
    assert code == 0
    assert "resolved 1 witness refusal" in out
    assert _ica(restored, monkeypatch, capsys, "witness", "status")[0] == 0


def test_a_restore_that_outgrows_the_witness_is_refused(restored: Any, witness: Any) -> None:
    """The restored log grows past the witness's size on other history: inconsistent (422)."""
    target, served = witness
    activity(restored, 6, first=6000)
    _refused_and_stopped(restored, target)
    with restored.read() as session:
        refusal = session.scalars(select(WitnessRefusal)).one()
    assert refusal.status == 422
    assert served.refusals()  # the witness kept the evidence too
    # An operator who resolves without restoring the genuine history is stopped again.
    assert (
        resolve_refusals(
            restored,
            actor=Actor(kind="operator", id="ops"),
            note="checked",
            at=restored.clock.now(),
        )
        == 1
    )
    seal_now(restored)
    assert submit_all(restored, [target]).refused


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_witness_does_not_stop_signing_and_alerts_late(
    ctx: Any, witness: Any
) -> None:
    target, _ = witness
    down = dataclasses.replace(target, url=f"http://127.0.0.1:{_closed_port()}")
    activity(ctx, 1)
    result = submit_all(ctx, [down], alert_after=timedelta(minutes=15))
    assert result.failed
    assert not result.refused
    ctx.clock.advance(timedelta(minutes=14))
    activity(ctx, 1, first=2000)  # sealing and signing go on
    assert submit_all(ctx, [down], alert_after=timedelta(minutes=15)).failed
    assert _alerts(ctx, "witness.unreachable") == []
    ctx.clock.advance(timedelta(minutes=1))
    submit_all(ctx, [down], alert_after=timedelta(minutes=15))
    alerts = _alerts(ctx, "witness.unreachable")
    assert len(alerts) == 1
    assert alerts[0]["severity"] == "warning"
    ctx.clock.advance(timedelta(minutes=30))
    submit_all(ctx, [down], alert_after=timedelta(minutes=15))
    assert len(_alerts(ctx, "witness.unreachable")) == 1  # once per outage
    # Back: everything signed meanwhile gets cosigned (the latest checkpoint, consistent).
    seal_now(ctx)
    assert submit_all(ctx, [target]).cosigned
    with ctx.read() as session:
        assert _cosignatures(ctx)[-1] == (2026, latest_checkpoint(session, 2026).size)


def test_the_scheduler_submits_to_the_witnesses_of_the_settings(
    ctx: Any, settings: Any, witness: Any
) -> None:
    from azdev_ica.jobs.scheduler import default_jobs, tick
    from azdev_ica.settings import Settings, WitnessSetting

    target, _ = witness
    configured = Settings(
        **{
            **settings.model_dump(),
            "witnesses": [{"url": target.url, "vkey": target.verifier.key_string()}],
        }
    )
    assert configured.witnesses == [
        WitnessSetting(url=target.url, vkey=target.verifier.key_string())
    ]
    activity(ctx, 1)
    jobs = [job for job in default_jobs() if job.name == "witness"]
    result = tick(ctx, configured, holder="h", jobs=jobs)
    assert result.failed == {}
    assert result.ran["witness"].cosigned
    with pytest.raises(ValueError, match="cosignature key"):
        WitnessSetting(url=target.url, vkey=read_log_vkey(settings))


def read_log_vkey(settings: Any) -> str:
    return read_signers(settings.resolved_ledger_key_file())[-1].verifier().key_string()


def _bundle(ctx: Any, tmp_path: Path, name: str) -> Path:
    from azdev_ica.audit.export import export_bundle

    out = tmp_path / f"{name}.tar.gz"
    export_bundle(ctx.db, checkpoint_store(ctx.ledger), year=2026, out=out)
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / name, filter="data")
    return tmp_path / name / "ica-audit-2026"


def _verify_py(bundle: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(bundle / "verify.py"), str(bundle), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _ica_verify(ctx: Any, monkeypatch: Any, capsys: Any, *args: str) -> tuple[int, str]:
    return _ica(ctx, monkeypatch, capsys, "audit", "verify", "--quiet", *args)


def _ica(ctx: Any, monkeypatch: Any, capsys: Any, *argv: str) -> tuple[int, str]:
    from azdev_ica.cli.main import main

    monkeypatch.setenv("ICA_DATA_DIR", str(ctx.ledger.store_dir.parent))
    monkeypatch.setenv("ICA_DATABASE_URL", ctx.db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("ICA_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("ICA_LEDGER_STORE_DIR", str(ctx.ledger.store_dir))
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_verifiers_fail_a_fork_given_a_witness_key_or_kept_checkpoints(
    ctx: Any,
    restored: Any,
    witness: Any,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, _ = witness
    # The restored log goes on and signs a fork of what the witness cosigned.
    activity(restored, 6, first=6000)
    assert submit_all(restored, [target]).refused
    kept = tmp_path / "kept"  # an auditor's copies of the checkpoints published before
    shutil.copytree(ctx.ledger.store_dir, kept)
    witness_key = ["--witness-key", target.verifier.key_string()]
    log_key = ["--trust-key", read_log_vkey(settings)]
    known = ["--known-checkpoints", str(kept)]

    genuine = _bundle(ctx, tmp_path, "genuine")
    forked = _bundle(restored, tmp_path, "forked")
    readme = (forked / "README.txt").read_text()
    assert read_log_vkey(settings) not in readme
    assert "--trust-key '<" in readme

    # Without keys of their own, the verifier passes both, and says what that is worth.
    for bundle in (genuine, forked):
        code, out = _verify_py(bundle)
        assert code == 0, out
        assert "INTERNAL CONSISTENCY ONLY" in out
    # The log's own key does not tell the fork apart either: the key signed both.
    assert _verify_py(forked, *log_key)[0] == 0
    # The witness's key does; and so do the checkpoints the auditor kept.
    code, out = _verify_py(genuine, *log_key, *witness_key, *known)
    assert code == 0, out
    assert "cosigned by 1 of the given witnesses" in out
    code, out = _verify_py(forked, *witness_key)
    assert code == 1
    assert "no witness vouches for this history" in out
    # k of n: a second witness that never cosigned.
    absent = ["--witness-key", Cosigner.generate("witness.test/w2").verifier().key_string()]
    code, out = _verify_py(genuine, *witness_key, *absent)
    assert code == 1
    assert "1 valid cosignature(s) of the given witnesses, 2 required" in out
    assert _verify_py(genuine, *witness_key, *absent, "--witness-threshold", "1")[0] == 0
    # A cosignature line that does not verify fails, whatever the threshold.
    final = sorted((genuine / "checkpoints").iterdir())[-1]
    text = final.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("— witness.test/w1 "))
    blob = base64.b64decode(line.split(" ")[2])
    forged = blob[:12] + bytes([blob[12] ^ 1]) + blob[13:]
    forged_line = f"— witness.test/w1 {base64.b64encode(forged).decode()}"
    final.write_text(text.replace(line, forged_line))
    code, out = _verify_py(genuine, *witness_key, "--witness-threshold", "1")
    assert code == 1
    assert "the cosignature by witness witness.test/w1" in out
    final.write_text(text)
    code, out = _verify_py(forked, *known)
    assert code == 1
    assert "fork of the history you saw" in out or "was rewound" in out

    # `ica audit verify`, on the databases themselves.
    code, out = _ica_verify(ctx, monkeypatch, capsys, *witness_key, *known)
    assert code == 0, out
    code, out = _ica_verify(restored, monkeypatch, capsys)
    # The restored copy is consistent with its own (rewound) store, but stalled: the witness
    # refused it, and its records wait unsealed (exit 4).
    assert code == 4, out
    assert "RESULT: OK" in out
    assert "sealing: stalled" in out
    assert "internal consistency only" in out
    code, out = _ica_verify(restored, monkeypatch, capsys, *witness_key)
    assert code == 1
    assert "no witness vouches" in out
    code, out = _ica_verify(restored, monkeypatch, capsys, *known)
    assert code == 1
    assert "a fork" in out or "rewound" in out


def test_the_api_serves_checkpoints_and_proofs_with_their_cosignatures(
    ctx: Any, witness: Any, client: Any, make_key: Any
) -> None:
    from tests.conftest import bearer

    target, _ = witness
    auditor = bearer(make_key("azdev_auditor"))
    activity(ctx, 2)
    plain = client.get("/api/v1/azdev/audit/checkpoint", headers=auditor).text
    assert verify_cosignatures(plain, [target.verifier])[0] == []
    submit_all(ctx, [target])
    note = client.get("/api/v1/azdev/audit/checkpoint", headers=auditor).text
    assert note.startswith(plain)
    found, problems = verify_cosignatures(note, [target.verifier])
    assert len(found) == 1
    assert not problems
    entry = client.get("/api/v1/azdev/audit/entry/1", headers=auditor).json()
    assert entry["checkpoint"] == note
