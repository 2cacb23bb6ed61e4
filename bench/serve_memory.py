"""Resident memory of `ica serve` as shipped (one worker, sealer and jobs on), on PostgreSQL:
idle after start, under load (gate evaluations from 8 clients) and after N run events.

    .venv/bin/python bench/serve_memory.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

from bench.common import Figure, Sizes, ica_serve  # noqa: E402
from bench.load import Request, saturation  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(server: PgServer, events: int) -> dict[str, float]:
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS serve_memory")
        conn.execute("CREATE DATABASE serve_memory")
    with ica_serve(server.url("serve_memory")) as served:
        base = served.base
        time.sleep(1)
        idle = rss_mib(served.pid)
        headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
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
            peak = max(peak, rss_mib(served.pid))
        after = rss_mib(served.pid)
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
