"""What the benchmarks share: a figure (ICA beside its baseline from the same run, the ratio and
the goal), the sizes of a quick, a full and a smoke run, and the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
