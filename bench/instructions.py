"""Instructions the server executes per request (valgrind's callgrind), beside `GET /health`'s
on the same server in the same run: a CPU ratio that does not move with the machine's load.

    .venv/bin/python bench/instructions.py [--requests N]

`ica serve` (one worker; the sealer and the background jobs off, so that only the requests
run) starts under callgrind with its instrumentation off. Each kind of request is sent a few
times first (warm-up: statements compiled, caches filled), then instrumentation is switched
on for N requests of that kind sent one after another, and the counters are dumped and
zeroed (`callgrind_control`): instructions per request, every thread of the server counted.

Instruction counts are not time: a cache miss, a lock or a system call's wait costs none, and
PostgreSQL's own work is not in them. But they repeat within a percent or two from run to
run on a busy machine, where the CPU-time figures of the other benches move by 2x, so they
show whether a change made a request cheaper for the server, and by how much. Where valgrind
is not installed the figures say so instead of a number.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pgserver import PgServer  # noqa: E402

from bench.approval_polling import _approval  # noqa: E402
from bench.common import QUICK, Figure, Served, Sizes, fresh_database, ica_serve, table  # noqa: E402
from bench.gate_latency import _prepare  # noqa: E402

API = "/api/v1/azdev"
# With the sealer and the jobs off, the server runs nothing but the requests it is sent.
QUIET = {"ICA_LEDGER_SEALER": "false", "ICA_JOBS_SCHEDULER": "false"}


class Counter:
    """callgrind's counters of one running server: on for a burst, then dumped and zeroed."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid = pid
        self.folder = folder

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True)

    def count(self, burst: Callable[[], None]) -> int:
        """Instructions the server executed while `burst` ran."""
        before = set(self.folder.iterdir())
        self._control("--instr=on")
        try:
            burst()
        finally:
            self._control("--instr=off")
        self._control("--dump")
        dumped = sorted(set(self.folder.iterdir()) - before)
        if len(dumped) != 1:
            raise RuntimeError(f"callgrind wrote {len(dumped)} dumps, not one")
        # A dump's `totals:` line counts the events since the last zeroing (its `summary:`
        # line may say 0).
        for line in dumped[0].read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dumped[0]}")


def _sender(served: Served) -> Callable[[str, str, bytes | None, dict[str, str], int], None]:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=300)

    def send(
        method: str, path: str, body: bytes | None, headers: dict[str, str], expect: int
    ) -> None:
        connection.request(method, path, body, headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != expect:
            raise RuntimeError(f"{method} {path}: {answer.status}, expected {expect}")

    return send


def request_kinds(served: Served, url: str) -> dict[str, Callable[[], None]]:
    """One request of each measured kind, as a function that sends it and checks its status,
    against `served` (on the database at `url`, prepared here): `GET /health`, an allowed
    `POST gate/evaluate`, a `POST run/event` and a `GET approval/{id}` answered 304."""
    send = _sender(served)
    auth = {"Authorization": f"Bearer {served.token}"}
    posting = {**auth, "Content-Type": "application/json"}
    run_key = _prepare(url, 0)
    approval, etag = _approval(served)
    started = {
        "provider": "ado", "project_id": "bench", "run_id": "77", "pipeline_name": "bench",
        "tenant": "ws", "stage": "test",
    }  # fmt: skip
    send("POST", f"{API}/run/start", json.dumps(started).encode(), posting, 201)
    events = iter(range(10**9))

    def event() -> None:
        body = {
            "run_key": "ado:bench:77", "phase": "test", "event_id": f"e{next(events)}",
            "data": {"passed": True, "total": 420, "failed": 0},
        }  # fmt: skip
        headers = {**posting, "Idempotency-Key": uuid.uuid4().hex}
        send("POST", f"{API}/run/event", json.dumps(body).encode(), headers, 201)

    gate = json.dumps({"run_key": run_key}).encode()
    return {
        "health": lambda: send("GET", "/health", None, {}, 200),
        "gate": lambda: send("POST", f"{API}/gate/evaluate", gate, posting, 200),
        "event": event,
        "poll": lambda: send("GET", approval, None, {**auth, "If-None-Match": etag}, 304),
    }


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return [
            Figure(
                "Server instructions per request (callgrind)",
                "0 (valgrind is not installed: not measured)",
                "",
                None,
                "",
                None,
            )
        ]
    requests = max(2, sizes.gate_requests // 4)
    url = fresh_database(server, "instructions")
    folder = Path(tempfile.mkdtemp(prefix="ica-callgrind-"))
    prefix = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.out.%p",
    ]  # fmt: skip
    with ica_serve(url, env=QUIET, prefix=prefix, timeout=600) as served:
        counter = Counter(served.pid, folder)
        kinds = request_kinds(served, url)
        per_request: dict[str, float] = {}
        for name, one in kinds.items():
            for _ in range(5):
                one()  # warm-up, not counted

            def burst(one: Callable[[], None] = one) -> None:
                for _ in range(requests):
                    one()

            per_request[name] = counter.count(burst) / requests
    shutil.rmtree(folder, ignore_errors=True)
    health = per_request["health"]

    def line(measure: str, name: str, goal: str = "", met: bool | None = None) -> Figure:
        ratio = health / per_request[name]
        return Figure(
            f"Server instructions per request (callgrind, {requests} sequential requests): "
            f"{measure}",
            f"{per_request[name] / 1e6:.2f} M",
            f"GET /health {health / 1e6:.2f} M",
            ratio,
            goal,
            met,
        )

    gate_ratio = health / per_request["gate"]
    return [
        line(
            "POST gate/evaluate, allowed",
            "gate",
            ">= 0.5 (the saturation goal, as server work)",
            gate_ratio >= 0.5,
        ),
        line("POST run/event", "event"),
        line("GET approval/{id} answered 304", "poll"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=QUICK.gate_requests // 4, help="requests of each kind"
    )
    args = parser.parse_args()
    server = PgServer.start(durable=True)
    try:
        print(table(figures(replace(QUICK, gate_requests=4 * args.requests), server)))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
