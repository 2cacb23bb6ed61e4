"""`ica run event` against `curl` for the same POST: the pipeline client's cost per call.

    .venv/bin/python bench/cli_startup.py [--runs 30] [--url URL --token TOKEN --run-key KEY]

Without --url it answers the requests itself (a small local HTTP server that answers as ICA's
run/event does), so the figures are the clients' own cost: process start, imports, one
request. With --url it posts to a real ICA (a test event on --run-key). Prints the median and
the best wall time of each and their ratio; also `python -c pass` as the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Figure, Sizes

ANSWER = json.dumps(
    {"event": {"event_id": "e1", "phase": "test", "attempt": 1}, "run": {"run_key": "ado:p:1"}}
).encode()


def _local_server() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _time(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def measure(
    runs: int,
    url: str | None = None,
    token: str = "bench-token",  # noqa: S107 - what the local stand-in expects
) -> dict[str, list[float]]:
    """Wall times (s) of `python -c pass`, curl and `ica run event` for the same POST."""
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("curl is not installed")
    server = None
    if url is None:
        server, url = _local_server()
    run_key = "ado:p:1"
    env = {**os.environ, "ICA_URL": url, "ICA_TOKEN": token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed client has its bytecode cached
    body = json.dumps({"run_key": run_key, "phase": "test", "data": {"passed": True}})
    ica = [sys.executable, "-m", "azdev_ica.cli.main", "run", "event", "test"]
    ica += ["--run-key", run_key, "--set", "passed=true"]
    curl_argv = [curl, "-sf", "-o", "/dev/null", "-X", "POST", "--data", body]
    curl_argv += ["-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"]
    curl_argv += [f"{url}/api/v1/azdev/run/event"]
    try:
        _time(ica, env, 1)  # warm the bytecode cache and the page cache
        return {
            "python -c pass": _time([sys.executable, "-c", "pass"], env, runs),
            "curl": _time(curl_argv, env, runs),
            "ica run event": _time(ica, env, runs),
        }
    finally:
        if server is not None:
            server.shutdown()


def figures(sizes: Sizes, server: object) -> list[Figure]:
    results = measure(sizes.cli_runs)
    ica, curl = statistics.median(results["ica run event"]), statistics.median(results["curl"])
    return [
        Figure(
            "`ica run event` wall time (median; the answer from a local stand-in)",
            f"{ica * 1000:.0f} ms",
            f"curl {curl * 1000:.0f} ms",
            curl / ica,
            ">= 0.33 (under 3x)",
            ica / curl < 3,
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url")
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--run-key", default="ado:p:1")
    args = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        print("curl is not installed", file=sys.stderr)
        return 1
    server = None
    url = args.url
    if url is None:
        server, url = _local_server()
    env = {**os.environ, "ICA_URL": url, "ICA_TOKEN": args.token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed client has its bytecode cached
    body = json.dumps({"run_key": args.run_key, "phase": "test", "data": {"passed": True}})
    ica = [sys.executable, "-m", "azdev_ica.cli.main", "run", "event", "test"]
    ica += ["--run-key", args.run_key, "--set", "passed=true"]
    curl_argv = [curl, "-sf", "-o", "/dev/null", "-X", "POST", "--data", body]
    curl_argv += ["-H", f"Authorization: Bearer {args.token}"]
    curl_argv += ["-H", "Content-Type: application/json"]
    curl_argv += [f"{url}/api/v1/azdev/run/event"]
    _time(ica, env, 2)  # warm the bytecode cache and the page cache
    results = {
        "python -c pass": _time([sys.executable, "-c", "pass"], env, args.runs),
        "curl": _time(curl_argv, env, args.runs),
        "ica run event": _time(ica, env, args.runs),
    }
    for name, times in results.items():
        print(
            f"{name:16} median {statistics.median(times) * 1000:6.1f} ms  "
            f"best {min(times) * 1000:6.1f} ms"
        )
    ratio = statistics.median(results["ica run event"]) / statistics.median(results["curl"])
    best = min(results["ica run event"]) / min(results["curl"])
    print(f"ica / curl: median {ratio:.2f}x, best {best:.2f}x (goal: under 3x)")
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
