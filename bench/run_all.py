"""Every benchmark in one run, one table: each figure beside its baseline from the same run,
their ratio and the goal. Writes bench/RESULTS.md with the machine's description.

    make bench         # quick: about a minute on 2 cores
    make bench-full    # the 10-million-entry sets and long runs
    .venv/bin/python bench/run_all.py --smoke   # tiny sizes: proves each benchmark runs

The PostgreSQL started here keeps fsync on (as in production), except with --smoke.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pgserver import PgServer  # noqa: E402

from bench import (  # noqa: E402
    approval_polling,
    audit_queries,
    cli_startup,
    gate_latency,
    instructions,
    ledger_throughput,
    run_event_throughput,
    serve_memory,
    server_profile,
)
from bench.common import FULL, QUICK, SMOKE, Figure, Sizes, machine_description, table  # noqa: E402

BENCHMARKS: list[tuple[str, Callable[[Sizes, Any], list[Figure]]]] = [
    ("gate", gate_latency.figures),
    ("run/event", run_event_throughput.figures),
    ("approval polling", approval_polling.figures),
    ("ledger", ledger_throughput.figures),
    ("audit queries", audit_queries.figures),
    ("cli", cli_startup.figures),
    ("memory", serve_memory.figures),
    ("instructions", instructions.figures),
    ("profile", server_profile.figures),
]
RESULTS = ROOT / "bench" / "RESULTS.md"


def run(sizes: Sizes, *, only: list[str] | None = None) -> list[Figure]:
    server = PgServer.start(durable=sizes is not SMOKE)
    figures: list[Figure] = []
    try:
        for name, benchmark in BENCHMARKS:
            if only and name not in only:
                continue
            started = time.perf_counter()
            figures.extend(benchmark(sizes, server))
            print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    finally:
        server.stop()
    return figures


def report(sizes: Sizes, figures: list[Figure], machine: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "`make bench-full`" if sizes is FULL else "`make bench`"
    return (
        f"# Benchmark results ({sizes.name})\n\n"
        f"Measured {when} by `bench/run_all.py` ({command}).\n\n"
        f"Machine: {machine}.\n\n"
        "Each figure is beside its baseline measured in the same run on the same machine; the "
        "ratio is ICA's rate over the baseline's (for times, the baseline's over ICA's), so "
        "more is better. A shared, busy machine moves absolute figures a lot; the ratios "
        "move less.\n\n"
        f"{table(figures)}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes; writes no RESULTS.md")
    size.add_argument("--full", action="store_true", help="the 10-million-entry sets")
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in BENCHMARKS])
    parser.add_argument("--out", type=Path, help=f"where to write the report ({RESULTS})")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL if args.full else QUICK
    machine = machine_description()
    figures = run(sizes, only=args.only)
    print(table(figures))
    out = args.out or (None if args.smoke else RESULTS)
    if out is not None:
        out.write_text(report(sizes, figures, machine), encoding="utf-8")
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
