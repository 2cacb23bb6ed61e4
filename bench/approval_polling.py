"""Approval status polling over real HTTP against `ica serve` as shipped (its own process,
one worker, sealer and jobs on), beside a bare `GET /health` to the same server in the same run.

    .venv/bin/python bench/approval_polling.py [--requests N]

A pipeline waiting for its dual approval polls `GET /approval/{id}` as the server asks: after
`Retry-After` seconds (5, then 15 after a minute, 30 after ten), with `If-None-Match` set to
the ETag it holds, so an unchanged request answers 304 with no body (docs/approvals.md).
Measured here: the server CPU of one such 304 and of a full 200 answer, and what the polling
of 100 waiting pipelines costs at the rate `Retry-After` allows them (20 requests/s in their
first minute at most): that rate times the CPU of one 304, as a share of one core. The CPU
figures are medians of rounds alternating health and the 304 (one round on this shared
machine can move them by half), and the round trips to the database per 304 are counted in
this process, on the same database, as `bench/gate_latency.py` counts the gate's.

The server's CPU also holds what it spends with nobody asking (the sealer's idle checks, the
scheduler's ticks, uvicorn's own timer). So the 304s are also offered open-loop at that rate
for a while, and the same server is left quiet for as long right before: both shares of a core
are printed, and the goal is judged on what the polls add above idle. `GET /health` offered
alike shows what any request costs at that pace (a request arriving every 50 ms finds caches
cold and threads asleep: it costs more CPU than one of a saturating stream).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pgserver import PgServer  # noqa: E402

from azdev_ica.db.engine import Database  # noqa: E402
from azdev_ica.settings import Settings  # noqa: E402
from bench.common import (  # noqa: E402
    QUICK,
    Figure,
    Served,
    Sizes,
    fresh_database,
    ica_serve,
    median,
    table,
)
from bench.gate_latency import round_trips  # noqa: E402
from bench.load import Request, open_loop, saturation  # noqa: E402

# 100 pipelines, each polling every 5 s (the first minute's Retry-After): 20 requests/s.
PIPELINES = 100
FIRST_RETRY_AFTER = 5
POLLS_PER_SECOND = PIPELINES / FIRST_RETRY_AFTER
ROUNDS = 3


def _call(served: Served, method: str, path: str, body: object = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    headers = {"Authorization": f"Bearer {served.token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    connection.request(method, path, data, headers)
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer


def _approval(served: Served) -> tuple[str, str]:
    """A production run and its open approval request, over HTTP as a pipeline makes them;
    returns the request's path and the ETag of its first answer."""
    api = "/api/v1/azdev"
    started = _call(
        served,
        "POST",
        f"{api}/run/start",
        {
            "provider": "ado",
            "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
            "run_id": "1",
            "pipeline_name": "bench",
            "tenant": "to",
            "stage": "production",
            "artifact_digest": "sha256:" + "ab" * 32,
        },
    )
    if started.status != 201:
        raise RuntimeError(f"run/start answered {started.status}")
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.request(
        "POST",
        f"{api}/approval",
        json.dumps({"run_key": "ado:6c3f0e1a-1111-4c2b-9d1e-0123456789ab:1"}).encode(),
        {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"},
    )
    asked = connection.getresponse()
    body = json.loads(asked.read())
    connection.close()
    if asked.status != 201:
        raise RuntimeError(f"approval request answered {asked.status}: {body}")
    path = f"{api}/approval/{body['id']}"
    first = _call(served, "GET", path)
    etag = first.getheader("ETag")
    if first.status != 200 or not etag or first.getheader("Retry-After") is None:
        raise RuntimeError(f"the approval's answer lacks its ETag or Retry-After: {first.status}")
    return path, etag


def _cpu_per_request(served: Served, request: Request, total: int) -> tuple[float, float]:
    """(requests/s with 4 keep-alive clients, server CPU ms per request)."""
    before = served.cpu_seconds()
    rate = saturation(served.base, request, clients=4, total=total)
    used = served.cpu_seconds() - before
    return rate, used * 1000 / (max(1, total // 4) * 4)


def _cpu_share(served: Served, request: Request | None, seconds: float) -> float:
    """Server CPU seconds per second over `seconds` of quiet (`request` None), or while
    `request` is offered open-loop at `POLLS_PER_SECOND` for as long (8 keep-alive
    connections)."""
    before, started = served.cpu_seconds(), time.perf_counter()
    if request is None:
        time.sleep(seconds)
    else:
        open_loop(served.base, request, rate=POLLS_PER_SECOND, seconds=seconds, clients=8)
    return (served.cpu_seconds() - before) / (time.perf_counter() - started)


def _round_trips_per_request(served: Served, url: str, request: Request, count: int) -> float:
    """The round trips one request makes to the database: the same application (whole HTTP
    stack, no socket, no lifespan) built in this process on the same database and settings."""
    from fastapi.testclient import TestClient

    from azdev_ica.api.app import create_app

    settings = Settings(
        data_dir=Path(served.env["ICA_DATA_DIR"]),
        database_url=url,
        secret_key=served.env["ICA_SECRET_KEY"],
    )
    database = Database.from_url(url, pool_size=2)
    try:
        client = TestClient(create_app(settings, database=database))

        def send() -> None:
            for _ in range(count):
                answer = client.request(request.method, request.path, headers=request.headers)
                if answer.status_code != request.expect:
                    raise RuntimeError(f"{request.path}: {answer.status_code} {answer.text}")

        send()  # warm up
        return round_trips(database.engine, send) / count
    finally:
        database.dispose()


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    """CPU per 304 poll and per full answer, beside health's, and the cost of 100 waiting
    pipelines polling as `Retry-After` asks."""
    url = fresh_database(server, "polling")
    with ica_serve(url) as served:
        path, etag = _approval(served)
        auth = {"Authorization": f"Bearer {served.token}"}
        unchanged = Request("GET", path, headers={**auth, "If-None-Match": etag}, expect=304)
        full = Request("GET", path, headers=auth)
        health = Request("GET", "/health")
        total = sizes.gate_requests
        for request in (health, unchanged, full):
            saturation(served.base, request, clients=4, total=20)  # warm up
        rounds = [
            (*_cpu_per_request(served, health, total), *_cpu_per_request(served, unchanged, total))
            for _ in range(ROUNDS)
        ]
        health_cpu = median([r[1] for r in rounds])
        poll_rate, poll_cpu = median([r[2] for r in rounds]), median([r[3] for r in rounds])
        _, full_cpu = _cpu_per_request(served, full, total)
        quiet = 2 * sizes.open_loop_seconds
        idle = _cpu_share(served, None, quiet)
        offered = _cpu_share(served, unchanged, quiet)
        health_offered = _cpu_share(served, health, quiet)
        trips = _round_trips_per_request(served, url, unchanged, 20)
    share = POLLS_PER_SECOND * poll_cpu / 1000
    added = offered - idle
    return [
        Figure(
            f"Approval polls answered 304 (If-None-Match), {PIPELINES} waiting pipelines at "
            f"Retry-After ({POLLS_PER_SECOND:g}/s at most)",
            f"{poll_cpu:.1f} ms server CPU each, {trips:g} round trips ({share:.1%} of one core "
            f"for the {PIPELINES}, idle background included; median of {ROUNDS} rounds); a full "
            f"200 answer {full_cpu:.1f} ms; {poll_rate:.0f}/s at saturation. Offered at "
            f"{POLLS_PER_SECOND:g}/s for {quiet:g} s: {offered:.1%} of one core, the same "
            f"server idle {idle:.1%} over {quiet:g} s of quiet: **the polls add {added:.1%}**",
            f"GET /health {health_cpu:.1f} ms CPU; offered alike it adds "
            f"{health_offered - idle:.1%} of a core",
            health_cpu / poll_cpu if poll_cpu else None,
            "bounded, barely any CPU (< 5 % of a core above idle)",
            added < 0.05,
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=QUICK.gate_requests, help="requests per measurement"
    )
    args = parser.parse_args()
    server = PgServer.start()
    try:
        sizes = QUICK.__class__(**{**QUICK.__dict__, "gate_requests": args.requests})
        print(table(figures(sizes, server)))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
