"""A served ICA (sealer and scheduler threads, as `ica serve` runs them) and a real
`ica witness serve` process on loopback: the checkpoints ICA publishes get cosigned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from azdev_ica.api.app import create_app
from azdev_ica.ledger.cosignature import CosignatureVerifier, verify_cosignatures
from azdev_ica.settings import Settings
from tests.cli.conftest import Instance
from tests.conftest import bearer


def test_a_served_ica_gets_its_checkpoints_cosigned_by_a_witness_process(
    initialised: tuple[Instance, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    instance, key = initialised
    code, out, err = instance.run("keys", "list", "--output", "json")
    assert code == 0, err
    log_vkey = json.loads(out)[0]["vkey"]
    witness_key = tmp_path / "witness" / "w.key"
    code, out, err = instance.run(
        "witness", "init", "--key", str(witness_key), "--name", "witness.test/e2e"
    )
    assert code == 0, err
    verifier = CosignatureVerifier.from_key_string(out.strip())
    log = tmp_path / "witness.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [
                *(sys.executable, "-m", "azdev_ica.cli.main", "witness", "serve"),
                *("--key", str(witness_key), "--state", str(tmp_path / "witness" / "s.db")),
                *("--port", "0", "--log", "ica.localhost/audit", log_vkey),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as witness,
    ):
        try:
            assert witness.stdout is not None
            line = witness.stdout.readline()
            assert "listening on " in line, log.read_text()
            url = line.split("listening on ")[1].strip()
            monkeypatch.setenv("ICA_WITNESSES", json.dumps([{"url": url, "vkey": out.strip()}]))
            monkeypatch.setenv("ICA_LEDGER_SEAL_INTERVAL_SECONDS", "0.05")
            monkeypatch.setenv("ICA_LEDGER_CHECKPOINT_INTERVAL_SECONDS", "0.1")
            monkeypatch.setenv("ICA_JOBS_INTERVAL_SECONDS", "0.2")
            app = create_app(Settings())
            with TestClient(app) as client:
                body = {"provider": "gh", "project_id": "1", "run_id": "5", "pipeline_name": "ci"}
                response = client.post("/api/v1/azdev/run/start", json=body, headers=bearer(key))
                assert response.status_code == 201
                deadline = time.monotonic() + 60
                found: list[object] = []
                note = ""
                while time.monotonic() < deadline and not found:
                    answer = client.get("/api/v1/azdev/audit/checkpoint", headers=bearer(key))
                    if answer.status_code == 200:
                        note = answer.text
                        found = list(verify_cosignatures(note, [verifier])[0])
                    time.sleep(0.1)
                assert found, note
            app.state.ctx.db.dispose()
        finally:
            witness.terminate()
            witness.wait(timeout=30)
    code, out, _ = instance.run("witness", "resolve", "--note", "nothing to resolve")
    assert code == 0
    assert "no unresolved witness refusal" in out


def test_ica_witness_submit_without_a_server(
    initialised: tuple[Instance, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from azdev_ica.ledger.cosignature import Cosigner
    from azdev_ica.ledger.note import Verifier
    from azdev_ica.ledger.witness import LogFamily
    from tests.ledger.witness_support import serve_witness

    instance, _ = initialised
    assert instance.run("witness", "submit")[0] == 3  # none configured
    log_vkey = json.loads(instance.run("keys", "list", "--output", "json")[1])[0]["vkey"]
    cosigner = Cosigner.generate("witness.test/cli")
    family = LogFamily("ica.localhost/audit", (Verifier.from_key_string(log_vkey),))
    with serve_witness(tmp_path / "w.db", cosigner, [family]) as (url, served):
        vkey = cosigner.verifier().key_string()
        monkeypatch.setenv("ICA_WITNESSES", json.dumps([{"url": url, "vkey": vkey}]))
        assert instance.run("audit", "seal")[0] == 0
        code, out, err = instance.run("witness", "submit")
        assert code == 0, err
        assert "witness.test/cli cosigned the latest checkpoint of ica.localhost/audit/" in out
        assert served.latest(f"ica.localhost/audit/{time.gmtime().tm_year}") is not None
        code, out, _ = instance.run("witness", "status", "--output", "json")
        assert code == 0
        status = json.loads(out)
        assert status["unresolved_refusals"] == []
        assert [(w["witness"], w["failing_since"]) for w in status["witnesses"]] == [
            ("witness.test/cli", None)
        ]
        assert status["witnesses"][0]["last_cosigned"].startswith(f"{time.gmtime().tm_year}:")
