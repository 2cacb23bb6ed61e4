"""What the benchmarks share: a figure (ICA beside its baseline from the same run, the ratio and
the goal), the sizes of a quick, a full and a smoke run, and the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tests.support.pgserver import PgServer


@dataclass(frozen=True)
class Figure:
    """One line of the table. `ratio` is ICA over its baseline where more is better (rates),
    `met` whether the goal holds (None: a figure without a goal)."""

    measure: str
    ica: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None

    def row(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        met = {True: "met", False: "NOT met", None: ""}[self.met]
        return [self.measure, self.ica, self.baseline, ratio, self.goal, met]


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does: `smoke` proves it runs (the test suite), `quick` is
    `make bench` (about a minute), `full` is `make bench-full` (the 10-million-entry sets)."""

    name: str
    events: int
    threads: tuple[int, ...]
    seal_entries: int
    bundle_entries: int
    audit_entries: int
    queries: int
    gate_requests: int
    open_loop_rate: float
    open_loop_seconds: float
    cli_runs: int
    rss_events: int


SMOKE = Sizes("smoke", 16, (1, 2), 200, 500, 2_000, 3, 10, 20.0, 0.5, 1, 20)
QUICK = Sizes("quick", 1_000, (1, 8), 20_000, 100_000, 100_000, 30, 200, 50.0, 5.0, 10, 2_000)
FULL = Sizes(
    "full", 5_000, (1, 8), 100_000, 1_000_000, 10_000_000, 100, 1_000, 100.0, 20.0, 30, 100_000
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * fraction) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout else "unknown"


def machine_description() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    from tests.support.pgserver import _bin_dir

    postgres = _first_line([str(_bin_dir() / "postgres"), "--version"])
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, {memory} RAM; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; {postgres} (fsync on); "
        f"load average at the start {load}"
    )


def table(figures: list[Figure]) -> str:
    header = ["Measure", "ICA", "Baseline in the same run", "Ratio", "Goal", ""]
    rows = [header, ["---"] * len(header), *(figure.row() for figure in figures)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


# `ica serve` as shipped, in its own process, for the benchmarks that measure over HTTP.
ICA = [sys.executable, "-m", "azdev_ica.cli.main"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its live descendants (every thread; uvicorn's
    worker processes under `--workers N`), plus what its reaped children used, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the name: utime, stime, cutime, cstime are the 12th to 15th.
        total += sum(int(value) for value in fields[11:15])
        pending.extend(children.get(current, []))
    return total / tick


@dataclass(frozen=True)
class Served:
    """A running `ica serve`: its base URL, process id, an API key of the role asked for and
    the environment its CLI runs with (`cli()` runs other `ica` commands against it)."""

    base: str
    port: int
    pid: int
    token: str
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*ICA, *args], env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def cpu_seconds(self) -> float:
        """CPU the server's processes used so far (read before and after a measurement)."""
        return process_cpu_seconds(self.pid)


@contextmanager
def ica_serve(
    database_url: str,
    *,
    role: str = "azdev_devops",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    prefix: Sequence[str] = (),
) -> Iterator[Served]:
    """`ica init` (examples/policy.yaml) on the database at `database_url` (an empty one),
    an API key of `role`, then `ica serve` on a free local port with `args` added (run under
    `prefix`, a command such as valgrind's, when given); yields once `GET /health` answers
    and stops the server on leaving."""
    import json
    import tempfile
    import time
    import urllib.request

    folder = Path(tempfile.mkdtemp(prefix="ica-bench-"))
    environment = {
        **os.environ,
        "ICA_DATA_DIR": str(folder),
        "ICA_DATABASE_URL": database_url,
        "ICA_SECRET_KEY": "b" * 48,
        **(env or {}),
    }
    policy = str(ROOT / "examples" / "policy.yaml")
    subprocess.run(
        [*ICA, "init", "--policy", policy], env=environment, check=True, capture_output=True
    )
    created = subprocess.run(
        [*ICA, "apikey", "create", "--name", "bench", "--role", role, "--output", "json"],
        env=environment, check=True, capture_output=True, text=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [*prefix, *ICA, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("ica serve did not start") from None
                time.sleep(0.1)
        yield Served(base, port, process.pid, json.loads(created.stdout)["key"], environment)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fresh_database(server: PgServer, name: str) -> str:
    """An empty database `name` on the bench's PostgreSQL (dropped first if a run left one);
    its URL."""
    import psycopg

    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


def settle(database_url: str, *, timeout: float = 120.0) -> None:
    """Wait until the server on `database_url` (its sealer and jobs on) has caught up with
    what was written before a measurement: every audit record sealed and no outbox row due.
    Data prepared through the services (a deployment history) leaves both behind, and a
    server still sealing or delivering it would charge that work to the first figures."""
    import time

    from sqlalchemy import func, select

    from azdev_ica.clock import SystemClock
    from azdev_ica.db.engine import Database
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.services.ledger_status import backlog
    from azdev_ica.services.outbox import PENDING

    database = Database.from_url(database_url, pool_size=1)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with database.read() as session:
                now = SystemClock().now()
                unsealed = backlog(session, now).count
                due = session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now)
                )
            if not unsealed and not due:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not catch up: {unsealed} record(s) unsealed, {due} "
                    "outbox row(s) due"
                )
            time.sleep(0.2)
    finally:
        database.dispose()
