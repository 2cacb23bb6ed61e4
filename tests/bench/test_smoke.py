"""The benchmarks cannot rot: each runs here with tiny sizes (`bench/run_all.py --smoke`) and
prints its line of the table. Only that they run and report is checked, never a figure (the
machine is shared; figures belong in bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_with_tiny_sizes_and_reports_its_figures(tmp_path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert "Machine: " in report
    assert " cores" in report
    for measure in (
        "Gate evaluations at saturation",
        "Gate p99, open loop",
        "run/event through the service",
        "Approval polls answered 304",
        "Sealing,",
        "verify.py over",
        "Audit query p95",
        "Inclusion proof p95",
        "`ica run event` wall time",
        "RSS of `ica serve`",
        "Server instructions per request",
        "Server CPU per request by layer",
    ):
        assert measure in report, measure
        assert measure in done.stdout, measure
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    # Every figure has a value for ICA (a number and its unit), none is left empty.
    assert all(row.split(" | ")[1].strip()[:1].isdigit() for row in rows[1:]), rows
