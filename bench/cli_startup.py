"""`ica run event` against `curl` for the same POST: the pipeline client's cost per call.

    .venv/bin/python bench/cli_startup.py [--runs 30] [--url URL --token TOKEN --run-key KEY]

Without --url it answers the requests itself (a small local HTTP server that answers as ICA's
run/event does), so the figures are the clients' own cost: process start, imports, one
request. With --url it posts to a real ICA (a test event on --run-key). Two ways in, as agents
run the client: the console script a `pip install` makes (`ica`), and the zipapp ICA serves as
the kit runs it (extracted and compiled once, then the kit's `ica` wrapper, a /bin/sh script
that execs `python3 -S app/__main__.py`); also the raw archive (`python3 ica.pyz`, compiling
the client on every call). Prints the median and best wall time of each and the ratio to
curl; `python -c pass`, `python -S -c pass` and `python -I -S -c pass` are the floor (the
interpreter's own start).

curl sends the bytes the client sends: the same body and the same headers (the local
stand-in records both requests and the run stops if they differ in anything but the
Idempotency-Key's value and the headers' order), each call with a fresh Idempotency-Key.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            heard.append((self.requestline, self.headers.items(), body))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

    heard: list[tuple[str, list[tuple[str, str]], bytes]] = []  # every request, in order
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.heard = heard  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _time(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def _curl(curl: str, url: str, token: str, body: str) -> list[str]:
    """curl posting what `ica run event` posts (cli/http.py and cli/wire.py): the compact body,
    the same headers, a fresh Idempotency-Key."""
    from azdev_ica import __version__
    from azdev_ica.cli.http import idempotency_key

    headers = {
        "Connection": "close",
        "Accept-Encoding": "identity",
        "Accept": "application/json, application/problem+json",
        "User-Agent": f"ica-pipeline/{__version__}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key(),
        "Authorization": f"Bearer {token}",
    }
    argv = [curl, "-sf", "-o", "/dev/null", "-X", "POST", "--data-binary", body]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return [*argv, f"{url}/api/v1/azdev/run/event"]


def _same_requests(heard: list[tuple[str, list[tuple[str, str]], bytes]]) -> None:
    """Stop unless curl and each way into the client sent the same request (bar the
    Idempotency-Key's value and the order of the headers)."""

    def shape(
        request: tuple[str, list[tuple[str, str]], bytes],
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        line, headers, body = request
        kept = [
            (name.lower(), "" if name.lower() == "idempotency-key" else value)
            for name, value in headers
        ]
        return line, sorted(kept), body

    first, *others = [shape(request) for request in heard]
    for other in others:
        if other != first:
            raise RuntimeError(f"curl and ica sent different requests: {first} {other}")


@contextmanager
def _kit_zipapp() -> Iterator[Path]:
    """The served zipapp where the kit puts it: the archive, beside it the extracted client
    with its bytecode compiled and the `ica` wrapper (what the kit's install step does)."""
    from azdev_ica import client_zipapp

    with tempfile.TemporaryDirectory(prefix="ica-client-") as folder:
        pyz = Path(folder) / "ica.pyz"
        pyz.write_bytes(client_zipapp.build())
        with zipfile.ZipFile(pyz) as archive:
            archive.extractall(Path(folder) / "app")
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(Path(folder) / "app")], check=True
        )
        # The kit's wrapper (pipelines/*: install step), with this interpreter for python3.
        wrapper = Path(folder) / "ica"
        main = Path(folder) / "app" / "__main__.py"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "{main}" "$@"\n')
        wrapper.chmod(0o755)
        yield Path(folder)


def measure(
    runs: int,
    url: str | None = None,
    token: str = "bench-token",  # noqa: S107 - what the local stand-in expects
    run_key: str = "ado:p:1",
) -> dict[str, list[float]]:
    """Wall times (s) of the floors, curl and `ica run event` for the same POST."""
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("curl is not installed")
    server = None
    if url is None:
        server, url = _local_server()
    env = {**os.environ, "ICA_URL": url, "ICA_TOKEN": token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed client has its bytecode cached
    body = {"run_key": run_key, "phase": "test", "data": {"passed": True}}
    compact = json.dumps(body, separators=(",", ":"))  # as the client writes it
    args = ["run", "event", "test", "--run-key", run_key, "--set", "passed=true"]
    script = Path(sys.executable).parent / "ica"  # the console script pip writes
    console = [sys.executable, str(script)] if script.exists() else None
    if console is None:  # not installed: what the console script runs
        code = "import sys; from azdev_ica.cli.main import main; sys.exit(main())"
        console = [sys.executable, "-c", code]
    try:
        with _kit_zipapp() as kit:
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
                "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
                "curl": [],  # a fresh Idempotency-Key each time
                "ica (console script)": [*console, *args],
                "ica (zipapp, as the kit runs it)": [str(kit / "ica"), *args],
                "ica (zipapp, python3 -S app/__main__.py)": [
                    sys.executable,
                    "-S",
                    str(kit / "app" / "__main__.py"),
                    *args,
                ],
                "ica (python3 ica.pyz)": [sys.executable, str(kit / "ica.pyz"), *args],
            }

            def argv_of(name: str) -> list[str]:
                if name == "curl":
                    return _curl(curl, url, token, compact)
                return commands[name]

            for name in commands:
                _time(argv_of(name), env, 1)  # warm the bytecode cache and the page cache
            if server is not None:  # the warming round: curl's request, then each way's
                _same_requests(server.heard)  # type: ignore[attr-defined]
                server.heard.clear()  # type: ignore[attr-defined]
            results: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(runs):  # interleaved: a busy moment hits every command alike
                for name in commands:
                    results[name] += _time(argv_of(name), env, 1)
            return results
    finally:
        if server is not None:
            server.shutdown()


def figures(sizes: Sizes, server: object) -> list[Figure]:
    results = measure(sizes.cli_runs)
    curl = statistics.median(results["curl"])
    floors = ", ".join(
        f"{flags} {statistics.median(results[f'python {flags} -c pass']) * 1000:.0f} ms"
        for flags in ("-S", "-I -S")
    )
    found = []
    for name in ("ica (console script)", "ica (zipapp, as the kit runs it)"):
        ica = statistics.median(results[name])
        found.append(
            Figure(
                f"`ica run event` wall time, {name[5:-1]} (median; a local stand-in answers)",
                f"{ica * 1000:.0f} ms",
                f"curl {curl * 1000:.0f} ms; python -c pass "
                f"{statistics.median(results['python -c pass']) * 1000:.0f} ms ({floors})",
                curl / ica,
                ">= 0.33 (under 3x)",
                ica / curl < 3,
            )
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--url")
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--run-key", default="ado:p:1")
    args = parser.parse_args()
    try:
        results = measure(args.runs, args.url, args.token, args.run_key)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    curl = statistics.median(results["curl"])
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"{name:42} median {median * 1000:6.1f} ms  best {min(times) * 1000:6.1f} ms  "
            f"{median / curl:5.2f}x curl"
        )
    print("goal: `ica run event` under 3x curl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
