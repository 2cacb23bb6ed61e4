"""Resident memory of `ica serve` as shipped (one worker, sealer and jobs on), on PostgreSQL:
idle after start, under load (gate evaluations from 8 clients) and after N run events.

    .venv/bin/python bench/serve_memory.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from bench.common import Figure, Sizes  # noqa: E402
from bench.load import Request, saturation  # noqa: E402

ICA = [sys.executable, "-m", "azdev_ica.cli.main"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(server: PgServer, events: int) -> dict[str, float]:
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS serve_memory")
        conn.execute("CREATE DATABASE serve_memory")
    folder = Path(tempfile.mkdtemp(prefix="ica-bench-"))
    env = {
        **os.environ,
        "ICA_DATA_DIR": str(folder),
        "ICA_DATABASE_URL": server.url("serve_memory"),
        "ICA_SECRET_KEY": "m" * 48,
    }
    subprocess.run(
        [*ICA, "init", "--policy", str(ROOT / "examples" / "policy.yaml")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    created = subprocess.run(
        [*ICA, "apikey", "create", "--name", "bench", "--role", "azdev_devops", "--output",
         "json"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    token = json.loads(created.stdout)["key"]
    port = _free_port()
    process = subprocess.Popen(
        [*ICA, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("ica serve did not start") from None
                time.sleep(0.1)
        time.sleep(1)
        idle = rss_mib(process.pid)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        start = {
            "provider": "ado", "project_id": "bench", "run_id": "1", "pipeline_name": "bench",
            "tenant": "to", "stage": "development",
        }  # fmt: skip
        saturation(
            base,
            Request("POST", "/api/v1/azdev/run/start", json.dumps(start).encode(), headers, 201),
            clients=1,
            total=1,
        )
        peak = idle
        per_batch = max(1, events // 10)
        for batch in range(10):
            for number in range(per_batch):
                body = {
                    "run_key": "ado:bench:1", "phase": "test",
                    "event_id": f"e{batch}-{number}", "data": {"passed": True},
                }  # fmt: skip
                saturation(
                    base,
                    Request("POST", "/api/v1/azdev/run/event", json.dumps(body).encode(),
                            headers, 201),
                    clients=1,
                    total=1,
                )  # fmt: skip
            peak = max(peak, rss_mib(process.pid))
        after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"idle": idle, "peak": peak, "after": after}


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    found = measure(server, sizes.rss_events)
    return [
        Figure("RSS of `ica serve`, idle", f"{found['idle']:.0f} MiB", "", None, "", None),
        Figure(
            f"RSS of `ica serve`, peak during {sizes.rss_events:,} run events",
            f"{found['peak']:.0f} MiB",
            f"idle {found['idle']:.0f} MiB",
            None,
            "bounded",
            None,
        ),
        Figure(
            f"RSS of `ica serve` after {sizes.rss_events:,} run events",
            f"{found['after']:.0f} MiB",
            f"idle {found['idle']:.0f} MiB",
            None,
            "no growth with events",
            None,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    server = PgServer.start(durable=True)
    try:
        found = measure(server, args.events)
    finally:
        server.stop()
    print(", ".join(f"{name} {value:.0f} MiB" for name, value in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
