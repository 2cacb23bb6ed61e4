"""The kit's inputs read by the pipeline client: scan results from SARIF 2.1.0 and
dependencies from a CycloneDX or SPDX 2.x SBOM (hand-written samples in samples/, following
the formats), sent to ICA as the scan event's findings and the gate's SBOM."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from azdev_ica.cli.main import main

SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture
def ica(monkeypatch) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body})
            if self.path.endswith("/gate/evaluate"):
                answer: dict[str, Any] = {"status": "allow", "run_key": body["run_key"],
                                          "tenant": "to", "stage": "production",
                                          "reasons": []}  # fmt: skip
            else:
                answer = {"event": {"event_id": "e", "phase": body["phase"], "attempt": 1},
                          "run": {"run_key": body["run_key"]}}  # fmt: skip
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ICA_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ICA_TOKEN", "k")
    for name in ("ICA_ENTRA_SCOPE", "ICA_AUDIENCE", "BUILD_BUILDID", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    yield seen
    server.shutdown()
    server.server_close()


def test_sarif_findings_are_counted_by_severity(ica):
    code = main(["run", "event", "scan", "--run-key", "ado:p:1", "--set", "passed=false",
                 "--sarif", str(SAMPLES / "scan.sarif")])  # fmt: skip
    assert code == 0
    [request] = ica
    # CodeQL: 9.8 critical, 7.5 high, a note low (suppressed and `none` not counted);
    # Trivy: 8.8 high, a warning without a rule entry medium.
    assert request["body"]["data"] == {
        "passed": False,
        "findings": {"critical": 1, "high": 2, "medium": 1, "low": 1},
    }


def test_sarif_is_only_for_the_scan_phase_and_must_be_sarif(ica, tmp_path, capsys):
    assert main(["run", "event", "test", "--run-key", "ado:p:1",
                 "--sarif", str(SAMPLES / "scan.sarif")]) == 64  # fmt: skip
    other = tmp_path / "not.sarif"
    other.write_text(json.dumps({"bomFormat": "CycloneDX"}))
    assert main(["run", "event", "scan", "--run-key", "ado:p:1", "--sarif", str(other)]) == 64
    assert "not a SARIF log" in capsys.readouterr().err
    assert ica == []


@pytest.mark.parametrize(
    ("sample", "components"),
    [
        ("bom.cdx.json", [{"purl": "pkg:pypi/django@5.1.4"}, {"purl": "pkg:pypi/psycopg@3.2.3"},
                          {"name": "vendored-maps@1.0"}]),
        ("bom.spdx.json", [{"purl": "pkg:pypi/django@5.1.4"}, {"name": "leaflet@1.9.4"}]),
    ],
)  # fmt: skip
def test_the_gate_gets_the_sboms_dependencies_and_the_version(ica, sample, components):
    code = main(["gate", "evaluate", "--run-key", "ado:p:1", "--sbom", str(SAMPLES / sample),
                 "--version", "2.0.0"])  # fmt: skip
    assert code == 0
    [request] = ica
    assert request["body"]["sbom"] == {"components": components}
    assert request["body"]["version"] == "2.0.0"
