"""Where the server's CPU goes, per request, by layer: the profile behind the ratios.

    .venv/bin/python bench/server_profile.py [--requests N]

`ica serve` runs as shipped (one worker; the sealer and the background jobs off, as in
`bench/instructions.py`, so that only the requests run). py-spy samples, 1,000 times a second
and from outside the process without pausing it, the Python stack of the thread that holds
the GIL, while N sequential requests of each kind are sent (after a warm-up). A thread that
waits (on the network, the database, the thread pool's queue) releases the GIL and is not
sampled; py-spy's own idle detection is not used, as it counts those waits as work. Each
sample is charged to the module of its innermost Python frame (C code called from there
included), and the modules are summed into layers: the HTTP server (uvicorn, h11), the event
loop and thread pool (asyncio, anyio, threading), the web framework (Starlette, FastAPI),
pydantic, SQLAlchemy, the driver (psycopg), ICA's own code by package, and the rest.

The figures are milliseconds of server CPU per request in each layer (samples over the rate),
`GET /health`'s beside them: what a request costs beyond the HTTP floor that health pays, and
where. Samples count the time the GIL was held, which is CPU time on a quiet machine and
more on a busy one (a thread descheduled while holding it), so read the split, not the total;
the instruction counts (`bench/instructions.py`) are the precise totals. Sampling does not
slow the code it measures, unlike a tracing profiler (yappi showed `/health` at 7 ms of CPU
instead of 1, and inflated the layers made of many small Python calls most).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pgserver import PgServer  # noqa: E402

from bench.common import QUICK, Figure, Sizes, fresh_database, ica_serve, table  # noqa: E402
from bench.instructions import QUIET, request_kinds  # noqa: E402

# Top-level module or package of a file → its layer (the first match wins).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP server", ("uvicorn", "h11", "httptools")),
    ("event loop, threads", ("asyncio", "anyio", "threading", "concurrent", "selectors", "queue")),
    ("Starlette, FastAPI", ("starlette", "fastapi")),
    ("pydantic", ("pydantic", "pydantic_core")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("psycopg", ("psycopg", "psycopg_binary", "psycopg_c", "psycopg_pool")),
    ("logging, metrics", ("logging", "prometheus_client")),
    ("JSON", ("json", "orjson", "rfc8785")),
)
KINDS = {
    "gate": "POST gate/evaluate, allowed",
    "event": "POST run/event",
    "poll": "GET approval/{id} answered 304",
}


def layer(path: str) -> str:
    """The layer of the module file at `path` (ICA's own code: "ICA: <package>")."""
    parts = Path(path).parts
    if "azdev_ica" in parts:
        rest = parts[parts.index("azdev_ica") + 1 :]
        return "ICA: " + (rest[0].removesuffix(".py") if len(rest) > 1 else "(top)")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            top = parts[parts.index(marker) + 1].removesuffix(".py")
            break
    else:
        stdlib = Path(sysconfig.get_paths()["stdlib"]).parts
        inside = len(parts) > len(stdlib) and parts[: len(stdlib)] == stdlib
        top = parts[len(stdlib)].removesuffix(".py") if inside else ""
    for name, modules in LAYERS:
        if top in modules:
            return name
    return "other"


def by_layer(seconds: Mapping[str, float]) -> dict[str, float]:
    layers: dict[str, float] = {}
    for path, spent in seconds.items():
        name = layer(path)
        layers[name] = layers.get(name, 0.0) + spent
    return layers


class Profiler:
    """py-spy sampling one running `ica serve`."""

    RATE = 1000

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid = pid
        self.folder = folder

    def profile(self, burst: Callable[[], None]) -> dict[str, float]:
        """CPU seconds per module file (samples over the rate) while `burst` ran."""
        out = self.folder / f"stacks-{time.monotonic_ns()}.txt"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(self.pid),
                "--rate", str(self.RATE), "--nonblocking", "--gil", "--full-filenames",
                "--format", "raw", "--output", str(out),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        # Attached before the burst; a server waiting for requests holds no GIL, so the wait
        # adds no samples.
        time.sleep(0.5)
        try:
            burst()
        finally:
            spy.send_signal(signal.SIGINT)
            _, errors = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote no samples: {errors.decode(errors='replace')}")
        seconds: dict[str, float] = {}
        for line in out.read_text(encoding="utf-8").splitlines():
            stack, _, count = line.rpartition(" ")
            innermost = stack.rsplit(";", 1)[-1]
            path = innermost.rpartition(" (")[2].rpartition(":")[0]
            seconds[path] = seconds.get(path, 0.0) + int(count) / self.RATE
        return seconds


def _split(layers: Mapping[str, float], requests: int, limit: int = 7) -> str:
    """The layers' CPU per request, largest first (ICA's packages folded into one unless
    among the largest), as "2.10 ms: SQLAlchemy 0.60, ..."."""
    per = {name: spent * 1000 / requests for name, spent in layers.items()}
    total = sum(per.values())
    ranked = sorted(per.items(), key=lambda item: -item[1])
    shown = ranked[:limit]
    rest = sum(value for _, value in ranked[limit:])
    parts = [f"{name} {value:.2f}" for name, value in shown if value >= 0.005]
    if rest >= 0.005:
        parts.append(f"the rest {rest:.2f}")
    return f"{total:.2f} ms: " + ", ".join(parts)


def figures(sizes: Sizes, server: PgServer) -> list[Figure]:
    requests = max(2, sizes.gate_requests // 2)
    url = fresh_database(server, "profile")
    folder = Path(tempfile.mkdtemp(prefix="ica-profile-"))
    layers: dict[str, dict[str, float]] = {}
    with ica_serve(url, env=QUIET) as served:
        profiler = Profiler(served.pid, folder)
        for name, one in request_kinds(served, url).items():
            for _ in range(5):
                one()  # warm-up, not profiled

            def burst(one: Callable[[], None] = one) -> None:
                for _ in range(requests):
                    one()

            layers[name] = by_layer(profiler.profile(burst))
    shutil.rmtree(folder, ignore_errors=True)
    health = layers["health"]
    figures = []
    for name, measure in KINDS.items():
        extra = {
            key: layers[name].get(key, 0.0) - health.get(key, 0.0)
            for key in set(layers[name]) | set(health)
        }
        beyond = {key: value for key, value in extra.items() if value > 0}
        figures.append(
            Figure(
                f"Server CPU per request by layer (py-spy, {requests} sequential requests): "
                f"{measure}",
                _split(layers[name], requests)
                + f" (beyond health's: {_split(beyond, requests, limit=5)})",
                "GET /health " + _split(health, requests, limit=4),
                None,
                "",
                None,
            )
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=QUICK.gate_requests // 2, help="requests of each kind"
    )
    args = parser.parse_args()
    server = PgServer.start(durable=True)
    try:
        print(table(figures(replace(QUICK, gate_requests=2 * args.requests), server)))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
